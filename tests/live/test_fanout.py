"""Replicas share live updates through PostgreSQL LISTEN/NOTIFY: an ingest on instance A reaches a
WebSocket client connected to instance B."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import orjson
import pytest
import websockets

from ioc.app import create_app
from ioc.config import Settings
from ioc.context import AppContext
from ioc.live.fanout import MAX_PAYLOAD_BYTES, PgFanout, pack, pack_changed
from ioc.live.hub import Client, Hub
from tests.live.test_hub import RecordingSender, drain
from tests.support.servers import serve_app
from tests.support.upstream import instance_for, running_upstream


async def receive(ws: Any, *, kind: str, topic: str) -> dict[str, Any]:
    """The next `kind` message about `topic`; every message read is kept in `ws.messages_seen`."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        ws.messages_seen = [*getattr(ws, "messages_seen", []), message]
        if message["type"] == kind and message.get("topic") == topic:
            return message


def test_updates_are_packed_under_the_notify_limit_and_oversized_ones_become_pointers() -> None:
    updates = [(f"kpi:k{n}:75", {"value": n, "pad": "x" * 900}) for n in range(20)]
    updates.append(("layout:big", {"pad": "y" * 20_000}))
    payloads = pack("origin", updates)
    items = [item for p in payloads for item in orjson.loads(p)["u"]]
    assert all(len(p.encode()) < MAX_PAYLOAD_BYTES for p in payloads)
    assert len(payloads) > 1
    assert [i[0] for i in items] == [t for t, _ in updates]  # all of them, in order
    assert items[-1] == ["layout:big"]  # too large: a pointer
    assert items[0][1] == updates[0][1]


class Observed:
    """A histogram's observations, in order."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, amount: float) -> None:
        self.values.append(amount)


async def test_a_received_payload_is_timed_from_its_sending_and_through_its_delivery() -> None:
    hub = Hub()
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    writer = asyncio.create_task(client.run_writer())
    hub.subscribers["kpi:a:75"] = {client}
    client.topics.add("kpi:a:75")
    wait, handling = Observed(), Observed()
    fanout = PgFanout(hub, "postgresql://unused", origin="api", wait=wait, handling=handling)
    [payload] = pack("worker", [("kpi:a:75", {"value": 7})], sent_at=time.time() - 2.0)
    fanout._on_notify(None, 0, "ioc_live", payload)
    [own] = pack("api", [("kpi:a:75", {"value": 8})])
    fanout._on_notify(None, 0, "ioc_live", own)  # its own payload: neither delivered nor timed
    await drain(client)
    writer.cancel()
    assert [f["data"]["value"] for f in sender.frames] == [7]
    assert len(wait.values) == 1 and 1.99 <= wait.values[0] < 30  # "t" has 0.1 ms steps
    assert len(handling.values) == 1 and 0 <= handling.values[0] < wait.values[0]


async def test_changed_topics_named_during_a_re_read_are_read_once_more_not_once_each() -> None:
    reads: list[int] = []
    release = asyncio.Event()

    async def state(topic: str) -> dict[str, int]:
        reads.append(len(reads) + 1)
        number = len(reads)
        await release.wait()
        return {"read": number}

    hub = Hub(state)
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    writer = asyncio.create_task(client.run_writer())
    hub.subscribers["kpi:a:75"] = {client}
    client.topics.add("kpi:a:75")
    fanout = PgFanout(hub, "postgresql://unused", origin="api")
    for _ in range(4):  # the first begins a read; the three others arrive during it
        [payload] = pack_changed("worker", ["kpi:a:75"])
        fanout._on_notify(None, 0, "ioc_live", payload)
        await asyncio.sleep(0)
    release.set()
    await drain(client)
    for _ in range(20):
        await asyncio.sleep(0)
    writer.cancel()
    assert reads == [1, 2]  # the second began after the last payload: it saw its change
    assert [f["data"]["read"] for f in sender.frames] == [1, 2]


@pytest.fixture
def postgres_settings(settings: Settings) -> Settings:
    if not settings.is_postgres:
        pytest.skip("cross-replica fan-out uses PostgreSQL LISTEN/NOTIFY")
    return settings


async def test_an_ingest_on_one_replica_reaches_a_client_of_another(
    postgres_settings: Settings, ctx: AppContext
) -> None:
    topic = "kpi:onestop.backlog:75"
    a, b = create_app(postgres_settings), create_app(postgres_settings)
    async for upstream in running_upstream():
        instance_id = await instance_for(ctx, upstream)
        async with (
            serve_app(a) as url_a,
            serve_app(b) as url_b,
            websockets.connect(url_b.replace("http://", "ws://") + "/ws") as ws,
        ):
            await ws.send(json.dumps({"type": "subscribe", "topics": [topic, "connectors"]}))
            snapshot = await receive(ws, kind="snapshot", topic=topic)
            async with httpx.AsyncClient(base_url=url_a, timeout=30) as http:
                run = await http.post(f"/api/v1/connectors/{instance_id}/run")
                assert run.json()["stored"] > 0
                kpis = await http.get("/api/v1/kpis", params={"kpi": "onestop.backlog"})
                final = kpis.json()[0]["value"]
            # Each stored page is published; the connectors topic follows the run.
            connectors = await receive(ws, kind="update", topic="connectors")
            seen = [m["data"]["value"] for m in ws.messages_seen if m.get("topic") == topic]
    assert snapshot["data"]["value"] == 0
    assert final > 0 and seen[-1] == final
    assert connectors["data"][0]["health"] == "ok"
    assert b.state.ctx.fanout.received > 0


async def test_an_update_too_large_to_notify_is_read_by_the_receiving_replica(
    postgres_settings: Settings, ctx: AppContext
) -> None:
    topic = "kpi:onestop.backlog:75"
    a, b = create_app(postgres_settings), create_app(postgres_settings)
    async with (
        serve_app(a),
        serve_app(b) as url_b,
        websockets.connect(url_b.replace("http://", "ws://") + "/ws") as ws,
    ):
        await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
        await receive(ws, kind="snapshot", topic=topic)
        a.state.ctx.hub.publish(topic, {"value": 0, "pad": "x" * 10_000})
        update = await receive(ws, kind="update", topic=topic)
    assert "pad" not in update["data"]  # B read the topic's state itself
    assert update["data"]["kpi"] == "onestop.backlog"
