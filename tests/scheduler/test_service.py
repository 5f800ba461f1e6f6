"""The scheduler: one coalescing, single-instance job per enabled connector instance."""

from __future__ import annotations

from ioc.context import AppContext
from ioc.scheduler.service import REFRESH_JOB_ID, poll_job_id, start_scheduler
from tests.support.factories import make_instance


async def test_each_enabled_instance_gets_one_coalescing_job(ctx: AppContext) -> None:
    enabled = await make_instance(ctx, interval_seconds=30)
    disabled = await make_instance(ctx, enabled=False)
    scheduler = await start_scheduler(ctx)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    assert set(jobs) == {poll_job_id(enabled), REFRESH_JOB_ID}
    assert poll_job_id(disabled) not in jobs
    job = jobs[poll_job_id(enabled)]
    assert (job.max_instances, job.coalesce) == (1, True)
    assert job.trigger.interval.total_seconds() == 30
