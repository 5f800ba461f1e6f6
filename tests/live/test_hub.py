"""The live hub: snapshots, ordered updates, conflation for slow clients, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ioc.live.hub import Client, Hub, TopicRegistry, UnknownTopic


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
    hub.attach(stuck_client)
    hub.attach(healthy_client)
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


async def follow(hub: Hub, topics: list[str], **resume: Any) -> tuple[Client, RecordingSender]:
    """A connected client subscribed to `topics` whose queue has been written out."""
    sender = RecordingSender()
    client = Client(sender, queue_limit=10)
    hub.attach(client)
    client.writer = asyncio.create_task(client.run_writer())  # type: ignore[attr-defined]
    await hub.subscribe(client, topics, **resume)
    await drain(client)
    return client, sender


async def test_resume_sends_exactly_the_updates_missed_in_order() -> None:
    hub = Hub(snapshot)
    await follow(hub, ["kpi:a:75"])  # someone follows, so history is kept
    for value in range(1, 6):
        hub.publish("kpi:a:75", {"value": value})
    _, sender = await follow(hub, ["kpi:a:75"], resume={"kpi:a:75": 2}, epoch=hub.epoch)
    assert [(f["type"], f["seq"], f["data"]["value"]) for f in sender.frames] == [
        ("update", 3, 3),
        ("update", 4, 4),
        ("update", 5, 5),
    ]


async def test_resume_beyond_the_history_gets_a_fresh_snapshot_not_a_gap() -> None:
    hub = Hub(snapshot, history=3)
    await follow(hub, ["kpi:a:75"])  # someone follows, so history is kept
    for value in range(1, 11):
        hub.publish("kpi:a:75", {"value": value})
    _, sender = await follow(hub, ["kpi:a:75"], resume={"kpi:a:75": 2}, epoch=hub.epoch)
    assert [(f["type"], f["seq"]) for f in sender.frames] == [("snapshot", 10)]


async def test_resume_from_another_epoch_gets_a_snapshot() -> None:
    hub = Hub(snapshot)
    hub.publish("kpi:a:75", {"value": 1})
    _, sender = await follow(hub, ["kpi:a:75"], resume={"kpi:a:75": 1}, epoch="restarted")
    assert [(f["type"], f["epoch"]) for f in sender.frames] == [("snapshot", hub.epoch)]


async def test_resume_when_nothing_was_missed_sends_nothing() -> None:
    hub = Hub(snapshot)
    hub.publish("kpi:a:75", {"value": 1})
    _, sender = await follow(hub, ["kpi:a:75"], resume={"kpi:a:75": 1}, epoch=hub.epoch)
    assert sender.frames == []


async def test_history_is_kept_for_a_topic_whose_last_client_just_left() -> None:
    hub = Hub(snapshot)
    client, _ = await follow(hub, ["kpi:a:75"])
    hub.drop(client)  # a wall loses its connection…
    hub.publish("kpi:a:75", {"value": 1})  # …misses an update…
    _, sender = await follow(hub, ["kpi:a:75"], resume={"kpi:a:75": 0}, epoch=hub.epoch)
    assert [(f["type"], f["seq"]) for f in sender.frames] == [("update", 1)]


async def test_clients_subscribing_together_share_one_snapshot_read() -> None:
    reads = 0
    release = asyncio.Event()

    async def slow_snapshot(topic: str) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        await release.wait()
        return {"value": 7}

    hub = Hub(slow_snapshot)
    clients = [Client(RecordingSender(), queue_limit=10) for _ in range(50)]
    subscribing = [asyncio.create_task(hub.subscribe(c, ["kpi:a:75"])) for c in clients]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*subscribing)
    assert reads == 1
    assert all(json.loads(c.pending["kpi:a:75"][0][0])["data"] == {"value": 7} for c in clients)


async def test_registered_family_serves_its_topics_and_others_stay_unknown() -> None:
    registry = TopicRegistry()

    async def incidents(topic: str) -> list[dict[str, Any]]:
        return [{"id": 1, "title": "x"}]

    registry.register("incidents", incidents)
    hub = Hub(registry)
    _, sender = await follow(hub, ["incidents", "weather"])
    assert sender.frames[0]["type"] == "snapshot" and sender.frames[0]["data"][0]["id"] == 1
    assert (
        sender.frames[1]["type"] == "error"
        and "known topics: incidents" in (sender.frames[1]["message"])
    )


async def test_publish_is_relayed_and_watched_but_deliver_is_not_relayed() -> None:
    hub = Hub(snapshot)
    relayed: list[str] = []
    watched: list[str] = []
    hub.relay = lambda topic, data: relayed.append(topic)
    hub.watchers.append(lambda topic, data: watched.append(topic))
    hub.publish("kpi:a:75", {"value": 1})
    hub.deliver("kpi:b:75", {"value": 2})
    assert relayed == ["kpi:a:75"]
    assert watched == ["kpi:a:75", "kpi:b:75"]


async def test_heartbeat_pings_live_clients_and_closes_idle_ones_with_a_reason() -> None:
    hub = Hub(snapshot)
    live, live_sender = await follow(hub, ["kpi:a:75"])
    idle, idle_sender = await follow(hub, ["kpi:a:75"])
    idle.last_heard -= 120
    hub.beat(idle_seconds=60)
    await drain(live)
    await asyncio.sleep(0)
    assert live_sender.frames[-1] == {"type": "ping"}
    assert idle.closed and hub.client_count() == 1
    assert idle_sender.frames[-1]["type"] == "error"
    assert "idle" in idle_sender.frames[-1]["message"]


async def test_a_client_stuck_on_one_frame_past_its_send_timeout_is_dropped() -> None:
    hub = Hub(snapshot)
    sender = RecordingSender()
    sender.gate.clear()  # the client takes nothing
    client = Client(sender, queue_limit=10, send_timeout=5)
    hub.attach(client)
    client.task = asyncio.create_task(client.run_writer())
    await hub.subscribe(client, ["kpi:a:75"])
    await asyncio.sleep(0)
    assert client.sending_since is not None
    hub.beat(idle_seconds=60)
    assert not client.closed  # still within its timeout
    client.sending_since -= 6
    hub.beat(idle_seconds=60)
    await asyncio.sleep(0)
    assert client.closed and client.task.cancelled()
    assert hub.client_count() == 0 and hub.subscribers == {}


async def test_an_idle_client_gets_an_update_written_during_publish() -> None:
    hub = Hub(snapshot)
    client, sender = await follow(hub, ["kpi:a:75"])
    hub.publish("kpi:a:75", {"value": 1})  # no await: nothing else runs before the check
    assert sender.frames[-1]["data"] == {"value": 1}
    assert not client.pending


class BrokenSender:
    """A connection that is gone: every write raises."""

    async def send_text(self, data: str) -> None:
        raise ConnectionResetError("gone")


async def test_a_write_that_fails_during_publish_ends_that_client_only() -> None:
    hub = Hub(snapshot)
    _, healthy_sender = await follow(hub, ["kpi:a:75"])
    broken = Client(BrokenSender(), queue_limit=10)
    hub.attach(broken)
    hub.subscribers["kpi:a:75"].add(broken)
    broken.topics.add("kpi:a:75")
    writer = asyncio.create_task(broken.run_writer())
    await asyncio.sleep(0)  # the writer parks, idle
    assert hub.publish("kpi:a:75", {"value": 1}) == 2
    with pytest.raises(ConnectionResetError):
        await writer
    assert healthy_sender.frames[-1]["data"] == {"value": 1}


class FrameTap:
    """A connection's fast path that records the frame bytes it is given (or refuses them)."""

    def __init__(self, *, takes: bool = True) -> None:
        self.takes = takes
        self.frames: list[bytes] = []

    def write(self, frame: bytes) -> bool:
        if self.takes:
            self.frames.append(frame)
        return self.takes

    def flush(self) -> None:
        pass


