"""Routes for administrative units."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from ioc.deps import SessionDep, SettingsDep
from ioc.units.schemas import UnitNode
from ioc.units.service import province_code_str, unit_tree

router = APIRouter(prefix="/api/v1/units", tags=["units"])


@router.get("", response_model=UnitNode)
async def get_units(
    session: SessionDep,
    settings: SettingsDep,
    root: str | None = Query(default=None, description="Unit code to start from"),
) -> UnitNode:
    """The province and its communes as a tree (or the subtree under `root`)."""
    code = root or province_code_str(settings.province)
    tree = await unit_tree(session, code)
    if tree is None:
        raise HTTPException(status_code=404, detail=f"unknown unit code {code!r}")
    return tree
