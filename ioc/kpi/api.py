"""Routes for KPI values."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from ioc.deps import ContextDep, SessionDep
from ioc.kpi.catalog import CATALOG, UnknownKpi, get_kpi
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
    kpi: Annotated[list[str] | None, Query(description="Only these KPIs, in this order")] = None,
    domain: str | None = Query(default=None, description="Only the KPIs of this domain"),
) -> list[KpiRead]:
    """The current (headline-period) value of every KPI (or of those asked for) for one unit."""
    code = unit or province_code_str(ctx.settings.province)
    if await session.get(AdminUnit, code) is None:
        raise HTTPException(status_code=404, detail=f"unknown unit code {code!r}")
    try:
        kpis = [get_kpi(k) for k in kpi] if kpi else list(CATALOG)
    except UnknownKpi as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    if domain is not None:
        kpis = [k for k in kpis if k.domain == domain]
    return await current_values(session, code, now=ctx.clock(), tz=ctx.settings.tz, kpis=kpis)
