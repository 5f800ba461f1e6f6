"""Routes for KPI values and the leaders' drill-down: catalogue, series, breakdown, records."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from ioc.auth.deps import PrincipalDep, require
from ioc.auth.permissions import Permission, Principal
from ioc.deps import ContextDep, ReadSessionDep
from ioc.kit.clock import local_date
from ioc.kit.params import Offset
from ioc.kpi import reads
from ioc.kpi.catalog import CATALOG, UnknownKpi, get_kpi
from ioc.kpi.schemas import (
    BreakdownRead,
    CellRecordsPage,
    KpiDeclarationRead,
    KpiRead,
    SeriesRead,
)
from ioc.records.api import QUERY_PARAMETERS, masked_page
from ioc.records.service import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidRecordQuery,
    UnknownRecordType,
    UnknownUnit,
)
from ioc.units.service import province_code_str

router = APIRouter(prefix="/api/v1/kpis", tags=["kpis"])

UnitParam = Annotated[
    str | None, Query(description="Unit code; the province by default (it covers its communes)")
]
PeriodParam = Annotated[
    str | None,
    Query(description="day, month, quarter or year; the KPI's headline period by default"),
]
StartParam = Annotated[
    date | None,
    Query(description="First day of the period (e.g. 2026-03-01 for March); the running one"),
]

CELL_PARAMETERS = QUERY_PARAMETERS | {"period", "start", "side"}
"""Named parameters of the records behind a cell; every other one filters a column."""


@contextmanager
def _answering_errors() -> Iterator[None]:
    """Map read errors to HTTP answers: unknown things are 404, bad questions 422."""
    try:
        yield
    except (UnknownKpi, UnknownUnit, UnknownRecordType) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (reads.InvalidKpiRead, InvalidRecordQuery) as exc:
        raise HTTPException(422, str(exc)) from None


def _unit(ctx: ContextDep, unit: str | None) -> str:
    return unit or province_code_str(ctx.settings.province)


@router.get(
    "",
    response_model=list[KpiRead],
    description=(
        "The current (headline-period) value of every KPI, or of those asked for, for one "
        "unit. Served from a cache dropped whenever a cell of the unit is recomputed (patched in "
        "place with the new headline values when another process recomputed them), and after "
        f"{reads.CURRENT_VALUES_TTL_SECONDS:g} s for the values that move with time alone "
        f"(answered as they were, for {reads.CURRENT_VALUES_STALE_SECONDS:g} s more at most, "
        "while they are read again)."
    ),
)
async def get_current_kpis(
    ctx: ContextDep,
    unit: str | None = Query(default=None, description="Unit code; the province by default"),
    kpi: Annotated[list[str] | None, Query(description="Only these KPIs, in this order")] = None,
    domain: str | None = Query(default=None, description="Only the KPIs of this domain"),
) -> Response:
    """The current values of the unit's KPIs as cached JSON bytes."""
    with _answering_errors():
        kpis = [get_kpi(k) for k in kpi] if kpi else list(CATALOG)
        if domain is not None:
            kpis = [k for k in kpis if k.domain == domain]
        data, hit = await reads.current_values_bytes(
            ctx.sessionmaker,
            ctx.kpi_cache,
            _unit(ctx, unit),
            kpis,
            now=ctx.clock(),
            tz=ctx.settings.tz,
        )
    return Response(
        data, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"}
    )


@router.get("/catalog", response_model=list[KpiDeclarationRead])
async def get_catalog() -> list[KpiDeclarationRead]:
    """Every KPI declaration: labels, unit, direction, thresholds, record type and formula."""
    return [reads.declaration(kpi) for kpi in CATALOG]


