"""Routes for connector instances, their runs and their rejected records."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query, status

from ioc.auth.deps import AuditDep, require
from ioc.auth.masking import mask_payload
from ioc.auth.permissions import Permission, Principal
from ioc.context import AppContext
from ioc.deps import ContextDep, ReadSessionDep, SessionDep
from ioc.ingest import instances as service
from ioc.ingest.models import ConnectorInstance, PollRun
from ioc.ingest.rejected import list_rejected, reingest
from ioc.ingest.schemas import (
    CheckRead,
    ConnectorInstanceCreate,
    ConnectorInstanceRead,
    ConnectorInstanceUpdate,
    ConnectorKindRead,
    PollOutcomeRead,
    PollRunRead,
    ReingestRequest,
    ReingestResult,
    RejectedRead,
)
from ioc.kit.clock import utcnow
from ioc.kit.params import InstanceIdPath, InstanceIdQuery, Offset
from ioc.scheduler.runner import check_instance, poll_instance
from ioc.scheduler.service import schedule_instance, unschedule_instance

T = TypeVar("T")

router = APIRouter(prefix="/api/v1", tags=["connectors"])

Integrator = Annotated[Principal, require(Permission.CONNECTORS)]
"""Connector management: the CONNECTORS permission (integrators)."""


@router.get("/connector-kinds", response_model=list[ConnectorKindRead])
async def get_kinds(ctx: ContextDep) -> list[ConnectorKindRead]:
    """Installed connector kinds with the JSON schema of their config."""
    return [service.kind_read(cls) for _, cls in sorted(ctx.registry.classes.items())]


@router.get("/connectors", response_model=list[ConnectorInstanceRead])
async def get_connectors(session: ReadSessionDep, ctx: ContextDep) -> list[ConnectorInstanceRead]:
    """Every connector instance with its health; secrets masked."""
    now = utcnow()
    return [
        service.to_read(i, ctx.registry, now=now) for i in await service.list_instances(session)
    ]


@router.post(
    "/connectors", response_model=ConnectorInstanceRead, status_code=status.HTTP_201_CREATED
)
async def create_connector(
    data: ConnectorInstanceCreate,
    session: SessionDep,
    ctx: ContextDep,
    _: Integrator,
    audit: AuditDep,
) -> ConnectorInstanceRead:
    """Configure a new instance; its config is validated against the connector's schema."""
    instance = await _mutate(service.create_instance(session, ctx.registry, data, now=utcnow()))
    read = service.to_read(instance, ctx.registry, now=utcnow())
    await audit("connector.create", f"connector:{instance.id}", after=read)
    await session.commit()
    _reschedule(ctx, instance)
    return read


@router.get("/connectors/{instance_id}", response_model=ConnectorInstanceRead)
async def get_connector(
    instance_id: InstanceIdPath, session: ReadSessionDep, ctx: ContextDep
) -> ConnectorInstanceRead:
    """One instance with its health."""
    instance = await _mutate(service.get_instance(session, instance_id))
    return service.to_read(instance, ctx.registry, now=utcnow())


@router.patch("/connectors/{instance_id}", response_model=ConnectorInstanceRead)
async def update_connector(
    instance_id: InstanceIdPath,
    data: ConnectorInstanceUpdate,
    session: SessionDep,
    ctx: ContextDep,
    _: Integrator,
    audit: AuditDep,
) -> ConnectorInstanceRead:
    """Change name, config, interval, timeouts or enabled; secrets not sent are kept."""
    return await _update(instance_id, data, session, ctx, audit, action="connector.update")


@router.post("/connectors/{instance_id}/enable", response_model=ConnectorInstanceRead)
async def enable_connector(
    instance_id: InstanceIdPath,
    session: SessionDep,
    ctx: ContextDep,
    _: Integrator,
    audit: AuditDep,
) -> ConnectorInstanceRead:
    """Start polling this instance again."""
    data = ConnectorInstanceUpdate(enabled=True)
    return await _update(instance_id, data, session, ctx, audit, action="connector.enable")


@router.post("/connectors/{instance_id}/disable", response_model=ConnectorInstanceRead)
async def disable_connector(
    instance_id: InstanceIdPath,
    session: SessionDep,
    ctx: ContextDep,
    _: Integrator,
    audit: AuditDep,
) -> ConnectorInstanceRead:
    """Stop polling this instance; its data and cursor are kept."""
    data = ConnectorInstanceUpdate(enabled=False)
    return await _update(instance_id, data, session, ctx, audit, action="connector.disable")


