"""Runs one poll of a connector instance: fetch pages (ahead of the store), ingest the pages
ready in one transaction with their KPI recompute, incident rules and cursor advance, publish,
and record the run and the instance's health.

Operational timestamps (poll runs, health, ingest times) are real time; KPIs are judged at the
context's clock, which a demo may set to a simulator's replayed time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.incidents import common as incident_common
from ioc.incidents import lifecycle as incident_lifecycle
from ioc.incidents import queries as incident_queries
from ioc.incidents.tasks import environment
from ioc.ingest.models import ConnectorInstance, PollRun
from ioc.ingest.service import ingest_batch
from ioc.kit.clock import utcnow
from ioc.kpi.publish import publish_changes
from ioc.kpi.service import (
    CellValue,
    count_stock,
    counted_apart,
    recompute,
    refresh,
    refreshed_kpis,
    store_stock,
)
from ioc.live.topics import publish_connectors
from ioc.ops.logs import log_context
from ioc.scheduler.pipeline import PageBuffer, fetch_pages, merge
from ioc.sdk import Batch, Connector, ConnectorError, ConnectorRateLimited
from ioc.units.service import province_code_str, unit_codes

log = logging.getLogger(__name__)


class Health:
    """Connector health states."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"
    DISABLED = "disabled"


POLL_LOCK_CLASS = 7420003
"""First key of the PostgreSQL advisory lock a poll holds; the second is the instance id."""


@dataclass
class PollOutcome:
    """What one run did; `skipped` says why a run did not poll at all."""

    ok: bool
    skipped: str | None = None
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    rejected: int = 0
    error: str | None = None
    retry_after: float | None = None
    rate_limited: bool = False


def backoff_seconds(
    *, failures: int, interval: float, cap: float, retry_after: float | None, jitter: float
) -> float:
    """Delay before the next attempt after `failures` consecutive failures.

    Exponential from the poll interval (interval × 2^(failures−1)), capped, scaled by
    `jitter` in [0.5, 1] so that replicas and sources do not retry in step, and never shorter
    than what the upstream asked for with Retry-After.
    """
    delay = min(cap, interval * 2 ** max(failures - 1, 0)) * jitter
    return max(delay, retry_after or 0.0)


@contextlib.asynccontextmanager
async def write_transaction(ctx: AppContext) -> AsyncIterator[AsyncSession]:
    """A session in a transaction; on SQLite, one writer at a time in this process."""
    lock = ctx.write_lock if not ctx.settings.is_postgres else contextlib.nullcontext()
    async with lock, ctx.sessionmaker() as session, session.begin():
        if ctx.settings.is_postgres:
            # KPI roll-ups read and write shared province cells: one recompute at a time.
            await session.execute(text("SELECT pg_advisory_xact_lock(7420002)"))
        yield session


async def poll_while_busy(ctx: AppContext, instance_id: int) -> PollOutcome:
    """The scheduled run of an instance: a poll, then another at once for as long as the last
    one was a success that read more than one page; returns the last poll's outcome.

    A source with a backlog (the page budget spent before its last page) or filling pages
    faster than its interval passes is drained without waiting for the next tick, which would
    leave its records waiting up to an interval each time; a quiet source costs one poll per
    interval as before (a busy one at most one request more per run). Each poll is a whole
    poll: its run recorded, its health and metrics updated.
    """
    outcome = await poll_instance(ctx, instance_id)
    while outcome.ok and outcome.pages > 1:
        outcome = await poll_instance(ctx, instance_id, catching_up=True)
    return outcome


async def poll_instance(
    ctx: AppContext, instance_id: int, *, force: bool = False, catching_up: bool = False
) -> PollOutcome:
    """Poll one instance until it has no more pages (or the page budget is spent).

    Skipped while the instance backs off after failures (unless `force`, a manual run), and on
    PostgreSQL while another replica polls it or has just polled it (unless `catching_up`:
    this process polled it last, `poll_while_busy`).
    """
    async with ctx.sessionmaker() as session:
        instance = await session.get(ConnectorInstance, instance_id)
    if instance is None or not instance.enabled:
        return PollOutcome(ok=False, skipped="instance missing or disabled")
    if not force and instance.next_attempt_at is not None and utcnow() < instance.next_attempt_at:
        return PollOutcome(ok=False, skipped="backing off after failures")
    async with _poll_lock(ctx, instance_id) as held:
        if not held:
            return PollOutcome(ok=False, skipped="another replica is polling this source")
        return await _poll_observed(ctx, instance, force=force or catching_up)


