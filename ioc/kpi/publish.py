"""Pushing KPI cell changes to the live hub, after the transaction that made them commits.

Every changed cell reaches the topic of its KPI and unit, `kpi:<kpi>:<unit>`. An update's data
is the headline cell (what a tile shows, as the topic's snapshot) plus `changed`: every cell
of that KPI and unit the recompute changed, of any period kind and start, with its new value
and when it was computed (the other API processes patch their cached series with them).
When only other periods changed (e.g. a late dossier updates last month's cells), the headline
is read again for topics that have subscribers, so a subscriber learns of every change; a
topic nobody follows here is only named to the other processes (`PgFanout.send_changed`), which
drop their cached series of it and re-read it for the clients that follow it there (a worker
without clients of its own thus reaches every API process). A slow client's queue keeps the
latest update per topic, so it may miss an earlier `changed` list: treat an update as "re-read
the series you show".
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ioc.kpi.catalog import KpiDefinition
from ioc.kpi.service import CellValue, current_value, is_headline

if TYPE_CHECKING:
    from ioc.context import AppContext


def topic(kpi_id: str, unit_code: str) -> str:
    """The live topic of a KPI's cells for one unit."""
    return f"kpi:{kpi_id}:{unit_code}"


def _changed(cells: list[CellValue]) -> list[dict[str, Any]]:
    return [
        {
            "period_kind": c.period.kind.value,
            "period_start": c.period.start.isoformat(),
            "value": c.value,
            "numerator": c.numerator,
            "denominator": c.denominator,
            "computed_at": c.computed_at.isoformat(),
        }
        for c in sorted(cells, key=lambda c: (c.period.kind.value, c.period.start))
    ]


async def publish_changes(ctx: AppContext, changed: list[CellValue]) -> int:
    """Drop the cached series of the changed cells and push them to their topics; returns the
    number of updates published."""
    ctx.kpi_cache.invalidate(changed)
    hub = ctx.hub
    if hub is None or not changed:
        return 0
    now, tz = ctx.clock(), ctx.settings.tz
    by_topic: dict[tuple[KpiDefinition, str], list[CellValue]] = defaultdict(list)
    for cell in changed:
        by_topic[(cell.kpi, cell.unit_code)].append(cell)
    updates: dict[str, dict[str, Any]] = {}
    unread: list[tuple[KpiDefinition, str]] = []
    for (kpi, unit), cells in by_topic.items():
        headline = next((c for c in cells if is_headline(c, now=now, tz=tz)), None)
        if headline is not None:
            updates[topic(kpi.id, unit)] = headline.read().model_dump(mode="json")
        elif hub.subscribers.get(topic(kpi.id, unit)):
            unread.append((kpi, unit))
        elif ctx.fanout is not None:
            ctx.fanout.send_changed(topic(kpi.id, unit))
    if unread:
        async with ctx.sessionmaker() as session:
            for kpi, unit in unread:
                read = await current_value(session, kpi, unit, now=now, tz=tz)
                updates[topic(kpi.id, unit)] = read.model_dump(mode="json")
    for (kpi, unit), cells in by_topic.items():
        data = updates.get(topic(kpi.id, unit))
        if data is not None:
            hub.publish(topic(kpi.id, unit), {**data, "changed": _changed(cells)})
    return len(updates)
