"""Runs one poll of a connector instance: fetch pages, ingest each in one transaction with its
KPI recompute and cursor advance, record the run and the instance's health, then publish.

Operational timestamps (poll runs, health, ingest times) are real time; KPIs are judged at the
context's clock, which a demo may set to a simulator's replayed time."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance, PollRun
from ioc.ingest.service import ChangeSet, ingest_batch
from ioc.kit.clock import utcnow
from ioc.kpi.service import CellValue, is_headline, open_dossier_facts, recompute
from ioc.sdk import Batch, Connector, ConnectorError
from ioc.units.service import COMMUNE_LEVEL, province_code_str, unit_codes

log = logging.getLogger(__name__)


class Health:
    """Connector health states."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"
    DISABLED = "disabled"


@dataclass
class PollOutcome:
    """What one run did."""

    ok: bool
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    rejected: int = 0
    error: str | None = None


@contextlib.asynccontextmanager
async def write_transaction(ctx: AppContext) -> AsyncIterator:
    """A session in a transaction; on SQLite, one writer at a time in this process."""
    lock = ctx.write_lock if not ctx.settings.is_postgres else contextlib.nullcontext()
    async with lock, ctx.sessionmaker() as session, session.begin():
        if ctx.settings.is_postgres:
            # KPI roll-ups read and write shared province cells: one recompute at a time.
            await session.execute(text("SELECT pg_advisory_xact_lock(7420002)"))
        yield session


async def poll_instance(ctx: AppContext, instance_id: int) -> PollOutcome:
    """Poll one instance until it has no more pages (or the page budget is spent)."""
    async with ctx.sessionmaker() as session:
        instance = await session.get(ConnectorInstance, instance_id)
    if instance is None or not instance.enabled:
        return PollOutcome(ok=False, error="instance missing or disabled")
    started = utcnow()
    outcome = PollOutcome(ok=True)
    connector: Connector | None = None
    try:
        connector = ctx.registry.create(instance.kind, instance.config)
        cursor = dict(instance.cursor)
        for _ in range(ctx.settings.poll_max_pages):
            batch = await connector.poll(cursor)
            outcome.pages += 1
            outcome.fetched += batch.fetched or len(batch.records) + len(batch.rejected)
            changed = await _store_page(ctx, instance, connector, batch)
            outcome.stored += changed[0]
            outcome.rejected += changed[1]
            cursor = batch.cursor
            if not batch.has_more:
                break
    except (ConnectorError, OSError, TimeoutError, ValueError) as exc:
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
    return outcome


async def _store_page(
    ctx: AppContext, instance: ConnectorInstance, connector: Connector, batch: Batch
) -> tuple[int, int]:
    """Ingest one page, recompute its KPI cells and advance the cursor: all or nothing."""
    now = ctx.clock()
    record_type = connector.record_types[0].record_type if connector.record_types else "record"
    async with write_transaction(ctx) as session:
        known = await unit_codes(session, level=COMMUNE_LEVEL)
        result = await ingest_batch(
            session,
            instance_id=instance.id,
            batch=batch,
            known_units=known,
            tz=ctx.settings.tz,
            now=utcnow(),
            record_type=record_type,
        )
        changed = await recompute(
            session,
            changes=result.changes,
            province_code=province_code_str(ctx.settings.province),
            tz=ctx.settings.tz,
            now=now,
        )
        stored = await session.get(ConnectorInstance, instance.id, with_for_update=True)
        assert stored is not None
        stored.cursor = batch.cursor
    publish_changes(ctx, changed)
    return result.stored, result.rejected


async def refresh_now_based(ctx: AppContext) -> int:
    """Recompute the cells that drift with time alone (open dossiers becoming overdue)."""
    now = ctx.clock()
    async with write_transaction(ctx) as session:
        facts = await open_dossier_facts(session)
        changed = await recompute(
            session,
            changes=ChangeSet(dossiers=facts),
            province_code=province_code_str(ctx.settings.province),
            tz=ctx.settings.tz,
            now=now,
        )
    publish_changes(ctx, changed)
    return len(changed)


def publish_changes(ctx: AppContext, changed: list[CellValue]) -> None:
    """Push every changed headline cell to its live topic (after the commit)."""
    if ctx.hub is None:
        return
    now = ctx.clock()
    for cell in changed:
        if is_headline(cell, now=now, tz=ctx.settings.tz):
            ctx.hub.publish(
                f"kpi:{cell.kpi.id}:{cell.unit_code}", cell.read().model_dump(mode="json")
            )


async def _record_run(
    ctx: AppContext, instance: ConnectorInstance, outcome: PollOutcome, *, started: datetime
) -> None:
    finished = utcnow()
    async with write_transaction(ctx) as session:
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
            if before == Health.FAILING:
                log.info("connector %s recovered", stored.name)
        else:
            stored.health = Health.FAILING
            stored.last_error = outcome.error
            stored.last_error_at = finished
            stored.consecutive_failures += 1
            if before != Health.FAILING:
                log.warning("connector %s is failing: %s", stored.name, outcome.error)