@contextlib.asynccontextmanager
async def _poll_lock(ctx: AppContext, instance_id: int) -> AsyncIterator[bool]:
    """On PostgreSQL, a session advisory lock per instance held for the whole poll."""
    if not ctx.settings.is_postgres:
        yield True
        return
    async with ctx.engine.connect() as connection:
        held = await connection.scalar(
            text("SELECT pg_try_advisory_lock(:kind, :id)"),
            {"kind": POLL_LOCK_CLASS, "id": instance_id},
        )
        await connection.commit()
        try:
            yield bool(held)
        finally:
            if held:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:kind, :id)"),
                    {"kind": POLL_LOCK_CLASS, "id": instance_id},
                )
                await connection.commit()


async def _poll_observed(
    ctx: AppContext, instance: ConnectorInstance, *, force: bool
) -> PollOutcome:
    """A poll with the connector's log context, its duration and outcome counted."""
    with log_context(connector=instance.name, kind=instance.kind, run_id=uuid.uuid4().hex[:12]):
        began = time.perf_counter()
        outcome = await _poll_locked(ctx, instance.id, force=force)
        if outcome.skipped is None:
            label = "ok" if outcome.ok else "rate_limited" if outcome.rate_limited else "failed"
            ctx.metrics.poll_duration.labels(instance.name, instance.kind, label).observe(
                time.perf_counter() - began
            )
        else:
            label = "skipped"
        ctx.metrics.polls.labels(instance.name, instance.kind, label).inc()
        return outcome


async def _poll_locked(ctx: AppContext, instance_id: int, *, force: bool) -> PollOutcome:
    started = utcnow()
    async with write_transaction(ctx) as session:
        instance = await session.get(ConnectorInstance, instance_id)
        if instance is None:
            return PollOutcome(ok=False, skipped="instance missing or disabled")
        recent = instance.last_run_started_at
        if (
            not force
            and recent is not None
            and _seconds(started - recent) < (instance.interval_seconds / 2)
        ):
            return PollOutcome(ok=False, skipped="polled moments ago by another run")
        instance.last_run_started_at = started
    outcome = PollOutcome(ok=True)
    connector: Connector | None = None
    try:
        connector = ctx.registry.create(instance.kind, instance.config, clock=ctx.clock)
        await _fetch_and_store(ctx, instance, connector, outcome)
    except ConnectorRateLimited as exc:
        outcome.ok, outcome.rate_limited, outcome.retry_after = False, True, exc.retry_after
        outcome.error = f"{type(exc).__name__}: {exc}"
    except TimeoutError:
        outcome.ok = False
        outcome.error = f"ConnectorUnavailable: no answer within {instance.timeout_seconds:g}s"
    except (ConnectorError, OSError, ValueError) as exc:
        outcome.ok = False
        outcome.error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug in a plugin must not stop the scheduler
        log.exception("connector %s crashed", instance.name)
        outcome.ok = False
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        if connector is not None:
            await connector.aclose()
    await _record_run(ctx, instance, outcome, started=started)
    await publish_connectors(ctx)
    return outcome


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


async def _fetch_and_store(
    ctx: AppContext, instance: ConnectorInstance, connector: Connector, outcome: PollOutcome
) -> None:
    """Fetch pages ahead while storing the ones ready, several at a time (`ioc.scheduler.pipeline`),
    until the connector has no more or the page budget is spent. A fetch error is raised after
    the pages fetched before it are stored; a store error drops the pages fetched ahead (the
    committed cursor has not moved past them)."""
    limit = ctx.settings.ingest_batch_records
    buffer = PageBuffer(limit)
    fetcher = asyncio.create_task(
        fetch_pages(
            connector,
            dict(instance.cursor),
            buffer,
            max_pages=ctx.settings.poll_max_pages,
            page_seconds=instance.timeout_seconds,
            on_page=lambda: ctx.metrics.stage("fetch"),
        )
    )
    try:
        while pages := await buffer.take(limit):
            batch = merge(pages)
            outcome.pages += len(pages)
            outcome.fetched += batch.fetched or len(batch.records) + len(batch.rejected)
            stored, rejected = await _store_pages(ctx, instance, connector, batch, pages=len(pages))
            outcome.stored += stored
            outcome.rejected += rejected
    finally:
        fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetcher


