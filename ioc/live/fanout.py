"""Cross-replica fan-out on PostgreSQL: LISTEN/NOTIFY on one channel.

Every `Hub.publish` in a replica is queued here (never awaited by the publisher) and sent by a
background task as `NOTIFY ioc_live` payloads. A payload is JSON
`{"o": <origin>, "u": [[topic, data], [topic], …]}`, packed up to `MAX_PAYLOAD_BYTES` (PostgreSQL
refuses payloads of 8000 bytes or more). An update too large to travel inline becomes a pointer,
`[topic]`: the receiving replica reads that topic's current state through its own topic
registry, as it would for a snapshot. Each replica ignores its own payloads and delivers the
others' to its local clients with `Hub.deliver` (so they are not relayed again).

If the listening connection drops, the replica reconnects with backoff and then re-reads every
topic its clients follow, so a lost notification never leaves a screen silently behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg
import orjson

from ioc.live.hub import Hub, UnknownTopic

log = logging.getLogger(__name__)

CHANNEL = "ioc_live"
MAX_PAYLOAD_BYTES = 7900


def pack(
    origin: str, updates: list[tuple[str, Any]], *, limit: int = MAX_PAYLOAD_BYTES
) -> list[str]:
    """NOTIFY payloads carrying `updates` in order, each under `limit` bytes."""
    head = orjson.dumps({"o": origin, "u": []})[:-2]  # b'{"o":"…","u":['
    payloads: list[str] = []
    items: list[bytes] = []
    size = len(head) + 2
    for topic, data in updates:
        item = orjson.dumps([topic, data])
        if len(head) + len(item) + 2 > limit:
            item = orjson.dumps([topic])  # too large to travel: a pointer
        if items and size + len(item) + 1 > limit:
            payloads.append((head + b",".join(items) + b"]}").decode())
            items, size = [], len(head) + 2
        items.append(item)
        size += len(item) + 1
    if items:
        payloads.append((head + b",".join(items) + b"]}").decode())
    return payloads


class PgFanout:
    """Relays a hub's published updates to the other replicas and delivers theirs."""

    def __init__(self, hub: Hub, dsn: str, *, origin: str | None = None) -> None:
        self.hub = hub
        self.dsn = dsn
        self.origin = origin or uuid.uuid4().hex[:12]
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.connection: asyncpg.Connection | None = None
        self.connected = asyncio.Event()
        self.received = 0
        self.sent = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect, listen, and relay this hub's publishes from now on."""
        await self._connect()
        self.hub.relay = self.send
        self._spawn(self._send_loop())

    async def stop(self) -> None:
        """Stop relaying and close the connection."""
        if self.hub.relay == self.send:
            self.hub.relay = None
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connection, self.connection = self.connection, None  # a closing, not a loss
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)

    def send(self, topic: str, data: Any) -> None:
        """Queue an update for the other replicas (the hub's relay; never blocks)."""
        self.queue.put_nowait((topic, data))

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        await connection.add_listener(CHANNEL, self._on_notify)
        connection.add_termination_listener(self._on_terminated)
        self.connection = connection
        self.connected.set()

    def _on_terminated(self, connection: asyncpg.Connection) -> None:
        if connection is not self.connection:
            return
        self.connected.clear()
        log.warning("live fan-out: lost the PostgreSQL connection; reconnecting")
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("live fan-out: reconnect failed (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            log.info("live fan-out: reconnected; refreshing followed topics")
            for topic in list(self.hub.subscribers):
                self._refetch(topic)
            return

    async def _send_loop(self) -> None:
        while True:
            updates = [await self.queue.get()]
            while not self.queue.empty():
                updates.append(self.queue.get_nowait())
            await self.connected.wait()
            assert self.connection is not None
            for payload in pack(self.origin, updates):
                try:
                    await self.connection.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                    self.sent += 1
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    # The other replicas refresh what they follow when they reconnect; here the
                    # lost update is logged, never retried out of order.
                    log.warning("live fan-out: NOTIFY failed: %s", exc)

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("live fan-out: unreadable payload on %s", channel)
            return
        if message.get("o") == self.origin:
            return
        self.received += 1
        for item in message.get("u", []):
            if len(item) == 2:
                self.hub.deliver(item[0], item[1])
            elif len(item) == 1:
                self._refetch(item[0])

    def _refetch(self, topic: str) -> None:
        async def read() -> None:
            try:
                self.hub.deliver(topic, await self.hub.topics(topic))
            except UnknownTopic:
                return
            except Exception:
                log.exception("live fan-out: re-reading %s failed", topic)

        if not topic.startswith("layout:"):  # derived topics are rendered by each replica
            self._spawn(read())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
