"""Cross-replica fan-out on PostgreSQL: LISTEN/NOTIFY on one channel.

Every `Hub.publish` in a replica is queued here (never awaited by the publisher) and sent by a
background task as `NOTIFY ioc_live` payloads. A payload is JSON
`{"o": <origin>, "u": [[topic, data], [topic], …]}`, packed up to `MAX_PAYLOAD_BYTES` (PostgreSQL
refuses payloads of 8000 bytes or more). An update too large to travel inline becomes a pointer,
`[topic]`: the receiving replica reads that topic's current state through its own topic
registry, as it would for a snapshot. Each replica ignores its own payloads and delivers the
others' to its local clients with `Hub.deliver` (so they are not relayed again).

A payload carries `"t"`, the sender's wall-clock time when it was handed to PostgreSQL, so a
receiver can tell how long a payload waited (PostgreSQL's queue and its own event loop) before it
was handled (`wait`), and how long handling it took until every update was written to the local
clients' sockets or queued for them (`handling`): the two parts of live delivery between the
worker's commit and the server's publish → socket histogram.

A payload may also carry `"c": [topic, …]`: topics whose state changed without an update being
published (a KPI cell of a past period, say, recomputed by a worker with no clients of its
own). A receiving replica re-reads such a topic only if its clients follow it. Every topic named
in a payload is handed, before delivery, to callbacks that keep this process's caches right (the
KPI read cache): `on_remote_update` with an update's new state, `on_remote_changed` with a
changed topic, `on_remote` with a pointer's topic (its state unknown here).

If the listening connection drops, the replica reconnects with backoff and then re-reads every
topic its clients follow and calls the `on_reconnect` callbacks (which drop whole caches), so a
lost notification never leaves a screen or a cached read silently behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from ioc.live.hub import Hub, Observer, UnknownTopic

log = logging.getLogger(__name__)

CHANNEL = "ioc_live"
MAX_PAYLOAD_BYTES = 7900


def pack(
    origin: str,
    updates: list[tuple[str, Any]],
    *,
    limit: int = MAX_PAYLOAD_BYTES,
    sent_at: float | None = None,
) -> list[str]:
    """NOTIFY payloads carrying `updates` in order, each under `limit` bytes, stamped with
    `sent_at` (wall-clock seconds; now by default)."""
    head = _head(origin, "u", sent_at)
    items: list[bytes] = []
    for topic, data in updates:
        item = orjson.dumps([topic, data])
        if len(head) + len(item) + 2 > limit:
            item = orjson.dumps([topic])  # too large to travel: a pointer
        items.append(item)
    return _fill(head, items, limit=limit)


def pack_changed(
    origin: str, topics: list[str], *, limit: int = MAX_PAYLOAD_BYTES, sent_at: float | None = None
) -> list[str]:
    """NOTIFY payloads naming `topics` as changed (`"c"`), each under `limit` bytes."""
    head = _head(origin, "c", sent_at)
    return _fill(head, [orjson.dumps(t) for t in topics], limit=limit)


def _head(origin: str, key: str, sent_at: float | None) -> bytes:
    """A payload's beginning up to its list's `[`: b'{"o":"…","t":…,"u":['."""
    stamp = time.time() if sent_at is None else sent_at
    return orjson.dumps({"o": origin, "t": round(stamp, 4), key: []})[:-2]


def _fill(head: bytes, encoded: list[bytes], *, limit: int) -> list[str]:
    """`head` + as many of the encoded items as fit under `limit`, + `]}`, as often as needed."""
    payloads: list[str] = []
    items: list[bytes] = []
    size = len(head) + 2
    for item in encoded:
        if items and size + len(item) + 1 > limit:
            payloads.append((head + b",".join(items) + b"]}").decode())
            items, size = [], len(head) + 2
        items.append(item)
        size += len(item) + 1
    if items:
        payloads.append((head + b",".join(items) + b"]}").decode())
    return payloads


STOP_SECONDS = 2.0
"""How long `PgFanout.stop` waits for its tasks, then for the connection to close."""

CHANGED = object()
"""Queued in place of data: the topic changed, re-read it if you follow it (`send_changed`)."""

RemoteListener = Callable[[str], None]
"""Called with a topic another process changed (drops what is cached of it)."""

RemoteUpdateListener = Callable[[str, Any], None]
"""Called with a topic another process published and its new state."""


class PgFanout:
    """Relays a hub's published updates to the other replicas and delivers theirs."""

    def __init__(
        self,
        hub: Hub,
        dsn: str,
        *,
        origin: str | None = None,
        wait: Observer | None = None,
        handling: Observer | None = None,
    ) -> None:
        self.hub = hub
        self.dsn = dsn
        self.origin = origin or uuid.uuid4().hex[:12]
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.on_remote: list[RemoteListener] = []
        """Called, before delivery, with each topic of another process's update whose state did
        not travel (too large: a pointer, read here again)."""
        self.on_remote_update: list[RemoteUpdateListener] = []
        """Called, before delivery, with each topic another process published and its state."""
        self.on_remote_changed: list[RemoteListener] = []
        """Called with each topic another process named as changed beside its published state
        (`"c"`: cells of other periods than the one its state shows)."""
        self.on_reconnect: list[Callable[[], None]] = []
        """Called after a lost connection is back (notifications may have been missed)."""
        self.connection: asyncpg.Connection | None = None
        self.connected = asyncio.Event()
        self.received = 0
        self.sent = 0
        self.wait = wait
        """Observes, per payload received, seconds from its sending (`"t"`) to its handling."""
        self.handling = handling
        """Observes, per payload received, seconds from its handling's start to every update
        handed to the local clients (written to their sockets, or queued when one is busy)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._rereading: dict[str, bool] = {}
        """Topics being re-read, each with whether it was named again since its read began."""

    async def start(self) -> None:
        """Connect, listen, and relay this hub's publishes from now on."""
        await self._connect()
        self.hub.relay = self.send
        self._spawn(self._send_loop())

    async def stop(self) -> None:
        """Stop relaying and close the connection."""
        if self.hub.relay == self.send:
            self.hub.relay = None
        connection, self.connection = self.connection, None  # a closing, not a loss
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            if pending and connection is not None:
                # A NOTIFY batch cancelled midway can leave asyncpg and the server each waiting
                # for the other (seen in the topology tests): closing the socket ends it.
                connection.terminate()
                await asyncio.wait(pending, timeout=STOP_SECONDS)
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), STOP_SECONDS)

    def send(self, topic: str, data: Any) -> None:
        """Queue an update for the other replicas (the hub's relay; never blocks)."""
        self.queue.put_nowait((topic, data))

    def send_changed(self, topic: str) -> None:
        """Tell the other processes that `topic` changed without an update published here: they
        drop what they cache of it and re-read it for the clients that follow it."""
        self.queue.put_nowait((topic, CHANGED))

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
            self._call(self.on_reconnect)
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
            changed = list(dict.fromkeys(t for t, data in updates if data is CHANGED))
            published = [(t, data) for t, data in updates if data is not CHANGED]
            payloads = [*pack(self.origin, published), *pack_changed(self.origin, changed)]
            try:
                # One round trip for the lot (a NOTIFY each would cost one per 7.9 kB).
                await self.connection.executemany(
                    "SELECT pg_notify($1, $2)", [(CHANNEL, payload) for payload in payloads]
                )
                self.sent += len(payloads)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The other replicas refresh what they follow when they reconnect; here the
                # lost updates are logged, never retried out of order.
                log.warning("live fan-out: NOTIFY of %d payloads failed: %s", len(payloads), exc)

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        started = time.perf_counter()
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("live fan-out: unreadable payload on %s", channel)
            return
        if message.get("o") == self.origin:
            return
        self.received += 1
        sent_at = message.get("t")
        if self.wait is not None and isinstance(sent_at, int | float):
            self.wait.observe(max(0.0, time.time() - sent_at))
        self._handle(message)
        if self.handling is not None:
            self.handling.observe(time.perf_counter() - started)

    def _handle(self, message: dict[str, Any]) -> None:
        """Drop what is cached of the payload's topics, deliver its updates, re-read pointers."""
        updates = message.get("u", [])
        changed = message.get("c", [])
        for item in updates:
            if len(item) == 2:
                self._call(self.on_remote_update, item[0], item[1])
            elif len(item) == 1:
                self._call(self.on_remote, item[0])
        for topic in changed:
            self._call(self.on_remote_changed, topic)
        for item in updates:
            if len(item) == 2:
                self.hub.deliver(item[0], item[1])
            elif len(item) == 1:
                self._refetch(item[0])
        for topic in changed:
            if self.hub.subscribers.get(topic):
                self._refetch(topic)

    @staticmethod
    def _call(callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:  # one listener's bug must not stop the delivery
                log.exception("live fan-out: a listener failed")

    def _refetch(self, topic: str) -> None:
        """Re-read a topic and deliver its state; while a read of it is in progress, only make
        sure one more read begins after it (payloads arriving faster than reads coalesce)."""
        if topic.startswith("layout:"):  # derived topics are rendered by each replica
            return
        if topic in self._rereading:
            self._rereading[topic] = True
            return
        self._rereading[topic] = False

        async def read() -> None:
            try:
                while True:
                    try:
                        self.hub.deliver(topic, await self.hub.topics(topic))
                    except UnknownTopic:
                        return
                    except Exception:
                        log.exception("live fan-out: re-reading %s failed", topic)
                    if not self._rereading.get(topic):
                        return
                    self._rereading[topic] = False  # named again meanwhile: once more
            finally:
                self._rereading.pop(topic, None)

        self._spawn(read())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