class Latencies:
    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, amount: float) -> None:
        self.seen.append(amount)


async def test_idle_clients_share_one_encoded_frame_reported_once_per_update() -> None:
    hub = Hub(snapshot)
    sent: list[tuple[str, int, int]] = []
    hub.on_sent = lambda topic, seq, count: sent.append((topic, seq, count))
    latencies = Latencies()
    taps = [FrameTap(), FrameTap(), FrameTap(takes=False)]
    clients = []
    for tap in taps:
        client, _ = await follow(hub, ["kpi:a:75"])
        client.direct, client.fanout = tap, latencies
        clients.append(client)
    sent.clear()  # the snapshots
    assert hub.publish("kpi:a:75", {"value": 1}) == 3
    assert taps[0].frames == taps[1].frames and len(taps[0].frames) == 1
    assert taps[0].frames[0] is taps[1].frames[0]  # the same bytes, encoded once
    frame = taps[0].frames[0]
    assert frame[:2] == bytes([0x81, len(frame) - 2])  # one whole unmasked text frame
    assert json.loads(frame[2:]) == {
        "type": "update",
        "topic": "kpi:a:75",
        "seq": 1,
        "data": {"value": 1},
    }
    assert hub.frames_written_directly == 2
    # The refused one took the ordinary path (its send completed at once): reported alone.
    assert sent == [("kpi:a:75", 1, 1)]
    assert len(latencies.seen) == 1
    await asyncio.sleep(0)  # the end of the turn: the direct frames' write, reported together
    assert sent == [("kpi:a:75", 1, 1), ("kpi:a:75", 1, 2)]
    assert len(latencies.seen) == 2  # once for the two direct writes


