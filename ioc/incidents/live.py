"""The live topics incidents provide: `incidents` and `kpi:incidents.<mtta|mttr>_minutes:<unit>`."""

from __future__ import annotations

from typing import Any

from ioc.context import AppContext
from ioc.incidents.common import LIVE_TOPIC
from ioc.incidents.queries import snapshot
from ioc.incidents.response_times import RESPONSE_KPI_IDS, response_value
from ioc.live.hub import UnknownTopic
from ioc.units.models import AdminUnit


async def incidents_snapshot(ctx: AppContext, topic: str) -> Any:
    """The current state of an incidents topic: the active incidents, or a response-time cell."""
    async with ctx.sessionmaker() as session:
        if topic == LIVE_TOPIC:
            return await snapshot(session)
        kpi_id, _, unit = topic.removeprefix("kpi:").rpartition(":")
        if kpi_id not in RESPONSE_KPI_IDS:
            known = ", ".join(sorted(RESPONSE_KPI_IDS))
            raise UnknownTopic(f"unknown incidents KPI {kpi_id!r}; known: {known}")
        if await session.get(AdminUnit, unit) is None:
            raise UnknownTopic(f"unknown unit code {unit!r}")
        read = await response_value(session, kpi_id, unit, now=ctx.clock(), tz=ctx.settings.tz)
        return read.model_dump(mode="json")
