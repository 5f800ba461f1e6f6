"""Several pages in one transaction: what a poll fetches ahead is stored together, atomically, and
a store that fails mid-poll leaves the cursor and the data agreeing and loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import event, func, inspect, select
from sqlalchemy.orm import Session

from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance
from ioc.records.models import DossierRow
from ioc.scheduler.runner import poll_instance
from tests.support.upstream import Upstream, count, instance_for, load


def _advances_cursor(session: Session) -> bool:
    return any(
        isinstance(obj, ConnectorInstance) and inspect(obj).attrs.cursor.history.has_changes()
        for obj in session.dirty
    )


@contextmanager
def cursor_commits(*, fail_at: int | None = None) -> Iterator[list[int]]:
    """Count the commits that advance a cursor (one per ingest transaction); with `fail_at`,
    that one fails before it commits, as a crash would."""
    commits: list[int] = []

    def seen(session: Session) -> None:
        if _advances_cursor(session):
            commits.append(1)
            if len(commits) == fail_at:
                raise RuntimeError("simulated crash before the commit of a batch")

    event.listen(Session, "before_commit", seen)
    try:
        yield commits
    finally:
        event.remove(Session, "before_commit", seen)


def _pages_per_transaction(ctx: AppContext) -> tuple[float, float]:
    """(transactions, pages) the ingest metrics counted."""
    registry = ctx.metrics.registry
    transactions = registry.get_sample_value("ioc_ingest_batch_pages_count") or 0.0
    return transactions, registry.get_sample_value("ioc_ingest_batch_pages_sum") or 0.0


async def test_pages_fetched_ahead_are_stored_together_in_fewer_transactions(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    with cursor_commits() as commits:
        outcome = await poll_instance(ctx, instance_id, force=True)
    assert outcome.ok and outcome.pages >= 4
    assert 1 <= len(commits) < outcome.pages, "pages ready at a store share its transaction"
    transactions, pages = _pages_per_transaction(ctx)
    assert (transactions, pages) == (len(commits), outcome.pages)
    assert await count(ctx, DossierRow) == upstream.visible() == outcome.stored


async def test_a_batch_limit_of_one_record_stores_each_page_in_its_own_transaction(
    ctx: AppContext, upstream: Upstream
) -> None:
    ctx.settings.ingest_batch_records = 1
    instance_id = await instance_for(ctx, upstream)
    with cursor_commits() as commits:
        outcome = await poll_instance(ctx, instance_id, force=True)
    assert outcome.ok and len(commits) == outcome.pages >= 4
    assert await count(ctx, DossierRow) == upstream.visible()


async def test_a_batch_failing_before_commit_stores_none_of_its_pages_and_loses_nothing(
    ctx: AppContext, upstream: Upstream
) -> None:
    ctx.settings.ingest_batch_records = 100  # two pages of 50 a transaction at most
    instance_id = await instance_for(ctx, upstream)
    with cursor_commits(fail_at=2) as commits:
        failed = await poll_instance(ctx, instance_id, force=True)
    assert len(commits) == 2 and not failed.ok
    assert "simulated crash" in (failed.error or "")
    stored = await _stored_ids(ctx)
    cursor = (await load(ctx, instance_id)).cursor
    assert 0 < len(stored) < upstream.visible(), "the first batch committed, the second did not"
    assert stored == _covered_by(upstream, cursor), "the cursor and the stored dossiers agree"

    recovered = await poll_instance(ctx, instance_id, force=True)
    assert recovered.ok
    async with ctx.sessionmaker() as session:
        rows, distinct = (
            await session.execute(
                select(func.count(), func.count(DossierRow.external_id.distinct()))
            )
        ).one()
    assert rows == distinct == upstream.visible(), "the pages fetched ahead came again, once"
    assert await _stored_ids(ctx) == _covered_by(upstream, (await load(ctx, instance_id)).cursor)


async def _stored_ids(ctx: AppContext) -> set[str]:
    async with ctx.sessionmaker() as session:
        return set((await session.scalars(select(DossierRow.external_id))).all())


def _covered_by(upstream: Upstream, cursor: dict) -> set[str]:
    """The upstream's dossiers at or before the cursor's keyset position."""
    if not cursor:
        return set()
    position = (datetime.fromisoformat(cursor["updated_after"]), cursor["after_id"])
    pairs = upstream.simulator.page(upstream.simulator.now(), None, limit=10**9)
    return {record["MaHoSo"] for key, record in pairs if key <= position}
