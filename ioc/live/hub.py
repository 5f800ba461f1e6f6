"""The live hub: topics, per-topic sequence numbers, resume history and conflating client queues.

Publishing serialises a message once and hands it to every subscriber without awaiting any of
them: an idle client whose connection allows it gets the update's WebSocket frame, encoded once
for all, written straight to its socket (`ioc.live.frames`); any other client gets the message
in its queue, which keeps only the latest message per topic and which its writer task drains, so
a slow screen never slows the others. Each topic keeps a short history of its last updates, so a
client that reconnects with the last `seq` it saw gets what it missed — or a fresh snapshot when
the history no longer reaches back that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

from ioc.live.frames import FrameBatch, text_frame

log = logging.getLogger(__name__)

SnapshotProvider = Callable[[str], Awaitable[Any]]
"""Returns the current state of a topic; raises `UnknownTopic` for a topic that cannot exist."""

Watcher = Callable[[str, Any], None]
"""Called with every update delivered in this process (local or relayed from a replica)."""

Relay = Callable[[str, Any], None]
"""Hands a published update to the other replicas (see `ioc.live.fanout`)."""

SentHook = Callable[[str, int, int], None]
"""Called with a topic, a seq and how many clients its frame was just written to (benches)."""


class UnknownTopic(LookupError):
    """A topic name that does not match any known topic."""


class Observer(Protocol):
    """Where delivery latencies go (a Prometheus histogram)."""

    def observe(self, amount: float) -> None: ...


class Sender(Protocol):
    """What the hub needs of a connection: a way to send one text frame."""

    async def send_text(self, data: str) -> None: ...


class FrameWriter(Protocol):
    """A connection's fast path: takes a ready-made frame to write in order, or says it cannot
    (False); `flush` writes what it took before anything is sent the ordinary way."""

    def write(self, frame: bytes) -> bool: ...

    def flush(self) -> None: ...


def _observe_since(observer: Observer, started: float) -> None:
    observer.observe(time.monotonic() - started)


def encode(message: dict[str, Any]) -> str:
    """Serialise a message once, for every subscriber."""
    return orjson.dumps(message).decode()


MAX_TOPIC_LENGTH = 200


class TopicRegistry:
    """Snapshot providers by topic family: `kind:<rest>` topics by `kind`, bare names exactly.

    Domains register their own families (`kpi`, `layout`, `connectors`, `incidents`…), so the
    hub knows nothing of any of them."""

    def __init__(self, fallback: SnapshotProvider | None = None) -> None:
        self.providers: dict[str, SnapshotProvider] = {}
        self.fallback = fallback

    def register(self, family: str, provider: SnapshotProvider) -> None:
        """Serve topics named `family` or `family:<…>` from `provider` (replacing any other)."""
        self.providers[family] = provider

    def families(self) -> list[str]:
        """Registered topic families, sorted."""
        return sorted(self.providers)

    def knows(self, topic: str) -> bool:
        """Whether some provider is registered for this topic's family."""
        return topic.partition(":")[0] in self.providers

    async def __call__(self, topic: str) -> Any:
        """The current state of `topic`, or `UnknownTopic`."""
        if len(topic) > MAX_TOPIC_LENGTH or not topic.isprintable():
            raise UnknownTopic(
                f"a topic name is printable text of at most {MAX_TOPIC_LENGTH} characters"
            )
        provider = self.providers.get(topic.partition(":")[0])
        if provider is None:
            if self.fallback is not None:
                return await self.fallback(topic)
            families = ", ".join(f"{f}:…" if f in ("kpi", "layout") else f for f in self.families())
            raise UnknownTopic(f"unknown topic {topic!r}; known topics: {families}")
        return await provider(topic)


Entry = tuple[str, int]
"""A frame ready to send and the seq it carries (0 for a snapshot of an untouched topic)."""


