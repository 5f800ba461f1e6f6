"""The APScheduler jobs: one per enabled connector instance, plus the time-driven refresh."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from ioc.context import AppContext
from ioc.incidents.tasks import evaluate_now
from ioc.ingest.models import ConnectorInstance
from ioc.kit.clock import utcnow
from ioc.scheduler.runner import poll_while_busy, refresh_now_based

log = logging.getLogger(__name__)

REFRESH_JOB_ID = "kpi-refresh-now"
INCIDENTS_JOB_ID = "incidents-evaluate"


POLL_JOB_PREFIX = "poll-"
SYNC_JOB_ID = "sync-jobs"
SYNC_SECONDS = 30


async def until_stopped(job: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run a scheduled job. Stopped mid-run (the process shuts down and the scheduler cancels
    it), the job ends quietly with an INFO line: its transaction rolls back and the next run
    redoes its work, so this is no error (APScheduler would log one, with a traceback, on every
    restart that caught a poll)."""
    try:
        return await job(*args)
    except asyncio.CancelledError:
        log.info("%s stopped mid-run: the scheduler is shutting down", job.__name__)
        return None


def poll_job_id(instance_id: int) -> str:
    """The scheduler job id of an instance."""
    return f"{POLL_JOB_PREFIX}{instance_id}"


async def start_scheduler(ctx: AppContext) -> AsyncIOScheduler:
    """Start the scheduler with a job per enabled instance, each first run right away, and a
    job that keeps those in step with the database (instances added or changed elsewhere)."""
    scheduler = AsyncIOScheduler(timezone=ctx.settings.tz)
    await sync_jobs(scheduler, ctx)
    scheduler.add_job(
        until_stopped,
        IntervalTrigger(seconds=SYNC_SECONDS),
        args=[sync_jobs, scheduler, ctx],
        id=SYNC_JOB_ID,
        max_instances=1,
        coalesce=True,
    )
    scheduler.add_job(
        until_stopped,
        IntervalTrigger(seconds=ctx.settings.kpi_refresh_seconds),
        args=[refresh_now_based, ctx],
        id=REFRESH_JOB_ID,
        max_instances=1,
        coalesce=True,
        next_run_time=utcnow(),
    )
    scheduler.add_job(
        until_stopped,
        IntervalTrigger(seconds=ctx.settings.incident_evaluate_seconds),
        args=[evaluate_now, ctx],
        id=INCIDENTS_JOB_ID,
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    return scheduler


async def sync_jobs(scheduler: AsyncIOScheduler, ctx: AppContext) -> None:
    """Add, reschedule or remove poll jobs to match the enabled instances in the database."""
    async with ctx.sessionmaker() as session:
        instances = (
            await session.scalars(select(ConnectorInstance).where(ConnectorInstance.enabled))
        ).all()
    wanted = {poll_job_id(i.id): i for i in instances}
    for job in scheduler.get_jobs():
        if job.id.startswith(POLL_JOB_PREFIX) and job.id not in wanted:
            job.remove()
    for job_id, instance in wanted.items():
        job = scheduler.get_job(job_id)
        interval = getattr(job.trigger, "interval", None) if job else None
        if job is None or interval is None or interval.total_seconds() != instance.interval_seconds:
            schedule_instance(scheduler, ctx, instance)


def unschedule_instance(scheduler: AsyncIOScheduler, instance_id: int) -> None:
    """Remove an instance's poll job, if it has one."""
    if scheduler.get_job(poll_job_id(instance_id)) is not None:
        scheduler.remove_job(poll_job_id(instance_id))


def schedule_instance(
    scheduler: AsyncIOScheduler, ctx: AppContext, instance: ConnectorInstance
) -> None:
    """(Re)schedule the poll job of one instance."""
    scheduler.add_job(
        until_stopped,
        IntervalTrigger(seconds=instance.interval_seconds, jitter=instance.interval_seconds / 10),
        args=[poll_while_busy, ctx, instance.id],
        id=poll_job_id(instance.id),
        name=f"poll {instance.name}",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
        next_run_time=utcnow(),
        misfire_grace_time=None,
    )
