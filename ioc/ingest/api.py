"""Routes for connector instances, their runs and their rejected records."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, HTTPException, Query, status

from ioc.context import AppContext
from ioc.deps import ContextDep, SessionDep
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


@router.get("/connector-kinds", response_model=list[ConnectorKindRead])
async def get_kinds(ctx: ContextDep) -> list[ConnectorKindRead]:
    """Installed connector kinds with the JSON schema of their config."""
    return [service.kind_read(cls) for _, cls in sorted(ctx.registry.classes.items())]


@router.get("/connectors", response_model=list[ConnectorInstanceRead])
async def get_connectors(session: SessionDep, ctx: ContextDep) -> list[ConnectorInstanceRead]:
    """Every connector instance with its health; secrets masked."""
    now = utcnow()
    return [
        service.to_read(i, ctx.registry, now=now) for i in await service.list_instances(session)
    ]


@router.post(
    "/connectors", response_model=ConnectorInstanceRead, status_code=status.HTTP_201_CREATED
)
async def create_connector(
    data: ConnectorInstanceCreate, session: SessionDep, ctx: ContextDep
) -> ConnectorInstanceRead:
    """Configure a new instance; its config is validated against the connector's schema."""
    instance = await _mutate(service.create_instance(session, ctx.registry, data, now=utcnow()))
    await session.commit()
    _reschedule(ctx, instance)
    return service.to_read(instance, ctx.registry, now=utcnow())


@router.get("/connectors/{instance_id}", response_model=ConnectorInstanceRead)
async def get_connector(
    instance_id: InstanceIdPath, session: SessionDep, ctx: ContextDep
) -> ConnectorInstanceRead:
    """One instance with its health."""
    instance = await _mutate(service.get_instance(session, instance_id))
    return service.to_read(instance, ctx.registry, now=utcnow())


@router.patch("/connectors/{instance_id}", response_model=ConnectorInstanceRead)
async def update_connector(
    instance_id: InstanceIdPath, data: ConnectorInstanceUpdate, session: SessionDep, ctx: ContextDep
) -> ConnectorInstanceRead:
    """Change name, config, interval, timeouts or enabled; secrets not sent are kept."""
    instance = await _mutate(service.update_instance(session, ctx.registry, instance_id, data))
    await session.commit()
    _reschedule(ctx, instance)
    return service.to_read(instance, ctx.registry, now=utcnow())


@router.post("/connectors/{instance_id}/enable", response_model=ConnectorInstanceRead)
async def enable_connector(
    instance_id: InstanceIdPath, session: SessionDep, ctx: ContextDep
) -> ConnectorInstanceRead:
    """Start polling this instance again."""
    return await update_connector(instance_id, ConnectorInstanceUpdate(enabled=True), session, ctx)


@router.post("/connectors/{instance_id}/disable", response_model=ConnectorInstanceRead)
async def disable_connector(
    instance_id: InstanceIdPath, session: SessionDep, ctx: ContextDep
) -> ConnectorInstanceRead:
    """Stop polling this instance; its data and cursor are kept."""
    return await update_connector(instance_id, ConnectorInstanceUpdate(enabled=False), session, ctx)


@router.post("/connectors/{instance_id}/test", response_model=CheckRead)
async def test_connector(
    instance_id: InstanceIdPath, session: SessionDep, ctx: ContextDep
) -> CheckRead:
    """Check the instance's config against the live source, storing nothing."""
    await _mutate(service.get_instance(session, instance_id))
    ok, error = await check_instance(ctx, instance_id)
    return CheckRead(ok=ok, error=error)


@router.post("/connectors/{instance_id}/run", response_model=PollOutcomeRead)
async def run_connector(
    instance_id: InstanceIdPath, session: SessionDep, ctx: ContextDep
) -> PollOutcomeRead:
    """Poll the instance now (even while it backs off) and answer with what the run did."""
    instance = await _mutate(service.get_instance(session, instance_id))
    if not instance.enabled:
        raise HTTPException(status.HTTP_409_CONFLICT, f"instance {instance_id} is disabled")
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


@router.get("/rejected", response_model=list[RejectedRead])
async def get_rejected(
    session: SessionDep,
    instance_id: InstanceIdQuery = None,
    pending: bool = Query(default=True, description="Only those not yet re-ingested"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: Offset = 0,
) -> list[RejectedRead]:
    """Rejected records with their reasons and payloads, newest first."""
    rows = await list_rejected(
        session, instance_id=instance_id, pending_only=pending, limit=limit, offset=offset
    )
    return [RejectedRead.model_validate(row) for row in rows]


@router.post("/rejected/reingest", response_model=ReingestResult)
async def reingest_rejected(request: ReingestRequest, ctx: ContextDep) -> ReingestResult:
    """Map and validate pending rejected records again and store those that now pass."""
    if request.ids is None and request.instance_id is None:
        raise HTTPException(422, "give 'ids' or 'instance_id' to re-ingest")
    return await reingest(ctx, request)


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