async def _store_pages(
    ctx: AppContext, instance: ConnectorInstance, connector: Connector, batch: Batch, *, pages: int
) -> tuple[int, int]:
    """Ingest a batch of pages, recompute its KPI cells, judge the incident rules and advance the
    cursor: all or nothing; then publish."""
    record_type = connector.record_types[0].record_type if connector.record_types else "record"
    metrics = ctx.metrics
    metrics.ingest_batch_records.observe(batch.fetched or len(batch.records) + len(batch.rejected))
    metrics.ingest_batch_pages.observe(pages)
    began = metrics.start("begin")
    async with write_transaction(ctx) as session:
        metrics.finish(began)
        result = await store_batch(
            ctx, session, instance_id=instance.id, batch=batch, record_type=record_type
        )
        with metrics.stage("cursor"):
            stored = await session.get(ConnectorInstance, instance.id, with_for_update=True)
            assert stored is not None
            stored.cursor = batch.cursor  # written by the commit's flush
        committing = metrics.start("commit")
    metrics.finish(committing)
    with metrics.stage("publish"):
        await publish_changes(ctx, result.changed_cells)
        incident_queries.publish(ctx.hub, result.incidents)
    ctx.metrics.records_stored.labels(instance.name, instance.kind).inc(result.stored)
    ctx.metrics.records_rejected.labels(instance.name, instance.kind).inc(result.rejected)
    return result.stored, result.rejected


@dataclass
class StoreResult:
    """What storing a batch did, with the KPI cells and incidents to publish after the commit."""

    stored: int
    rejected: int
    changed_cells: list[CellValue]
    incidents: incident_common.IncidentChanges = field(
        default_factory=incident_common.IncidentChanges
    )


async def store_batch(
    ctx: AppContext,
    session: AsyncSession,
    *,
    instance_id: int,
    batch: Batch,
    record_type: str,
) -> StoreResult:
    """Ingest a batch, recompute the KPI cells it touches and judge the incident rules on what
    changed, inside the caller's transaction."""
    kpi_now = ctx.clock()  # one moment for both, so the KPI cells move by differences
    metrics = ctx.metrics
    with metrics.stage("ingest"):
        result = await ingest_batch(
            session,
            instance_id=instance_id,
            batch=batch,
            known_units=await unit_codes(session),
            tz=ctx.settings.tz,
            now=utcnow(),
            record_type=record_type,
            calendar=ctx.settings.calendar,
            kpi_now=kpi_now,
        )
    with metrics.stage("kpi"), metrics.kpi_recompute.labels("ingest").time():
        changed = await recompute(
            session,
            changes=result.changes,
            province_code=province_code_str(ctx.settings.province),
            tz=ctx.settings.tz,
            now=kpi_now,
        )
    metrics.ingest_kpi_cells.inc(len(changed))
    with metrics.stage("incidents"):
        judged = await incident_lifecycle.evaluate_after_ingest(
            session, changes=result.changes, cells=changed, env=environment(ctx)
        )
    return StoreResult(result.stored, result.rejected, changed, judged)


async def refresh_now_based(ctx: AppContext) -> int:
    """Recompute the cells that drift with time alone (open dossiers becoming overdue), one KPI
    per transaction, so that the ingest waits for the KPI lock while one KPI is written, not
    all of them. On PostgreSQL a stock is counted before the lock, in a snapshot
    (`count_stock`: over millions of open dossiers, about a second), and stored under it
    with what the batches committed meanwhile added (`store_stock`); the other KPIs are
    recounted under the lock, judged at the moment it is held (after every batch committed
    before it). Returns how many cells changed."""
    first: datetime | None = None
    seconds, changes = 0.0, 0
    province_code = province_code_str(ctx.settings.province)
    for kpi in refreshed_kpis():  # the time spent in each transaction, not waiting for one
        if ctx.settings.is_postgres and counted_apart(kpi):
            async with snapshot_transaction(ctx) as session:
                # After the snapshot is taken: every batch in it was judged before now.
                began, now = time.perf_counter(), ctx.clock()
                count = await count_stock(
                    session,
                    kpi,
                    province_code=province_code,
                    tz=ctx.settings.tz,
                    now=now,
                    last_refreshed=ctx.kpi_refreshed_at,
                )
            seconds += time.perf_counter() - began
            async with write_transaction(ctx) as session:
                began = time.perf_counter()
                changed = await store_stock(session, count, province_code=province_code)
        else:
            async with write_transaction(ctx) as session:
                began, now = time.perf_counter(), ctx.clock()
                changed = await refresh(
                    session,
                    province_code=province_code,
                    tz=ctx.settings.tz,
                    now=now,
                    last_refreshed=ctx.kpi_refreshed_at,
                    kpis=[kpi],
                )
        seconds += time.perf_counter() - began
        first = first or now
        await publish_changes(ctx, changed)
        changes += len(changed)
    ctx.metrics.kpi_recompute.labels("refresh").observe(seconds)
    # Every KPI committed: if the first judged today, yesterday's cells are final.
    ctx.kpi_refreshed_at = first
    return changes


