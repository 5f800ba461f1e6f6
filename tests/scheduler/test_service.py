"""The scheduler: one coalescing, single-instance job per enabled connector instance."""

from __future__ import annotations

import asyncio
import logging

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance
from ioc.kit.clock import utcnow
from ioc.scheduler.service import (
    INCIDENTS_JOB_ID,
    REFRESH_JOB_ID,
    SYNC_JOB_ID,
    poll_job_id,
    start_scheduler,
    sync_jobs,
    until_stopped,
)
from tests.support.factories import make_instance


async def test_each_enabled_instance_gets_one_coalescing_job(ctx: AppContext) -> None:
    enabled = await make_instance(ctx, interval_seconds=30)
    disabled = await make_instance(ctx, enabled=False)
    scheduler = await start_scheduler(ctx)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == {poll_job_id(enabled), REFRESH_JOB_ID, SYNC_JOB_ID, INCIDENTS_JOB_ID}
    assert jobs[INCIDENTS_JOB_ID].trigger.interval.total_seconds() == 60
    assert poll_job_id(disabled) not in jobs
    job = jobs[poll_job_id(enabled)]
    assert (job.max_instances, job.coalesce) == (1, True)
    assert job.trigger.interval.total_seconds() == 30


async def test_sync_adds_new_removes_disabled_and_reschedules_changed_instances(
    ctx: AppContext,
) -> None:
    kept = await make_instance(ctx, interval_seconds=30)
    scheduler = await start_scheduler(ctx)
    try:
        added = await make_instance(ctx, interval_seconds=20)
        async with ctx.sessionmaker() as session, session.begin():
            (await session.get_one(ConnectorInstance, kept)).interval_seconds = 45
        await sync_jobs(scheduler, ctx)
        intervals = {
            job.id: job.trigger.interval.total_seconds()
            for job in scheduler.get_jobs()
            if job.id.startswith("poll-")
        }
        assert intervals == {poll_job_id(kept): 45, poll_job_id(added): 20}
        async with ctx.sessionmaker() as session, session.begin():
            (await session.get_one(ConnectorInstance, added)).enabled = False
        await sync_jobs(scheduler, ctx)
        assert scheduler.get_job(poll_job_id(added)) is None
    finally:
        scheduler.shutdown(wait=False)


async def test_a_job_stopped_mid_run_by_a_shutdown_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A process stopping while a poll runs logs one INFO line, not an ERROR with a traceback
    (the poll's transaction rolls back; the next run redoes it)."""
    started = asyncio.Event()

    async def slow_poll() -> None:
        started.set()
        await asyncio.sleep(3600)

    scheduler = AsyncIOScheduler()
    scheduler.add_job(until_stopped, args=[slow_poll], next_run_time=utcnow())
    caplog.set_level(logging.INFO)
    scheduler.start()
    await asyncio.wait_for(started.wait(), 5)
    scheduler.shutdown(wait=False)  # as the app's lifespan does
    for _ in range(10):
        await asyncio.sleep(0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("slow_poll stopped mid-run" in r.getMessage() for r in caplog.records)
