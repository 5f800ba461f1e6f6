"""`/readyz` for load balancers and orchestrators, `/metrics` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from ioc.auth.deps import require
from ioc.auth.permissions import Permission
from ioc.deps import ContextDep
from ioc.ops.health import readiness

router = APIRouter(tags=["system"])


class CheckRead(BaseModel):
    """One readiness check."""

    ok: bool
    detail: str


class ReadinessRead(BaseModel):
    """`ready` only when every check passed; `failed` names the ones that did not."""

    status: str
    failed: list[str]
    checks: dict[str, CheckRead]


@router.get(
    "/readyz",
    response_model=ReadinessRead,
    responses={503: {"model": ReadinessRead, "description": "a check failed"}},
)
async def readyz(ctx: ContextDep) -> JSONResponse:
    """Ready to serve: database reachable, schema at the code's migration head, scheduler
    running (when enabled); 503 naming the failed checks otherwise."""
    checks = await readiness(ctx)
    failed = [name for name, check in checks.items() if not check.ok]
    body = ReadinessRead(
        status="unready" if failed else "ready",
        failed=failed,
        checks={name: CheckRead(ok=c.ok, detail=c.detail) for name, c in checks.items()},
    )
    return JSONResponse(body.model_dump(), status_code=503 if failed else 200)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    dependencies=[require(Permission.READ)],
)
async def metrics(ctx: ContextDep) -> Response:
    """Prometheus metrics of this process, in the text exposition format (a viewer token: they
    name the connectors and routes of the deployment)."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