@router.get(
    "/{kpi}/series",
    response_model=SeriesRead,
    description=(
        "The stored cells of one KPI for one unit, one point per period holding a day of "
        f"[from, to], in order (at most {reads.MAX_SERIES_PERIODS}); a period with no cell "
        "reads as zero. By default the last 30 periods up to today. Served from a cache "
        "dropped whenever a cell of this KPI and unit is recomputed."
    ),
)
async def get_series(
    kpi: str,
    ctx: ContextDep,
    unit: UnitParam = None,
    period: PeriodParam = None,
    date_from: Annotated[date | None, Query(alias="from", description="First day")] = None,
    date_to: Annotated[date | None, Query(alias="to", description="Last day; today")] = None,
) -> Response:
    """A KPI's time series as cached JSON bytes (a hit opens no database session)."""
    with _answering_errors():
        definition = get_kpi(kpi)
        today = local_date(ctx.clock(), ctx.settings.tz)
        kind = period or definition.headline_period.value
        span = reads.series_span(kind, date_from, date_to, today=today)
        data, hit = await reads.series_bytes(
            definition,
            _unit(ctx, unit),
            span,
            engine=ctx.engine,
            cache=ctx.kpi_cache,
            direct=ctx.direct_reads,
        )
    return Response(
        data, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"}
    )


@router.get("/{kpi}/breakdown", response_model=BreakdownRead)
async def get_breakdown(
    kpi: str,
    session: ReadSessionDep,
    ctx: ContextDep,
    principal: PrincipalDep,
    unit: UnitParam = None,
    period: PeriodParam = None,
    start: StartParam = None,
    by: Annotated[
        str, Query(description="unit, or an axis of the KPI's records (see the catalogue)")
    ] = "unit",
    sort: Annotated[
        str, Query(description="value (worst first given the good direction) or key")
    ] = "value",
) -> Response:
    """One cell and its parts by child unit, agency, field, procedure, facility or school,
    each with the path of the records behind it (null without the records permission); the
    parts sum to the total. By child unit, served from cached bytes kept up to date with the
    cells recomputed (see `reads.breakdown_bytes`)."""
    now, tz = ctx.clock(), ctx.settings.tz
    with _answering_errors():
        definition = get_kpi(kpi)
        cell = reads.resolve_period(definition, period, start, now=now, tz=tz)
        data, hit = await reads.breakdown_bytes(
            session,
            ctx.kpi_cache,
            definition,
            _unit(ctx, unit),
            cell,
            by=by,
            sort=sort,
            links=principal.can(Permission.RECORDS),
            now=now,
            tz=tz,
        )
    return Response(
        data, media_type="application/json", headers={"X-Cache": "hit" if hit else "miss"}
    )


@router.get(
    "/{kpi}/records",
    response_model=CellRecordsPage,
    description=(
        "The records counted in one side of a cell, paged, sorted and filtered like "
        "`/api/v1/records/{record_type}` (any other query parameter filters a column). "
        "`side=numerator` or `denominator`; `side=late` is the denominator's records not in "
        "the numerator (for an on-time rate: the late ones), for percentages only. Needs the "
        "records permission; personal data masked without personal_data."
    ),
)
async def get_cell_records(
    kpi: str,
    request: Request,
    session: ReadSessionDep,
    ctx: ContextDep,
    principal: Annotated[Principal, require(Permission.RECORDS)],
    unit: UnitParam = None,
    period: PeriodParam = None,
    start: StartParam = None,
    side: Annotated[str, Query(description="numerator, denominator or late")] = "numerator",
    time_column: Annotated[str | None, Query(description="Date column of a window")] = None,
    date_from: Annotated[date | None, Query(description="First local day, included")] = None,
    date_to: Annotated[date | None, Query(description="Last local day, included")] = None,
    q: Annotated[str | None, Query(description="Text searched in the names, any case")] = None,
    sort: Annotated[
        str | None, Query(description="Columns separated by commas, `-` first for descending")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> CellRecordsPage:
    """One page of the records behind a KPI cell, with the total."""
    params = request.query_params
    filters = {name: params.getlist(name) for name in params if name not in CELL_PARAMETERS}
    now, tz = ctx.clock(), ctx.settings.tz
    with _answering_errors():
        definition = get_kpi(kpi)
        cell = reads.resolve_period(definition, period, start, now=now, tz=tz)
        page = await reads.records_behind(
            session,
            definition,
            _unit(ctx, unit),
            cell,
            side=side,
            now=now,
            tz=tz,
            time_column=time_column,
            date_from=date_from,
            date_to=date_to,
            filters=filters,
            q=q,
            sort=sort or (),
            limit=limit,
            offset=offset,
        )
    return masked_page(page, definition.record_type, principal)
