"""Stored layouts: ids are unique, also between two requests that create one at once."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.layouts.models import WallLayout
from ioc.layouts.schemas import LayoutCreate
from ioc.layouts.service import LayoutExists, create_layout
from tests.support.races import lose_the_race

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


async def test_a_layout_created_under_an_id_taken_meanwhile_is_refused_as_existing(
    ctx: AppContext,
) -> None:
    async def create(session: AsyncSession) -> None:
        hall = LayoutCreate(id="hall", name_vi="Sảnh chính")
        await create_layout(session, hall, province_code="75", now=NOW)

    lost = await lose_the_race(ctx, take=create, attempt=create)

    assert isinstance(lost, LayoutExists)
    assert "'hall' already exists" in str(lost)
    async with ctx.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(WallLayout)) == 1
