"""Stored rules: names are unique, also between two requests that create or rename at once."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.incidents import ruleset
from ioc.incidents.common import InvalidRule
from ioc.incidents.models import IncidentRule
from ioc.incidents.schemas import RuleCreate, RuleUpdate
from tests.support.races import lose_the_race

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def overdue(name: str) -> RuleCreate:
    return RuleCreate(name=name, kind="dossier_overdue", warn=1)


async def test_a_rule_created_under_a_name_taken_meanwhile_is_refused_as_invalid(
    ctx: AppContext,
) -> None:
    async def create(session: AsyncSession) -> None:
        await ruleset.create_rule(session, overdue("ä"), now=T0)

    lost = await lose_the_race(ctx, take=create, attempt=create)

    assert isinstance(lost, InvalidRule)
    assert "'ä' exists already" in str(lost)
    async with ctx.sessionmaker() as session:
        names = select(func.count()).where(IncidentRule.name == "ä")
        assert await session.scalar(names) == 1


async def test_a_rule_renamed_to_a_name_taken_meanwhile_is_refused_as_invalid(
    ctx: AppContext,
) -> None:
    async with ctx.sessionmaker() as session, session.begin():
        renamed = (await ruleset.create_rule(session, overdue("old"), now=T0)).id

    async def create(session: AsyncSession) -> None:
        await ruleset.create_rule(session, overdue("new"), now=T0)

    async def rename(session: AsyncSession) -> None:
        await ruleset.update_rule(session, renamed, RuleUpdate(name="new"), now=T0)

    lost = await lose_the_race(ctx, take=create, attempt=rename)

    assert isinstance(lost, InvalidRule)
    assert "'new' exists already" in str(lost)
