"""Polling a real simulator over HTTP: health, atomic pages, faults isolated to one source."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import count as count_up

import httpx
import pytest
from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.orm import Session

from ioc.app import create_app
from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance, PollRun, RejectedRecord
from ioc.ingest.service import ingest_batch
from ioc.kit.clock import utcnow
from ioc.kpi.service import counted_apart, refreshed_kpis
from ioc.records.models import DossierRow
from ioc.scheduler.runner import (
    poll_instance,
    poll_while_busy,
    refresh_now_based,
    snapshot_transaction,
)
from ioc.sdk import Batch
from ioc.units.service import unit_codes
from tests.support.factories import make_dossier, make_instance
from tests.support.upstream import Upstream, count, instance_for, load


@contextmanager
def crash_before_first_page_commit() -> Iterator[list[int]]:
    """Fail the commit that would store the first page and advance the cursor: a crash
    between fetch and commit."""
    crashes: list[int] = []

    def advances_cursor(session: Session) -> bool:
        return any(
            isinstance(obj, ConnectorInstance) and inspect(obj).attrs.cursor.history.has_changes()
            for obj in session.dirty
        )

    def crash(session: Session) -> None:
        if not crashes and advances_cursor(session):
            crashes.append(1)
            raise RuntimeError("simulated crash before commit")

    event.listen(Session, "before_commit", crash)
    try:
        yield crashes
    finally:
        event.remove(Session, "before_commit", crash)


async def test_poll_pages_to_exhaustion_and_stores_every_visible_dossier(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    outcome = await poll_instance(ctx, instance_id, force=True)
    assert outcome.ok and outcome.pages > 1
    assert await count(ctx, DossierRow) == upstream.visible() == outcome.stored
    instance = await load(ctx, instance_id)
    assert instance.health == "ok" and instance.last_success_at is not None
    assert instance.cursor["after_id"]


async def test_a_scheduled_run_drains_a_backlog_beyond_the_page_budget_poll_after_poll(
    ctx: AppContext, upstream: Upstream
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"poll_max_pages": 2})
    instance_id = await instance_for(ctx, upstream)  # 50 a page: several budgets' worth
    last = await poll_while_busy(ctx, instance_id)
    assert last.ok and last.pages == 1, "the run ends on a poll that found the source quiet"
    assert await count(ctx, DossierRow) == upstream.visible()
    polls = await count(ctx, PollRun)
    assert polls > upstream.visible() / (2 * 50), "each poll stopped at its budget and is recorded"
    async with ctx.sessionmaker() as session, session.begin():  # an interval later
        (await session.get(ConnectorInstance, instance_id)).last_run_started_at = None
    again = await poll_while_busy(ctx, instance_id)
    assert again.ok and again.stored == 0
    assert await count(ctx, PollRun) == polls + 1, "a quiet source is polled once a run"


async def test_polling_again_with_nothing_new_stores_no_duplicates(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await poll_instance(ctx, instance_id, force=True)
    cursor = (await load(ctx, instance_id)).cursor
    again = await poll_instance(ctx, instance_id, force=True)
    assert again.ok and again.stored == 0
    assert (await load(ctx, instance_id)).cursor == cursor
    assert await count(ctx, DossierRow) == upstream.visible()


async def test_crash_between_fetch_and_commit_keeps_cursor_and_next_poll_completes(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    with crash_before_first_page_commit() as crashes:
        outcome = await poll_instance(ctx, instance_id, force=True)
    assert crashes and not outcome.ok
    assert "simulated crash" in (outcome.error or "")
    instance = await load(ctx, instance_id)
    assert instance.cursor == {} and instance.health == "failing"
    assert await count(ctx, DossierRow) == 0
    recovered = await poll_instance(ctx, instance_id, force=True)
    assert recovered.ok
    assert await count(ctx, DossierRow) == upstream.visible()
    assert (await load(ctx, instance_id)).health == "ok"


async def test_upstream_500_marks_the_connector_failing_and_the_api_keeps_serving(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await upstream.set_faults(mode="error")
    outcome = await poll_instance(ctx, instance_id, force=True)
    instance = await load(ctx, instance_id)
    assert not outcome.ok
    assert (instance.health, instance.consecutive_failures) == ("failing", 1)
    assert "500" in (instance.last_error or "")
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as http:
            assert (await http.get("/api/v1/kpis")).status_code == 200
            connectors = (await http.get("/api/v1/connectors")).json()
    assert (connectors[0]["health"], connectors[0]["stale"]) == ("failing", True)
    await upstream.set_faults(mode=None)
    assert (await poll_instance(ctx, instance_id, force=True)).ok
    assert (await load(ctx, instance_id)).health == "ok"
    async with ctx.sessionmaker() as session:
        outcomes = (await session.scalars(select(PollRun.outcome).order_by(PollRun.id))).all()
    assert outcomes == ["failed", "ok"]


async def test_upstream_timeout_marks_the_connector_failing(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream, timeout_seconds=0.3)
    await upstream.set_faults(mode="timeout", timeout_seconds=5)
    outcome = await poll_instance(ctx, instance_id, force=True)
    instance = await load(ctx, instance_id)
    assert not outcome.ok and instance.health == "failing"
    assert await count(ctx, DossierRow) == 0 and instance.cursor == {}


async def test_malformed_dossiers_are_rejected_with_reasons_and_the_rest_stored(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await upstream.set_faults(malformed=3)
    outcome = await poll_instance(ctx, instance_id, force=True)
    assert outcome.ok and outcome.rejected == 3
    assert await count(ctx, DossierRow) == upstream.visible() - 3
    async with ctx.sessionmaker() as session:
        reasons = (await session.scalars(select(RejectedRecord.reason))).all()
    assert len(reasons) == 3
    joined = " | ".join(reasons)
    assert "MaHoSo" in joined
    assert "before the receipt date" in joined
    assert "unknown unit code '99999'" in joined
    assert (await load(ctx, instance_id)).health == "degraded"


async def test_the_refresh_job_remembers_when_its_last_complete_run_began(
    ctx: AppContext,
) -> None:
    """So that only the first refresh of a day judges yesterday's cells (see `kpi.refresh`):
    a run that began before midnight has judged some KPIs yesterday."""
    start = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
    ticks = count_up()
    ctx.clock = lambda: start + timedelta(seconds=next(ticks))  # a second per reading
    assert ctx.kpi_refreshed_at is None
    await refresh_now_based(ctx)
    assert ctx.kpi_refreshed_at == start
    await refresh_now_based(ctx)
    assert ctx.kpi_refreshed_at == start + timedelta(seconds=len(refreshed_kpis()))


async def test_the_refresh_writes_one_kpi_per_transaction(ctx: AppContext) -> None:
    """An ingest batch waits for the KPI lock while one KPI is written, not the whole refresh.
    Each KPI reads the clock once, in its first transaction; on PostgreSQL a stock has two (its
    count in a snapshot, then its write under the lock), the other KPIs one."""
    moments: list[datetime] = []
    commits: list[int] = []

    def clock() -> datetime:
        moments.append(utcnow())
        return moments[-1]

    def committed(_session: Session) -> None:
        commits.append(len(moments))

    ctx.clock = clock
    event.listen(Session, "after_commit", committed)
    try:
        await refresh_now_based(ctx)
    finally:
        event.remove(Session, "after_commit", committed)
    kpis = refreshed_kpis()
    apart = [ctx.settings.is_postgres and counted_apart(k) for k in kpis]
    assert len(kpis) > 1 and (any(apart) or not ctx.settings.is_postgres)
    expected = [n for n, two in enumerate(apart, start=1) for _ in range(2 if two else 1)]
    assert commits == expected


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_stock_is_counted_in_a_snapshot_that_later_commits_do_not_change(
    ctx: AppContext,
) -> None:
    instance_id = await make_instance(ctx)
    async with snapshot_transaction(ctx) as session:
        before = await session.scalar(select(func.count()).select_from(DossierRow))
        async with ctx.sessionmaker() as other, other.begin():  # a batch committed meanwhile
            await ingest_batch(
                other,
                instance_id=instance_id,
                batch=Batch(records=[make_dossier()]),
                known_units=await unit_codes(other),
                tz=ctx.settings.tz,
                now=utcnow(),
            )
        after = await session.scalar(select(func.count()).select_from(DossierRow))
        isolation = await session.scalar(text("SHOW transaction_isolation"))
    assert after == before and isolation == "repeatable read"
    assert await count(ctx, DossierRow) == before + 1