async def _update(
    instance_id: int,
    data: ConnectorInstanceUpdate,
    session: SessionDep,
    ctx: AppContext,
    audit: AuditDep,
    *,
    action: str,
) -> ConnectorInstanceRead:
    before = service.to_read(
        await _mutate(service.get_instance(session, instance_id)), ctx.registry, now=utcnow()
    ).model_dump(mode="json")  # dumped now: the update changes the same object
    instance = await _mutate(service.update_instance(session, ctx.registry, instance_id, data))
    read = service.to_read(instance, ctx.registry, now=utcnow())
    await audit(action, f"connector:{instance_id}", before=before, after=read)
    await session.commit()
    _reschedule(ctx, instance)
    return read


@router.post("/connectors/{instance_id}/test", response_model=CheckRead)
async def test_connector(
    instance_id: InstanceIdPath,
    session: SessionDep,
    ctx: ContextDep,
    _: Integrator,
    audit: AuditDep,
) -> CheckRead:
    """Check the instance's config against the live source, storing nothing."""
    await _mutate(service.get_instance(session, instance_id))
    await session.commit()  # end the read: SQLite refuses a write on a snapshot gone stale
    ok, error = await check_instance(ctx, instance_id)
    result = CheckRead(ok=ok, error=error)
    await audit("connector.test", f"connector:{instance_id}", after=result)
    return result


@router.post("/connectors/{instance_id}/run", response_model=PollOutcomeRead)
async def run_connector(
    instance_id: InstanceIdPath,
    session: SessionDep,
    ctx: ContextDep,
    _: Integrator,
    audit: AuditDep,
) -> PollOutcomeRead:
    """Poll the instance now (even while it backs off) and answer with what the run did."""
    instance = await _mutate(service.get_instance(session, instance_id))
    if not instance.enabled:
        raise HTTPException(status.HTTP_409_CONFLICT, f"instance {instance_id} is disabled")
    await audit("connector.run", f"connector:{instance_id}", detail="manual run requested")
    await session.commit()  # release the read before the run's own transactions
    outcome = await poll_instance(ctx, instance_id, force=True)
    return PollOutcomeRead(
        ok=outcome.ok,
        skipped=outcome.skipped,
        pages=outcome.pages,
        fetched=outcome.fetched,
        stored=outcome.stored,
        rejected=outcome.rejected,
        error=outcome.error,
    )


@router.get("/connectors/{instance_id}/runs", response_model=list[PollRunRead])
async def get_runs(
    instance_id: InstanceIdPath,
    session: SessionDep,
    limit: int = Query(default=50, ge=1, le=500),
) -> list[PollRun]:
    """The instance's most recent poll runs, newest first."""
    await _mutate(service.get_instance(session, instance_id))
    return await service.recent_runs(session, instance_id, limit=limit)


@router.get(
    "/rejected",
    response_model=list[RejectedRead],
    description="Payloads are masked (personal-looking fields) without the personal_data "
    "permission.",
)
async def get_rejected(
    session: SessionDep,
    principal: Integrator,
    instance_id: InstanceIdQuery = None,
    pending: bool = Query(default=True, description="Only those not yet re-ingested"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: Offset = 0,
) -> list[RejectedRead]:
    """Rejected records with their reasons and payloads, newest first."""
    rows = await list_rejected(
        session, instance_id=instance_id, pending_only=pending, limit=limit, offset=offset
    )
    reads = [RejectedRead.model_validate(row) for row in rows]
    if principal.can(Permission.PERSONAL_DATA):
        return reads
    return [r.model_copy(update={"payload": mask_payload(r.payload)}) for r in reads]


@router.post("/rejected/reingest", response_model=ReingestResult)
async def reingest_rejected(
    request: ReingestRequest, ctx: ContextDep, _: Integrator, audit: AuditDep
) -> ReingestResult:
    """Map and validate pending rejected records again and store those that now pass."""
    if request.ids is None and request.instance_id is None:
        raise HTTPException(422, "give 'ids' or 'instance_id' to re-ingest")
    result = await reingest(ctx, request)
    target = f"connector:{request.instance_id}" if request.instance_id is not None else "rejected"
    await audit("rejected.reingest", target, before=request, after=result)
    return result


async def _mutate(operation: Awaitable[T]) -> T:
    """Run a service call, turning its domain errors into 404 / 422 answers."""
    try:
        return await operation
    except service.InstanceNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except service.InvalidInstance as exc:
        raise HTTPException(422, str(exc)) from None


def _reschedule(ctx: AppContext, instance: ConnectorInstance) -> None:
    if ctx.scheduler is None:
        return
    if instance.enabled:
        schedule_instance(ctx.scheduler, ctx, instance)
    else:
        unschedule_instance(ctx.scheduler, instance.id)