async def test_a_client_with_a_message_queued_is_not_overtaken_by_a_direct_write() -> None:
    hub = Hub(snapshot)
    client, sender = await follow(hub, ["kpi:a:75"])
    tap = client.direct = FrameTap()
    sender.gate.clear()  # the writer is held on its next frame
    client.send_control({"type": "ping"})
    await asyncio.sleep(0)
    hub.publish("kpi:a:75", {"value": 1})
    assert tap.frames == []
    sender.gate.set()
    await drain(client)
    assert [f["type"] for f in sender.frames[-2:]] == ["ping", "update"]


async def test_the_followed_version_moves_when_a_topic_gains_or_loses_all_its_followers() -> None:
    hub = Hub(snapshot)
    start = hub.followed_version
    first, _ = await follow(hub, ["kpi:a:75"])
    after_first = hub.followed_version
    second, _ = await follow(hub, ["kpi:a:75"])
    assert after_first != start
    assert hub.followed_version == after_first  # a second follower changes no topic set
    hub.unsubscribe(first, ["kpi:a:75"])
    assert hub.followed_version == after_first
    hub.drop(second)
    assert hub.followed_version != after_first
    assert "kpi:a:75" not in hub.subscribers


class HoldingTap(FrameTap):
    """A fast path that holds the frames it takes until `flush`, which writes them to the same
    connection as the ordinary path (`sender`)."""

    def __init__(self, sender: RecordingSender) -> None:
        super().__init__()
        self.sender = sender

    def flush(self) -> None:
        self.sender.frames += [json.loads(frame[2:]) for frame in self.frames]
        self.frames = []


async def test_frames_held_by_the_fast_path_go_out_before_anything_sent_the_ordinary_way() -> None:
    hub = Hub(snapshot)
    client, sender = await follow(hub, ["kpi:a:75", "kpi:b:75"])
    tap = client.direct = HoldingTap(sender)
    hub.publish("kpi:a:75", {"value": 1})  # taken, held for the end of the turn
    tap.takes = False  # the next one goes the ordinary way, written at once
    hub.publish("kpi:b:75", {"value": 2})
    assert [(f["topic"], f["data"]) for f in sender.frames[-2:]] == [
        ("kpi:a:75", {"value": 1}),
        ("kpi:b:75", {"value": 2}),
    ]
