"""ASGI middleware: a request id, the request's log context, one log line and a latency sample
per HTTP request, labelled by route template (`/api/v1/connectors/{instance_id}`), never by the
raw path (which would make one time series per id)."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ioc.ops.logs import log_context
from ioc.ops.metrics import Metrics

log = logging.getLogger("ioc.http")

REQUEST_ID_HEADER = b"x-request-id"
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
"""Polled every few seconds by machines: logged at DEBUG only."""


def route_template(scope: Scope) -> str:
    """The matched route's path template, or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            given = value.decode("latin-1")[:64]
            if given.isprintable():
                return given
    return uuid.uuid4().hex[:16]


class RequestObservability:
    """Request id (taken from `X-Request-ID` or made up, echoed back), context, log, metrics."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log it once it is answered."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with log_context(request_id=request_id, method=scope["method"]) as context:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                duration = time.perf_counter() - started
                route = route_template(scope)
                self.metrics.http_latency.labels(scope["method"], route, str(status)).observe(
                    duration
                )
                context.update(route=route, status=status, duration_ms=round(duration * 1000, 2))
                level = logging.DEBUG if route in PROBES else logging.INFO
                log.log(level, "%s %s %d", scope["method"], route, status)
