"""The live hub: snapshots, ordered updates, conflation for slow clients, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ioc.live.hub import Client, Hub, UnknownTopic


class RecordingSender:
    """A connection that records frames; `gate` holds writes back to play a slow screen."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_text(self, data: str) -> None:
        await self.gate.wait()
        self.frames.append(json.loads(data))


async def snapshot(topic: str) -> dict[str, Any]:
    if not topic.startswith("kpi:"):
        raise UnknownTopic(f"unknown topic {topic!r}")
    return {"value": 0}


async def drain(client: Client) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    assert not client.pending and not client.control


async def test_subscriber_gets_snapshot_then_updates_with_increasing_seq() -> None:
    hub = Hub(snapshot)
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    writer = asyncio.create_task(client.run_writer())
    await hub.subscribe(client, ["kpi:a:75"])
    await drain(client)
    hub.publish("kpi:a:75", {"value": 1})
    await drain(client)
    hub.publish("kpi:a:75", {"value": 2})
    await drain(client)
    writer.cancel()
    assert [(f["type"], f["seq"], f["data"]["value"]) for f in sender.frames] == [
        ("snapshot", 0, 0),
        ("update", 1, 1),
        ("update", 2, 2),
    ]


async def test_slow_client_gets_only_the_latest_value_per_topic() -> None:
    hub = Hub(snapshot)
    slow, fast = RecordingSender(), RecordingSender()
    slow.gate.clear()
    slow_client, fast_client = Client(slow, queue_limit=10), Client(fast, queue_limit=10)
    writers = [asyncio.create_task(c.run_writer()) for c in (slow_client, fast_client)]
    await hub.subscribe(slow_client, ["kpi:a:75"])
    await hub.subscribe(fast_client, ["kpi:a:75"])
    await drain(fast_client)
    for value in range(1, 101):
        hub.publish("kpi:a:75", {"value": value})
        await asyncio.sleep(0)
    await drain(fast_client)
    slow.gate.set()
    await drain(slow_client)
    for writer in writers:
        writer.cancel()
    assert [f["data"]["value"] for f in fast.frames] == [0, *range(1, 101)]
    # The slow screen was stuck on its first frame; it then gets the newest value only.
    assert [f["data"]["value"] for f in slow.frames] == [0, 100]
    assert slow.frames[-1]["seq"] == 100


async def test_client_over_its_queue_limit_is_dropped_without_touching_others() -> None:
    hub = Hub(snapshot)
    stuck = RecordingSender()
    stuck.gate.clear()
    stuck_client = Client(stuck, queue_limit=2)
    healthy = RecordingSender()
    healthy_client = Client(healthy, queue_limit=2)
    writer = asyncio.create_task(healthy_client.run_writer())
    await hub.subscribe(healthy_client, ["kpi:a:75"])
    await drain(healthy_client)
    await hub.subscribe(stuck_client, ["kpi:a:75", "kpi:b:75"])
    await hub.subscribe(stuck_client, ["kpi:c:75"])  # a third pending topic: over the limit
    assert stuck_client.closed
    hub.publish("kpi:a:75", {"value": 1})
    await drain(healthy_client)
    writer.cancel()
    assert hub.client_count() == 1
    assert [f["data"]["value"] for f in healthy.frames] == [0, 1]


async def test_unknown_topic_gets_an_error_message_and_no_subscription() -> None:
    hub = Hub(snapshot)
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    writer = asyncio.create_task(client.run_writer())
    await hub.subscribe(client, ["weather:75"])
    await drain(client)
    writer.cancel()
    assert sender.frames == [
        {"type": "error", "topic": "weather:75", "message": "unknown topic 'weather:75'"}
    ]
    assert hub.subscribers == {}


async def test_too_many_topics_are_refused_with_an_error() -> None:
    hub = Hub(snapshot, max_topics_per_client=2)
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    writer = asyncio.create_task(client.run_writer())
    await hub.subscribe(client, ["kpi:a:75", "kpi:b:75", "kpi:c:75"])
    await drain(client)
    writer.cancel()
    errors = [f for f in sender.frames if f["type"] == "error"]
    assert client.topics == {"kpi:a:75", "kpi:b:75"}
    assert len(errors) == 1 and "too many topics" in errors[0]["message"]
