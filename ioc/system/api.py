"""Routes about the deployment itself: health and what a wall display needs to know."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from ioc.auth.deps import require
from ioc.auth.permissions import Permission
from ioc.deps import ContextDep, SessionDep
from ioc.units.models import AdminUnit
from ioc.units.service import province_code_str

router = APIRouter(tags=["system"])


class SystemInfo(BaseModel):
    """The province, its time zone and the server's clock (the wall shows times from it)."""

    province: str
    province_name: str
    timezone: str
    now: datetime
    demo: bool


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/api/v1/system", response_model=SystemInfo, dependencies=[require(Permission.READ)])
async def system_info(session: SessionDep, ctx: ContextDep) -> SystemInfo:
    """Deployment facts for clients; `now` may lag real time in the demo's replay mode."""
    code = province_code_str(ctx.settings.province)
    province = await session.get(AdminUnit, code)
    return SystemInfo(
        province=code,
        province_name=province.name if province is not None else code,
        timezone=ctx.settings.timezone,
        now=ctx.clock(),
        demo=ctx.settings.demo,
    )
