"""Routes for KPI values."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from ioc.deps import ContextDep, SessionDep
from ioc.kpi.schemas import KpiRead
from ioc.kpi.service import current_values
from ioc.units.models import AdminUnit
from ioc.units.service import province_code_str

router = APIRouter(prefix="/api/v1/kpis", tags=["kpis"])


@router.get("", response_model=list[KpiRead])
async def get_current_kpis(
    session: SessionDep,
    ctx: ContextDep,
    unit: str | None = Query(default=None, description="Unit code; the province by default"),
) -> list[KpiRead]:
    """The current (headline-period) value of every KPI for one unit."""
    code = unit or province_code_str(ctx.settings.province)
    if await session.get(AdminUnit, code) is None:
        raise HTTPException(status_code=404, detail=f"unknown unit code {code!r}")
    return await current_values(session, code, now=ctx.clock(), tz=ctx.settings.tz)
