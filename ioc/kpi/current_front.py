"""The wall's other hot read, a unit's current KPI values (`GET /api/v1/kpis`), answered before
routing, as `ioc.kpi.series_front` answers series reads: the same token check and permission,
the same cache (`reads.current_values_bytes`), the same bytes. Anything else — an unknown,
repeated or blank parameter, an unknown KPI or unit, a refused credential — goes on to the
route, which answers it (or its error) as usual.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl

from starlette.routing import Route
from starlette.types import Scope

from ioc.context import AppContext
from ioc.kpi import reads
from ioc.kpi.api import router
from ioc.kpi.catalog import CATALOG, UnknownKpi, get_kpi
from ioc.kpi.series_front import ReadFront, may_read
from ioc.records.service import UnknownUnit
from ioc.units.service import province_code_str

CURRENT_PATH = reads.KPIS_PATH
CURRENT_ROUTE = next(r for r in router.routes if isinstance(r, Route) and r.path == CURRENT_PATH)
"""The route this middleware stands in for: logs and metrics name its template."""
_SINGLE = frozenset({"unit", "domain"})


class CurrentValuesRequest(NamedTuple):
    """The parts of a current-values read the route would take from a well-formed request."""

    unit: str | None
    kpis: tuple[str, ...]
    domain: str | None


def parse_current_request(scope: Scope) -> CurrentValuesRequest | None:
    """The read `scope` asks for, or None when the route should judge it."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != CURRENT_PATH:
        return None
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    single = [name for name, _ in pairs if name != "kpi"]
    if not set(single) <= _SINGLE or len(single) != len(set(single)):
        return None  # unknown or repeated parameters: the route's rules apply
    if any(not value for _, value in pairs):
        return None
    params = dict(pairs)
    return CurrentValuesRequest(
        unit=params.get("unit"),
        kpis=tuple(value for name, value in pairs if name == "kpi"),
        domain=params.get("domain"),
    )


class CurrentValuesFront(ReadFront):
    """Well-formed current-values reads."""

    route = CURRENT_ROUTE

    async def read(self, scope: Scope) -> tuple[bytes, bool] | None:
        request = parse_current_request(scope)
        if request is None:
            return None
        ctx: AppContext = scope["app"].state.ctx
        try:
            kpis = [get_kpi(k) for k in request.kpis] if request.kpis else list(CATALOG)
        except UnknownKpi:
            return None
        if request.domain is not None:
            kpis = [k for k in kpis if k.domain == request.domain]
        if not await may_read(ctx, scope):
            return None
        try:
            return await reads.current_values_bytes(
                ctx.sessionmaker,
                ctx.kpi_cache,
                request.unit or province_code_str(ctx.settings.province),
                kpis,
                now=ctx.clock(),
                tz=ctx.settings.tz,
            )
        except UnknownUnit:
            return None
