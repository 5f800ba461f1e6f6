"""The hot path of the wall and of dashboards, a KPI series read, answered before routing.

FastAPI's routing and dependency resolution (context, token, permission, four query
parameters) cost several times what a cached series read itself costs. This ASGI middleware
answers a well-formed `GET /api/v1/kpis/{kpi}/series` itself: the same token check and
permission, the same span and cache (`reads.series_bytes`), the same bytes. Anything else — a
malformed or unknown parameter, an unknown KPI or unit, a refused credential — goes on to the
route, which answers it (or its error) as usual, so the OpenAPI document and every 4xx message
stay the route's. The request middleware around it still logs and times the request under the
route's template.
"""

from __future__ import annotations

import re
from datetime import date
from typing import ClassVar, NamedTuple
from urllib.parse import parse_qsl

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ioc.auth.authenticator import RateLimited
from ioc.auth.deps import bearer_of
from ioc.auth.oidc import InvalidCredentials
from ioc.auth.permissions import Permission
from ioc.context import AppContext
from ioc.kit.clock import local_date
from ioc.kpi import reads
from ioc.kpi.api import router
from ioc.kpi.catalog import UnknownKpi, get_kpi
from ioc.records.service import UnknownUnit
from ioc.units.service import province_code_str

SERIES_ROUTE = next(r for r in router.routes if getattr(r, "path", "").endswith("/series"))
"""The route this middleware stands in for: logs and metrics name its template."""
_SERIES_PATH = re.compile(r"/api/v1/kpis/([^/]+)/series")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_PARAMETERS = frozenset({"unit", "period", "from", "to"})


class SeriesRequest(NamedTuple):
    """The parts of a series read the route would take from a well-formed request."""

    kpi: str
    unit: str | None
    period: str | None
    date_from: date | None
    date_to: date | None


def parse_series_request(scope: Scope) -> SeriesRequest | None:
    """The series read `scope` asks for, or None when the route should judge it."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    matched = _SERIES_PATH.fullmatch(scope["path"])
    if matched is None:
        return None
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= _PARAMETERS:
        return None  # repeated or unknown parameters: the route's rules apply
    if any(not value for value in params.values()):
        return None
    try:
        return SeriesRequest(
            kpi=matched.group(1),
            unit=params.get("unit"),
            period=params.get("period"),
            date_from=_day(params.get("from")),
            date_to=_day(params.get("to")),
        )
    except ValueError:
        return None


def _day(text: str | None) -> date | None:
    if text is None:
        return None
    if _ISO_DAY.fullmatch(text) is None:
        raise ValueError(text)
    return date.fromisoformat(text)


class ReadFront:
    """ASGI middleware answering one kind of well-formed read without the router: `read`
    returns the cached bytes and whether they were a hit, or None to hand the request on."""

    route: ClassVar[BaseRoute]
    """The route stood in for: logs and metrics name its template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the read if it is well formed and allowed; else hand it on."""
        found = await self.read(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        await answer(send, *found)

    async def read(self, scope: Scope) -> tuple[bytes, bool] | None:
        raise NotImplementedError


async def may_read(ctx: AppContext, scope: Scope) -> bool:
    """Whether the request's credential is valid, within its rate and allowed to read."""
    assert ctx.auth is not None
    try:
        principal = await ctx.auth.authenticate(bearer_of(authorization(scope)))
    except (InvalidCredentials, RateLimited):
        return False
    return principal.can(Permission.READ)


class SeriesReadFront(ReadFront):
    """Well-formed KPI series reads."""

    route = SERIES_ROUTE

    async def read(self, scope: Scope) -> tuple[bytes, bool] | None:
        request = parse_series_request(scope)
        if request is None:
            return None
        ctx: AppContext = scope["app"].state.ctx
        try:
            definition = get_kpi(request.kpi)
            today = local_date(ctx.clock(), ctx.settings.tz)
            kind = request.period or definition.headline_period.value
            span = reads.series_span(kind, request.date_from, request.date_to, today=today)
        except (UnknownKpi, reads.InvalidKpiRead):
            return None
        if not await may_read(ctx, scope):
            return None
        unit = request.unit or province_code_str(ctx.settings.province)
        try:
            return await reads.series_bytes(
                definition,
                unit,
                span,
                engine=ctx.engine,
                cache=ctx.kpi_cache,
                direct=ctx.direct_reads,
            )
        except UnknownUnit:
            return None


async def answer(send: Send, data: bytes, hit: bool) -> None:
    """Send cached JSON bytes as the routes do: 200, its length, `X-Cache` hit or miss."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(data)).encode()),
                (b"content-type", b"application/json"),
                (b"x-cache", b"hit" if hit else b"miss"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def authorization(scope: Scope) -> str | None:
    """The request's `Authorization` header, if any."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