class Client:
    """One subscriber with its pending messages, keyed by topic (latest wins)."""

    def __init__(
        self,
        sender: Sender,
        *,
        queue_limit: int,
        send_timeout: float = 10.0,
        on_sent: SentHook | None = None,
        fanout: Observer | None = None,
        direct: FrameWriter | None = None,
    ) -> None:
        self.sender = sender
        self.direct = direct
        """Writes an update's shared frame bytes straight to the socket (see `write_now`)."""
        self.queue_limit = queue_limit
        self.send_timeout = send_timeout
        self.on_sent = on_sent
        self.fanout = fanout
        self.published_at: dict[str, tuple[int, float]] = {}
        """Per topic, the seq of the newest update offered and when it was published."""
        self.topics: set[str] = set()
        self.pending: dict[str, list[Entry]] = {}
        self.control: deque[str] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.last_heard = time.monotonic()
        self.sending_since: float | None = None
        """When the frame being written started; the heartbeat drops a client stuck on one."""
        self.task: asyncio.Task[None] | None = None
        """The writer task, cancelled when the client is stuck."""
        self.parked = False
        """The writer waits with nothing queued: an offered frame can be written at once."""
        self.inflight: asyncio.Task[None] | None = None
        """Finishes a write that `offer` began and that had to wait."""
        self.failure: Exception | None = None

    def heard(self) -> None:
        """The client said something: it is alive."""
        self.last_heard = time.monotonic()

    def _sent(self, topic: str, seq: int) -> None:
        """A frame was written: tell the observers (an update's publish-to-write latency)."""
        if self.on_sent is not None:
            self.on_sent(topic, seq, 1)
        published = self.published_at.get(topic)
        if self.fanout is not None and published is not None and published[0] == seq:
            del self.published_at[topic]
            self.fanout.observe(time.monotonic() - published[1])

    def write_now(self, frame: bytes) -> bool:
        """Write an encoded frame straight to the socket if nothing of this client's is queued
        or being written (so order is kept) and its connection takes it at once."""
        direct = self.direct
        return (
            direct is not None
            and self.parked
            and not self.pending
            and not self.control
            and not self.closed
            and direct.write(frame)
        )

    def offer(self, topic: str, frame: str, seq: int = 0) -> bool:
        """Queue a topic's message, replacing an unsent older one; False if over the limit."""
        return self.offer_many(topic, [(frame, seq)])

    def offer_many(self, topic: str, entries: list[Entry]) -> bool:
        """Queue several frames of one topic to send in order (a resume's missed updates).

        A client whose writer is idle gets them written at once, as `websockets.broadcast`
        would: a write that does not have to wait completes here, without a task switch; one
        that has to wait (a full socket buffer) is finished by a task, never awaited here."""
        if self.parked and not self.pending and not self.control and not self.closed:
            self._send_now(topic, entries)
            return True
        if topic not in self.pending and len(self.pending) >= self.queue_limit:
            return False
        self.pending.pop(topic, None)
        self.pending[topic] = entries
        self.wakeup.set()
        return True

    def send_control(self, message: dict[str, Any]) -> None:
        """Queue a message that is not about a topic (errors, pings, acknowledgements)."""
        self.control.append(encode(message))
        self.wakeup.set()

    def stuck(self, now: float) -> bool:
        """Whether the frame being written has waited longer than `send_timeout`."""
        return self.sending_since is not None and now - self.sending_since > self.send_timeout

    def cancel(self) -> None:
        """Stop writing (a client stuck on a frame, or gone)."""
        for task in (self.task, self.inflight):
            if task is not None:
                task.cancel()

    def _send_now(self, topic: str, entries: list[Entry]) -> None:
        """Step each frame's send coroutine once: most complete at once (written)."""
        if self.direct is not None:
            self.direct.flush()  # frames taken by the fast path go first
        for index, (frame, seq) in enumerate(entries):
            send = self.sender.send_text(frame)
            self.sending_since = time.monotonic()
            try:
                waiting_on = send.send(None)
            except StopIteration:
                self.sending_since = None
                self._sent(topic, seq)
                continue
            except Exception as exc:  # the connection is gone: the writer ends with it
                self.sending_since = None
                self.failure = exc
                self.parked = False
                self.wakeup.set()
                return
            # The write waits (backpressure): a task finishes it, the writer takes what follows.
            self.parked = False
            self.inflight = asyncio.get_running_loop().create_task(
                self._finish(send, waiting_on, topic, seq)
            )
            if index + 1 < len(entries):
                self.pending[topic] = entries[index + 1 :]
            return

    async def _finish(self, send: Any, waiting_on: Any, topic: str, seq: int) -> None:
        """Drive a suspended send coroutine to its end, as a task would."""
        try:
            while True:
                if waiting_on is None:  # a bare yield (sleep(0))
                    await asyncio.sleep(0)
                else:  # wait for the future it waits on; its outcome is for `send` to raise
                    await asyncio.wait({waiting_on})
                waiting_on = send.send(None)
        except StopIteration:
            self.sending_since = None
            self._sent(topic, seq)
        except asyncio.CancelledError:
            send.close()
            raise
        except Exception as exc:
            self.sending_since = None
            self.failure = exc
        finally:
            self.inflight = None
            self.wakeup.set()

    async def run_writer(self) -> None:
        """Send queued messages until the client closes; flushes control messages on closing.

        Raises what a failed write raised (the connection is gone)."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self.inflight is not None:
                await asyncio.wait({self.inflight})
                continue
            if not (self.control or (self.pending and not self.closed)):
                if self.closed:
                    return
                self.wakeup.clear()
                self.parked = True
                await self.wakeup.wait()
                self.parked = False
                continue
            if self.control:
                await self._send(self.control.popleft())
                continue
            topic = next(iter(self.pending))
            for frame, seq in self.pending.pop(topic):
                await self._send(frame)
                self._sent(topic, seq)

    async def _send(self, frame: str) -> None:
        # No timer per frame (that would cost more than the write): the heartbeat checks
        # `sending_since` and cancels a writer stuck on one frame.
        if self.direct is not None:
            self.direct.flush()  # frames taken by the fast path go first
        self.sending_since = time.monotonic()
        await self.sender.send_text(frame)
        self.sending_since = None


class Hub:
    """Routes topic updates to subscribed clients; owned by the app's lifespan."""

    def __init__(
        self,
        snapshot: SnapshotProvider | None = None,
        *,
        max_topics_per_client: int = 200,
        history: int = 32,
        history_idle_seconds: float = 600.0,
        epoch: str | None = None,
    ) -> None:
        self.topics = snapshot if isinstance(snapshot, TopicRegistry) else TopicRegistry(snapshot)
        self.max_topics_per_client = max_topics_per_client
        self.history_length = history
        self.history_idle_seconds = history_idle_seconds
        self.epoch = epoch or uuid.uuid4().hex[:12]
        """Names this hub's seq numbering: a resume against another epoch gets a snapshot."""
        self.clients: set[Client] = set()
        self.subscribers: dict[str, set[Client]] = {}
        self.followed_version = 0
        """Changes whenever a topic gains its first subscriber or loses its last."""
        self.seq: dict[str, int] = {}
        self.history: dict[str, deque[Entry]] = {}
        self.left_at: dict[str, float] = {}
        self.watchers: list[Watcher] = []
        self.relay: Relay | None = None
        self.on_sent: SentHook | None = None
        self.dropped_clients = 0
        self.frames_written_directly = 0
        """Update frames written straight to a socket (the fast path), for tests and benches."""
        self.frames = FrameBatch()
        """The fast path's frames of this event-loop turn, one write per client at its end."""
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ publishing

    def publish(self, topic: str, data: Any) -> int:
        """Send `data` (the topic's whole new state) as the next update of `topic`, here and,
        through the relay, on every replica; returns the number of local clients reached."""
        reached = self.deliver(topic, data)
        if self.relay is not None:
            self.relay(topic, data)
        return reached

    def deliver(self, topic: str, data: Any) -> int:
        """Send an update to this process's subscribers only (relayed or derived updates)."""
        seq = self.seq.get(topic, 0) + 1
        self.seq[topic] = seq
        for watcher in self.watchers:
            try:
                watcher(topic, data)
            except Exception:  # a watcher's bug must not stop the others or the publisher
                log.exception("live watcher failed on %s", topic)
        clients = self.subscribers.get(topic)
        if not clients and not self._keeps_history(topic):
            self.history.pop(topic, None)
            return 0
        frame = encode({"type": "update", "topic": topic, "seq": seq, "data": data})
        self._remember(topic, frame, seq)
        if not clients:
            return 0
        reached = 0
        published = (seq, time.monotonic())
        wire = text_frame(frame.encode())
        observers: set[Observer] = set()
        direct = 0
        for client in list(clients):
            if client.write_now(wire):
                direct += 1
                if client.fanout is not None:
                    observers.add(client.fanout)
                continue
            if client.fanout is not None:
                client.published_at[topic] = published
            if client.offer(topic, frame, seq):
                reached += 1
            else:
                log.warning("dropping a client that fell %d topics behind", client.queue_limit)
                self.drop(client, reason=f"more than {client.queue_limit} topics pending")
        self.frames_written_directly += direct
        # The frames taken at once are reported and timed together once this turn's writes are
        # done: one observation per update (one per client would cost a third of a write).
        if direct and self.on_sent is not None:
            self.frames.after_writes(functools.partial(self.on_sent, topic, seq, direct))
        for observer in observers:
            self.frames.after_writes(functools.partial(_observe_since, observer, published[1]))
        return reached + direct

    def _keeps_history(self, topic: str) -> bool:
        left = self.left_at.get(topic)
        return left is not None and time.monotonic() - left < self.history_idle_seconds

    def _remember(self, topic: str, frame: str, seq: int) -> None:
        if self.history_length <= 0:
            return
        history = self.history.get(topic)
        if history is None:
            history = self.history[topic] = deque(maxlen=self.history_length)
        history.append((frame, seq))

    # ---------------------------------------------------------- subscribing

    def attach(self, client: Client) -> None:
        """Count a newly connected client (pings, idle checks, `client_count`)."""
        if client.on_sent is None:
            client.on_sent = self.on_sent
        self.clients.add(client)

    async def subscribe(
        self,
        client: Client,
        topics: Iterable[str],
        *,
        resume: Mapping[str, int] | None = None,
        epoch: str | None = None,
    ) -> None:
        """Subscribe to each topic and queue its snapshot — or, with `resume` (the last seq seen
        per topic, under this hub's `epoch`), the updates missed since; errors for bad topics."""
        resumable = resume if resume and epoch == self.epoch else {}
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
            followers = self.subscribers.get(topic)
            if followers is None:
                followers = self.subscribers[topic] = set()
                self.followed_version += 1
            followers.add(client)
            self.left_at.pop(topic, None)
            client.topics.add(topic)
            last = resumable.get(topic)
            if isinstance(last, int) and self._resume(client, topic, last):
                continue
            try:
                state = await self._snapshot(topic)
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
            if client.closed:
                return
            if topic in client.pending:  # a queued update is newer than the snapshot
                continue
            seq = self.seq.get(topic, 0)
            frame = encode(
                {"type": "snapshot", "topic": topic, "seq": seq, "epoch": self.epoch, "data": state}
            )
            if not client.offer(topic, frame, seq):
                self.drop(client, reason=f"more than {client.queue_limit} topics pending")
                return

    def _resume(self, client: Client, topic: str, last: int) -> bool:
        """Queue the updates after `last` if the history holds them all; False if it does not."""
        current = self.seq.get(topic)
        if current is None or last > current:
            return False
        if last == current:
            return True  # nothing missed
        missed = [entry for entry in self.history.get(topic, ()) if entry[1] > last]
        if not missed or missed[0][1] != last + 1:
            return False  # the history no longer reaches back: a snapshot instead
        if not client.offer_many(topic, missed):
            self.drop(client, reason=f"more than {client.queue_limit} topics pending")
        return True

    async def _snapshot(self, topic: str) -> Any:
        """Read a topic's state once for all the clients asking at the same moment."""
        future = self._inflight.get(topic)
        if future is None:
            future = asyncio.ensure_future(self.topics(topic))
            self._inflight[topic] = future
            future.add_done_callback(lambda _: self._inflight.pop(topic, None))
        return await asyncio.shield(future)

    def unsubscribe(self, client: Client, topics: Iterable[str]) -> None:
        """Stop sending these topics to the client."""
        for topic in topics:
            self._remove(client, topic)
            client.pending.pop(topic, None)

    def drop(self, client: Client, *, reason: str | None = None) -> None:
        """Forget a client (it closed, went idle or could not keep up); `reason` is sent last."""
        if client.closed:
            return
        if reason is not None:
            client.send_control({"type": "error", "message": f"closing: {reason}"})
        for topic in list(client.topics):
            self._remove(client, topic)
        client.pending.clear()
        client.closed = True
        client.wakeup.set()
        self.clients.discard(client)
        self.dropped_clients += 1

    def client_count(self) -> int:
        """Connected clients."""
        return len(self.clients)

    def _remove(self, client: Client, topic: str) -> None:
        client.topics.discard(topic)
        clients = self.subscribers.get(topic)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self.subscribers[topic]
                self.followed_version += 1
                self.left_at[topic] = time.monotonic()

    # ------------------------------------------------------------ heartbeat

    def beat(self, *, idle_seconds: float) -> None:
        """Ping every client; close those not heard from within `idle_seconds` and those stuck on
        one frame for longer than their send timeout."""
        now = time.monotonic()
        for client in list(self.clients):
            if client.stuck(now):
                self.drop(client)
                client.cancel()
            elif now - client.last_heard > idle_seconds:
                self.drop(client, reason=f"idle for more than {idle_seconds:g}s")
            else:
                client.send_control({"type": "ping"})
        for topic, left in list(self.left_at.items()):
            if now - left > self.history_idle_seconds:
                del self.left_at[topic]
                self.history.pop(topic, None)

    def start(self, *, ping_seconds: float, idle_seconds: float) -> None:
        """Run the heartbeat (one task for all clients) until `stop`."""

        async def run() -> None:
            while True:
                await asyncio.sleep(ping_seconds)
                self.beat(idle_seconds=idle_seconds)

        self._heartbeat = asyncio.create_task(run())

    async def stop(self) -> None:
        """Stop the heartbeat and close every client."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for client in list(self.clients):
            self.drop(client, reason="server shutting down")
