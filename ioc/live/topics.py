"""The topics the core serves (`kpi:<kpi>:<unit>`, `connectors`) and how their state is read.

Other domains register their own families on `hub.topics` (layouts: `layout:<id>`; incidents:
`incidents`), so this module knows none of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ioc.context import AppContext
from ioc.incidents.live import incidents_snapshot
from ioc.ingest.instances import STALE_AFTER_INTERVALS, list_instances
from ioc.ingest.models import ConnectorInstance
from ioc.kit.clock import utcnow
from ioc.kpi.catalog import UnknownKpi, get_kpi
from ioc.kpi.service import current_value
from ioc.live.hub import SnapshotProvider, UnknownTopic
from ioc.units.models import AdminUnit

CONNECTORS_TOPIC = "connectors"


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
    """Parse a KPI topic name, or raise `UnknownTopic` saying what is expected."""
    kind, _, rest = topic.partition(":")
    if kind == "kpi":
        kpi_id, _, unit_code = rest.rpartition(":")
        if kpi_id and unit_code:
            return KpiTopic(kpi_id, unit_code)
    raise UnknownTopic(f"unknown topic {topic!r}; expected kpi:<kpi id>:<unit code>")


def kpi_provider(ctx: AppContext) -> SnapshotProvider:
    """Reads a KPI topic's headline value from the database."""

    async def snapshot(topic: str) -> Any:
        if topic.startswith("kpi:incidents."):  # response times, kept by the incidents domain
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


def source_freshness(instance: ConnectorInstance, *, title: str) -> dict[str, Any]:
    """What a wall shows of one source: "dữ liệu lúc HH:MM" and when that turns stale.

    Times are real time (not a demo's replayed clock): `stale_at` is when the source turns stale
    without a new successful poll, `checked_at` the server's time when this was computed."""
    now = utcnow()
    last = instance.last_success_at
    stale_at = (
        last + timedelta(seconds=STALE_AFTER_INTERVALS * instance.interval_seconds)
        if last is not None
        else None
    )
    return {
        "id": instance.id,
        "name": instance.name,
        "kind": instance.kind,
        "title": title,
        "enabled": instance.enabled,
        "health": instance.health if instance.enabled else "disabled",
        "interval_seconds": instance.interval_seconds,
        "last_success_at": last.isoformat() if last is not None else None,
        "last_error": instance.last_error,
        "stale_at": stale_at.isoformat() if stale_at is not None else None,
        "stale": instance.enabled and (stale_at is None or now > stale_at),
        "checked_at": now.isoformat(),
    }


async def connectors_state(ctx: AppContext) -> list[dict[str, Any]]:
    """Every connector instance's freshness, in name order."""
    async with ctx.sessionmaker() as session:
        instances = await list_instances(session)
    titles = {kind: cls.title or kind for kind, cls in ctx.registry.classes.items()}
    return [source_freshness(i, title=titles.get(i.kind, i.kind)) for i in instances]


def connectors_provider(ctx: AppContext) -> SnapshotProvider:
    """Reads the `connectors` topic: the freshness of every source."""

    async def snapshot(topic: str) -> Any:
        if topic != CONNECTORS_TOPIC:
            raise UnknownTopic(f"unknown topic {topic!r}; expected connectors")
        return await connectors_state(ctx)

    return snapshot


async def publish_connectors(ctx: AppContext) -> None:
    """Push the sources' freshness after a poll run (or a change of an instance) is stored."""
    if ctx.hub is not None:
        ctx.hub.publish(CONNECTORS_TOPIC, await connectors_state(ctx))


def register_core_topics(ctx: AppContext) -> None:
    """Serve `kpi:…` and `connectors` from this context."""
    assert ctx.hub is not None
    ctx.hub.topics.register("kpi", kpi_provider(ctx))
    ctx.hub.topics.register(CONNECTORS_TOPIC, connectors_provider(ctx))
    ctx.hub.topics.register("incidents", lambda topic: incidents_snapshot(ctx, topic))


def snapshot_provider(ctx: AppContext) -> SnapshotProvider:
    """The KPI topics' provider (kept for callers of the first version)."""
    return kpi_provider(ctx)