@contextlib.asynccontextmanager
async def snapshot_transaction(ctx: AppContext) -> AsyncIterator[AsyncSession]:
    """A read-only PostgreSQL transaction that sees one snapshot throughout (REPEATABLE READ),
    taken before this yields: batches committed later are not in it."""
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        await session.execute(text("SELECT 1"))  # the snapshot is taken by the first query
        yield session


async def _record_run(
    ctx: AppContext, instance: ConnectorInstance, outcome: PollOutcome, *, started: datetime
) -> None:
    """Write the poll run and the instance's health, logging a failure once and a recovery once;
    judge the connector rules on the new health in the same transaction."""
    async with write_transaction(ctx) as session:
        await _store_run(session, instance, outcome, started=started)
        judged = await incident_lifecycle.evaluate_connectors(
            session, instance_ids={instance.id}, env=environment(ctx)
        )
    if ctx.hub is not None:
        incident_queries.publish(ctx.hub, judged)


async def _store_run(
    session: AsyncSession, instance: ConnectorInstance, outcome: PollOutcome, *, started: datetime
) -> None:
    """Add the poll run and update the instance's health."""
    finished = utcnow()
    session.add(
        PollRun(
            instance_id=instance.id,
            started_at=started,
            finished_at=finished,
            outcome="ok" if outcome.ok else "failed",
            pages=outcome.pages,
            fetched=outcome.fetched,
            stored=outcome.stored,
            rejected=outcome.rejected,
            error=outcome.error,
        )
    )
    stored = await session.get(ConnectorInstance, instance.id)
    if stored is None:
        return
    before = stored.health
    if outcome.ok:
        stored.health = Health.DEGRADED if outcome.rejected else Health.OK
        stored.last_success_at = finished
        stored.consecutive_failures = 0
        stored.next_attempt_at = None
        if before in (Health.FAILING, Health.DEGRADED) and stored.health == Health.OK:
            log.info("connector %s recovered", stored.name)
        return
    stored.consecutive_failures += 1
    stored.last_error = outcome.error
    stored.last_error_at = finished
    # Throttled is the upstream working as designed: degraded, not failing.
    stored.health = Health.DEGRADED if outcome.rate_limited else Health.FAILING
    delay = backoff_seconds(
        failures=stored.consecutive_failures,
        interval=stored.interval_seconds,
        cap=stored.max_backoff_seconds,
        retry_after=outcome.retry_after,
        jitter=random.uniform(0.5, 1.0),
    )
    stored.next_attempt_at = finished + timedelta(seconds=delay)
    if before != stored.health:
        log.warning(
            "connector %s is %s: %s (next attempt in %.0fs)",
            stored.name,
            stored.health,
            outcome.error,
            delay,
        )


async def check_instance(ctx: AppContext, instance_id: int) -> tuple[bool, str | None]:
    """Run the connector's `check()` against the live source within the instance's timeout."""
    async with ctx.sessionmaker() as session:
        instance = await session.get(ConnectorInstance, instance_id)
    if instance is None:
        return False, "instance missing"
    connector: Connector | None = None
    try:
        connector = ctx.registry.create(instance.kind, instance.config, clock=ctx.clock)
        async with asyncio.timeout(instance.timeout_seconds):
            await connector.check()
    except TimeoutError:
        return False, f"ConnectorUnavailable: no answer within {instance.timeout_seconds:g}s"
    except Exception as exc:  # report any failure of a plugin's check to the caller
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        if connector is not None:
            await connector.aclose()
    return True, None
