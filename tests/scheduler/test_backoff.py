"""Faults isolated to one source: backoff with a cap and jitter, Retry-After, timeouts."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest

from ioc.context import AppContext
from ioc.kit.clock import utcnow
from ioc.records.models import DossierRow
from ioc.scheduler.runner import backoff_seconds, poll_instance
from tests.support.upstream import Upstream, count, instance_for, load


@pytest.mark.parametrize(
    ("failures", "jitter", "retry_after", "expected"),
    [
        (1, 1.0, None, 10),
        (2, 1.0, None, 20),
        (4, 1.0, None, 80),
        (10, 1.0, None, 300),
        (3, 0.5, None, 20),
        (1, 1.0, 45.0, 45),
        (10, 0.5, 30.0, 150),
    ],
    ids=["first", "doubles", "grows", "capped", "jitter-halves", "retry-after-wins", "cap-wins"],
)
def test_backoff_doubles_from_the_interval_up_to_the_cap(
    failures: int, jitter: float, retry_after: float | None, expected: float
) -> None:
    assert (
        backoff_seconds(
            failures=failures, interval=10, cap=300, retry_after=retry_after, jitter=jitter
        )
        == expected
    )


async def test_a_failing_source_backs_off_and_a_manual_run_still_polls(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await upstream.set_faults(mode="error")
    assert not (await poll_instance(ctx, instance_id)).ok
    instance = await load(ctx, instance_id)
    assert instance.next_attempt_at is not None and instance.next_attempt_at > utcnow()
    skipped = await poll_instance(ctx, instance_id)
    assert skipped.skipped == "backing off after failures"
    assert (await load(ctx, instance_id)).consecutive_failures == 1
    await upstream.set_faults(mode=None)
    recovered = await poll_instance(ctx, instance_id, force=True)
    assert recovered.ok
    instance = await load(ctx, instance_id)
    assert (instance.health, instance.next_attempt_at, instance.consecutive_failures) == (
        "ok",
        None,
        0,
    )


async def test_rate_limited_source_is_degraded_and_waits_at_least_retry_after(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await upstream.set_faults(mode="rate_limited", retry_after_seconds=600)
    before = utcnow()
    outcome = await poll_instance(ctx, instance_id)
    instance = await load(ctx, instance_id)
    assert not outcome.ok and outcome.retry_after == 600
    assert instance.health == "degraded"
    assert instance.next_attempt_at is not None
    assert instance.next_attempt_at >= before + timedelta(seconds=600)
    assert "429" in (instance.last_error or "")


async def test_a_slow_source_is_cut_off_by_the_instance_timeout_and_nothing_is_stored(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream, timeout_seconds=30)
    async with ctx.sessionmaker() as session, session.begin():
        (
            await session.get_one(type(await load(ctx, instance_id)), instance_id)
        ).timeout_seconds = 1.5
    await upstream.set_faults(slow_seconds=4)
    outcome = await poll_instance(ctx, instance_id)
    assert not outcome.ok and "no answer within 1.5s" in (outcome.error or "")
    assert (await load(ctx, instance_id)).health == "failing"
    assert await count(ctx, DossierRow) == 0
    await upstream.set_faults(slow_seconds=0.1)  # slow, well within the timeout on a busy machine
    assert (await poll_instance(ctx, instance_id, force=True)).ok
    assert await count(ctx, DossierRow) == upstream.visible()


async def test_a_failure_is_logged_once_and_the_recovery_once(
    ctx: AppContext, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await upstream.set_faults(mode="error")
    with caplog.at_level(logging.INFO, logger="ioc.scheduler.runner"):
        for _ in range(3):
            await poll_instance(ctx, instance_id, force=True)
        await upstream.set_faults(mode=None)
        for _ in range(2):
            await poll_instance(ctx, instance_id, force=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "ioc.scheduler.runner"]
    assert sum("is failing" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1
    assert (await load(ctx, instance_id)).consecutive_failures == 0


async def test_a_surge_upstream_is_stored_in_full(ctx: AppContext, upstream: Upstream) -> None:
    instance_id = await instance_for(ctx, upstream)
    assert (await poll_instance(ctx, instance_id, force=True)).ok
    before = await count(ctx, DossierRow)
    await upstream.set_faults(surge=8)
    async with httpx.AsyncClient() as http:
        await http.post(f"{upstream.url}/_sim/advance", json={"seconds": 2 * 86400})
    while (outcome := await poll_instance(ctx, instance_id, force=True)).pages >= (
        ctx.settings.poll_max_pages
    ):
        assert outcome.ok
    stored = await count(ctx, DossierRow)
    assert stored == upstream.visible()
    assert stored - before > 100, "the surge brought many new dossiers"
