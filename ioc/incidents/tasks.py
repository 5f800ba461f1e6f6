"""Scheduled and on-demand entry points of the incident rules."""

from __future__ import annotations

from ioc.context import AppContext
from ioc.incidents.common import IncidentChanges
from ioc.incidents.lifecycle import Evaluation, evaluate_all
from ioc.incidents.queries import publish
from ioc.kit.clock import utcnow
from ioc.units.service import province_code_str


def environment(ctx: AppContext) -> Evaluation:
    """What an evaluation judges with: the context's clock (real time for connector ages)."""
    return Evaluation(
        now=ctx.clock(),
        real_now=utcnow(),
        tz=ctx.settings.tz,
        calendar=ctx.settings.calendar,
        province=province_code_str(ctx.settings.province),
    )


async def evaluate_now(ctx: AppContext) -> IncidentChanges:
    """Judge every enabled rule everywhere in one transaction, then publish what changed."""
    from ioc.scheduler.runner import write_transaction  # the runner calls into incidents

    async with write_transaction(ctx) as session:
        changes = await evaluate_all(session, env=environment(ctx))
    publish(ctx.hub, changes)
    return changes
