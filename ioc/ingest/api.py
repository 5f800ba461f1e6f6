"""Routes for connector instances."""

from __future__ import annotations

from fastapi import APIRouter

from ioc.deps import ContextDep, SessionDep
from ioc.ingest.instances import list_instances, to_read
from ioc.ingest.schemas import ConnectorInstanceRead
from ioc.kit.clock import utcnow

router = APIRouter(prefix="/api/v1/connectors", tags=["connectors"])


@router.get("", response_model=list[ConnectorInstanceRead])
async def get_connectors(session: SessionDep, ctx: ContextDep) -> list[ConnectorInstanceRead]:
    """Every connector instance with its health."""
    now = utcnow()
    return [to_read(i, ctx.registry, now=now) for i in await list_instances(session)]
