"""Every KPI cell change reaches the live topic of its KPI and unit."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ioc.context import AppContext
from ioc.live.hub import Client
from ioc.sdk import Dossier, DossierStatus
from tests.support.factories import ingest_dossiers, make_dossier, make_instance

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 local: November is the headline month
TOPIC = "kpi:onestop.on_time_rate:75"


class RecordingSender:
    """A connection that records the frames it is sent."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, data: str) -> None:
        self.frames.append(json.loads(data))


async def updates_after(
    ctx: AppContext,
    records: list[Dossier],
    *,
    topics: tuple[str, ...] = (TOPIC,),
    instance_id: int | None = None,
) -> list[dict[str, Any]]:
    """The updates a subscriber of `topics` (the province's on-time rate) gets for a batch
    stored at NOW (from a new connector instance unless given)."""
    ctx.clock = lambda: NOW
    assert ctx.hub is not None
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    writer = asyncio.create_task(client.run_writer())
    await ctx.hub.subscribe(client, list(topics))
    if instance_id is None:
        instance_id = await make_instance(ctx)
    await ingest_dossiers(ctx, records, instance_id=instance_id)
    for _ in range(20):
        await asyncio.sleep(0)
    writer.cancel()
    return [f for f in sender.frames if f["type"] == "update"]


def on_time_dossier(received: datetime) -> Dossier:
    return make_dossier(
        received_at=received,
        due_at=received + timedelta(days=5),
        resolved_at=received + timedelta(days=1),
        status=DossierStatus.PROCESSED,
        source_updated_at=received + timedelta(days=1),
    )


async def test_a_change_to_a_past_month_reaches_the_topic_with_the_headline_value(
    ctx: AppContext,
) -> None:
    updates = await updates_after(ctx, [on_time_dossier(datetime(2026, 10, 5, 2, tzinfo=UTC))])
    assert len(updates) == 1
    data = updates[0]["data"]
    # The headline (November, no dossier due) is unchanged and still what a tile shows …
    assert (data["period_kind"], data["period_start"], data["value"]) == (
        "month",
        "2026-11-01",
        None,
    )
    # … and the update lists every cell of the KPI and unit that changed.
    changed = {(c["period_kind"], c["period_start"]): c["value"] for c in data["changed"]}
    assert changed == {
        ("day", "2026-10-10"): 100.0,
        ("month", "2026-10-01"): 100.0,
        ("quarter", "2026-10-01"): 100.0,
        ("year", "2026-01-01"): 100.0,
    }


async def test_a_headline_change_carries_its_value_and_every_changed_period(
    ctx: AppContext,
) -> None:
    updates = await updates_after(ctx, [on_time_dossier(datetime(2026, 11, 2, 2, tzinfo=UTC))])
    data = updates[-1]["data"]
    assert (data["period_start"], data["value"], data["denominator"]) == ("2026-11-01", 100.0, 1.0)
    assert {c["period_kind"] for c in data["changed"]} == {"day", "month", "quarter", "year"}
