"""Rejected records: list them, and re-ingest them once a connector (or the data) is fixed."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.incidents.queries import publish
from ioc.ingest.models import MAPPING_STAGE, ConnectorInstance, RejectedRecord
from ioc.ingest.schemas import ReingestRequest, ReingestResult
from ioc.ingest.service import validate_records
from ioc.kit.clock import utcnow
from ioc.kpi.publish import publish_changes
from ioc.scheduler.runner import store_batch, write_transaction
from ioc.sdk import RECORD_TYPES, Batch, Connector, Record, RecordRejected
from ioc.sdk.batch import describe_validation_error
from ioc.units.service import unit_codes

REINGEST_CHUNK = 1000


async def list_rejected(
    session: AsyncSession,
    *,
    instance_id: int | None,
    pending_only: bool,
    limit: int,
    offset: int,
) -> Sequence[RejectedRecord]:
    """Rejected records, newest first."""
    query = select(RejectedRecord).order_by(RejectedRecord.id.desc()).limit(limit).offset(offset)
    if instance_id is not None:
        query = query.where(RejectedRecord.instance_id == instance_id)
    if pending_only:
        query = query.where(RejectedRecord.resolved_at.is_(None))
    return (await session.scalars(query)).all()


async def reingest(ctx: AppContext, request: ReingestRequest) -> ReingestResult:
    """Map and validate pending rejected records again; store those that now pass.

    Each one that still fails keeps its row, with the new reason; each one stored is marked
    resolved. Raw upstream payloads are re-mapped by the instance's connector (`parse`),
    canonical ones (rejected by the ingest) are validated again.
    """
    tried = stored = 0
    async with write_transaction(ctx) as session:
        rows = await _pending(session, request)
        known = await unit_codes(session)
        connectors: dict[int, Connector | None] = {}
        by_instance: dict[int, list[tuple[RejectedRecord, Record]]] = {}
        for row in rows:
            tried += 1
            record = await _remap(ctx, session, row, connectors)
            if record is None:
                continue
            _, still = validate_records([record], known)
            if still:
                row.reason = still[0][1]
                continue
            by_instance.setdefault(row.instance_id, []).append((row, record))
        changed = []
        judged = []
        for instance_id, pairs in by_instance.items():
            result = await store_batch(
                ctx,
                session,
                instance_id=instance_id,
                batch=Batch(records=[record for _, record in pairs]),
                record_type=pairs[0][1].record_type,
            )
            changed.extend(result.changed_cells)
            judged.append(result.incidents)
            now = utcnow()
            for row, _ in pairs:
                row.resolved_at = now
            stored += len(pairs)
        for connector in connectors.values():
            if connector is not None:
                await connector.aclose()
    await publish_changes(ctx, changed)
    for incidents in judged:
        publish(ctx.hub, incidents)
    return ReingestResult(tried=tried, stored=stored, still_rejected=tried - stored)


async def _pending(session: AsyncSession, request: ReingestRequest) -> Sequence[RejectedRecord]:
    query = (
        select(RejectedRecord)
        .where(RejectedRecord.resolved_at.is_(None))
        .order_by(RejectedRecord.id)
        .limit(REINGEST_CHUNK)
    )
    if request.ids is not None:
        query = query.where(RejectedRecord.id.in_(request.ids))
    if request.instance_id is not None:
        query = query.where(RejectedRecord.instance_id == request.instance_id)
    return (await session.scalars(query)).all()


async def _remap(
    ctx: AppContext,
    session: AsyncSession,
    row: RejectedRecord,
    connectors: dict[int, Connector | None],
) -> Record | None:
    """The record a rejected payload maps to now, or None (with the row's reason updated)."""
    try:
        if row.stage == MAPPING_STAGE:
            connector = await _connector(ctx, session, row.instance_id, connectors)
            if connector is None:
                row.reason = "the connector of this instance is not installed or misconfigured"
                return None
            return connector.parse(row.payload)
        return RECORD_TYPES[row.record_type].model_validate(row.payload)
    except NotImplementedError as exc:
        if "cannot re-map" not in row.reason:
            row.reason = f"{row.reason} (cannot re-map: {exc})"
    except (RecordRejected, ValidationError, ValueError, TypeError, KeyError) as exc:
        row.reason = describe_validation_error(exc)
    return None


async def _connector(
    ctx: AppContext,
    session: AsyncSession,
    instance_id: int,
    connectors: dict[int, Connector | None],
) -> Connector | None:
    if instance_id not in connectors:
        instance = await session.get(ConnectorInstance, instance_id)
        try:
            connectors[instance_id] = (
                ctx.registry.create(instance.kind, instance.config, clock=ctx.clock)
                if instance
                else None
            )
        except (LookupError, ValidationError):
            connectors[instance_id] = None
    return connectors[instance_id]
