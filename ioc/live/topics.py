"""Topic names and how their current state is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ioc.context import AppContext
from ioc.incidents.live import incidents_snapshot
from ioc.kpi.catalog import UnknownKpi, get_kpi
from ioc.kpi.service import current_value
from ioc.live.hub import UnknownTopic
from ioc.units.models import AdminUnit


@dataclass(frozen=True)
class KpiTopic:
    """`kpi:<kpi id>:<unit code>`: the headline value of a KPI for a unit."""

    kpi_id: str
    unit_code: str

    @property
    def name(self) -> str:
        """The topic as clients name it."""
        return f"kpi:{self.kpi_id}:{self.unit_code}"


def parse_topic(topic: str) -> KpiTopic:
    """Parse a topic name, or raise `UnknownTopic` saying what is expected."""
    kind, _, rest = topic.partition(":")
    if kind == "kpi":
        kpi_id, _, unit_code = rest.rpartition(":")
        if kpi_id and unit_code:
            return KpiTopic(kpi_id, unit_code)
    raise UnknownTopic(f"unknown topic {topic!r}; expected kpi:<kpi id>:<unit code>")


def snapshot_provider(ctx: AppContext):
    """A provider that reads a topic's current state from the database."""

    async def snapshot(topic: str) -> Any:
        if topic == "incidents" or topic.startswith("kpi:incidents."):
            return await incidents_snapshot(ctx, topic)
        parsed = parse_topic(topic)
        try:
            kpi = get_kpi(parsed.kpi_id)
        except UnknownKpi as exc:
            raise UnknownTopic(str(exc)) from None
        async with ctx.sessionmaker() as session:
            if await session.get(AdminUnit, parsed.unit_code) is None:
                raise UnknownTopic(f"unknown unit code {parsed.unit_code!r}")
            value = await current_value(
                session, kpi, parsed.unit_code, now=ctx.clock(), tz=ctx.settings.tz
            )
        return value.model_dump(mode="json")

    return snapshot
