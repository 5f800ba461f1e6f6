"""The live hub: topics, per-topic sequence numbers and conflating per-client queues.

Publishing serialises a message once and hands the same bytes to every subscriber without
awaiting any of them; each client's writer task drains its own queue, which keeps only the
latest message per topic, so a slow screen never slows the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)

SnapshotProvider = Callable[[str], Awaitable[Any]]
"""Returns the current state of a topic; raises `UnknownTopic` for a topic that cannot exist."""


class UnknownTopic(LookupError):
    """A topic name that does not match any known topic."""


class Observer(Protocol):
    """Where delivery latencies go (a Prometheus histogram)."""

    def observe(self, amount: float) -> None: ...


class Sender(Protocol):
    """What the hub needs of a connection: a way to send one text frame."""

    async def send_text(self, data: str) -> None: ...


def encode(message: dict[str, Any]) -> str:
    """Serialise a message once, for every subscriber."""
    return orjson.dumps(message).decode()


class Client:
    """One subscriber with its pending messages, keyed by topic (latest wins)."""

    def __init__(self, sender: Sender, *, queue_limit: int, fanout: Observer | None = None) -> None:
        self.sender = sender
        self.queue_limit = queue_limit
        self.fanout = fanout
        self.topics: set[str] = set()
        self.pending: dict[str, str] = {}
        self.published_at: dict[str, float] = {}
        self.control: list[str] = []
        self.wakeup = asyncio.Event()
        self.closed = False

    def offer(self, topic: str, frame: str, *, published_at: float | None = None) -> bool:
        """Queue a topic's message, replacing an unsent older one; False if over the limit."""
        if topic not in self.pending and len(self.pending) >= self.queue_limit:
            return False
        self.pending.pop(topic, None)
        self.pending[topic] = frame
        if published_at is not None:
            self.published_at[topic] = published_at
        self.wakeup.set()
        return True

    def send_control(self, message: dict[str, Any]) -> None:
        """Queue a message that is not about a topic (errors, pings, acknowledgements)."""
        self.control.append(encode(message))
        self.wakeup.set()

    async def run_writer(self) -> None:
        """Send queued messages until the client closes."""
        while not self.closed:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.control or self.pending:
                if self.control:
                    frame = self.control.pop(0)
                    await self.sender.send_text(frame)
                    continue
                topic = next(iter(self.pending))
                frame = self.pending.pop(topic)
                published_at = self.published_at.pop(topic, None)
                await self.sender.send_text(frame)
                if published_at is not None and self.fanout is not None:
                    self.fanout.observe(time.monotonic() - published_at)


class Hub:
    """Routes topic updates to subscribed clients; owned by the app's lifespan."""

    def __init__(self, snapshot: SnapshotProvider, *, max_topics_per_client: int = 200) -> None:
        self.snapshot = snapshot
        self.max_topics_per_client = max_topics_per_client
        self.subscribers: dict[str, set[Client]] = {}
        self.seq: dict[str, int] = {}
        self.dropped_clients = 0

    def publish(self, topic: str, data: Any) -> int:
        """Send `data` as the next update of `topic`; returns the number of clients reached."""
        seq = self.seq.get(topic, 0) + 1
        self.seq[topic] = seq
        clients = self.subscribers.get(topic)
        if not clients:
            return 0
        frame = encode({"type": "update", "topic": topic, "seq": seq, "data": data})
        reached = 0
        published_at = time.monotonic()
        for client in list(clients):
            if client.offer(topic, frame, published_at=published_at):
                reached += 1
            else:
                log.warning("dropping a client that fell %d topics behind", client.queue_limit)
                self.drop(client)
        return reached

    async def subscribe(self, client: Client, topics: list[str]) -> None:
        """Subscribe to each topic and queue its snapshot; unknown topics get an error."""
        for topic in topics:
            if topic in client.topics:
                continue
            if len(client.topics) >= self.max_topics_per_client:
                client.send_control(
                    {
                        "type": "error",
                        "topic": topic,
                        "message": f"too many topics (at most {self.max_topics_per_client})",
                    }
                )
                continue
            # Register first so no update published while the snapshot is read is lost.
            self.subscribers.setdefault(topic, set()).add(client)
            client.topics.add(topic)
            try:
                state = await self.snapshot(topic)
            except UnknownTopic as exc:
                self._remove(client, topic)
                client.send_control({"type": "error", "topic": topic, "message": str(exc)})
                continue
            except Exception as exc:  # the database is away or busy: the client may try again
                log.warning("snapshot of %s failed: %s", topic, f"{type(exc).__name__}: {exc}")
                self._remove(client, topic)
                client.send_control(
                    {
                        "type": "error",
                        "topic": topic,
                        "message": "the topic's state cannot be read right now; try again shortly",
                    }
                )
                continue
            if topic in client.pending:  # a queued update is newer than the snapshot
                continue
            seq = self.seq.get(topic, 0)
            frame = encode({"type": "snapshot", "topic": topic, "seq": seq, "data": state})
            if not client.offer(topic, frame):
                self.drop(client)
                return

    def unsubscribe(self, client: Client, topics: list[str]) -> None:
        """Stop sending these topics to the client."""
        for topic in topics:
            self._remove(client, topic)
            client.pending.pop(topic, None)
            client.published_at.pop(topic, None)

    def drop(self, client: Client) -> None:
        """Forget a client entirely (it closed, or it could not keep up)."""
        for topic in list(client.topics):
            self._remove(client, topic)
        client.closed = True
        client.wakeup.set()
        self.dropped_clients += 1

    def client_count(self) -> int:
        """Distinct connected subscribers."""
        return len({c for clients in self.subscribers.values() for c in clients})

    def _remove(self, client: Client, topic: str) -> None:
        client.topics.discard(topic)
        clients = self.subscribers.get(topic)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self.subscribers[topic]
