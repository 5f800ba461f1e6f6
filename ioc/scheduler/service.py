"""The APScheduler jobs: one per enabled connector instance, plus the time-driven refresh."""

from __future__ import annotations

import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance
from ioc.kit.clock import utcnow
from ioc.scheduler.runner import poll_instance, refresh_now_based

log = logging.getLogger(__name__)

REFRESH_JOB_ID = "kpi-refresh-now"


def poll_job_id(instance_id: int) -> str:
    """The scheduler job id of an instance."""
    return f"poll-{instance_id}"


async def start_scheduler(ctx: AppContext) -> AsyncIOScheduler:
    """Start the scheduler with a job per enabled instance, each first run right away."""
    scheduler = AsyncIOScheduler(timezone=ctx.settings.tz)
    async with ctx.sessionmaker() as session:
        instances = (
            await session.scalars(select(ConnectorInstance).where(ConnectorInstance.enabled))
        ).all()
    for instance in instances:
        schedule_instance(scheduler, ctx, instance)
    scheduler.add_job(
        refresh_now_based,
        IntervalTrigger(seconds=ctx.settings.kpi_refresh_seconds),
        args=[ctx],
        id=REFRESH_JOB_ID,
        max_instances=1,
        coalesce=True,
        next_run_time=utcnow(),
    )
    scheduler.start()
    return scheduler


def schedule_instance(
    scheduler: AsyncIOScheduler, ctx: AppContext, instance: ConnectorInstance
) -> None:
    """(Re)schedule the poll job of one instance."""
    scheduler.add_job(
        poll_instance,
        IntervalTrigger(seconds=instance.interval_seconds, jitter=instance.interval_seconds / 10),
        args=[ctx, instance.id],
        id=poll_job_id(instance.id),
        name=f"poll {instance.name}",
        max_instances=1,
        coalesce=True,
        replace_existing=True,
        next_run_time=utcnow(),
        misfire_grace_time=None,
    )
