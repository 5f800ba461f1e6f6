"""The hub's fast path over real sockets: one frame encoded once and written straight to idle
subscribers, and the ordinary path wherever that would not be exactly what uvicorn writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.frames import Frame, Opcode

from ioc.app import create_app
from ioc.context import AppContext
from ioc.live.api import server_options
from ioc.live.frames import text_frame
from ioc.live.hub import Client, Hub
from tests.support.servers import serve_app

TOPIC = "kpi:onestop.backlog:75"


@pytest.mark.parametrize(
    "size",
    [0, 125, 126, 65_535, 65_536, 70_000],
    ids=["empty", "125", "126", "64k-1", "64k", "70k"],
)
def test_a_text_frame_is_what_websockets_would_write_for_a_server(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


class Live:
    """The app served on a real port, with its hub and its `/ws` URL."""

    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.url = url.replace("http://", "ws://") + "/ws"
        self.hub: Hub = app.state.ctx.hub

    async def follow(self, **options: Any) -> Any:
        """A connected, subscribed client (its snapshot read) and the hub's side of it."""
        ws = await websockets.connect(self.url, **options)
        await ws.send(json.dumps({"type": "subscribe", "topics": [TOPIC]}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
        return ws

    async def follow_directly(self) -> tuple[Any, Client]:
        """An uncompressed client (one the fast path writes to) and the hub's side of it."""
        known = set(self.hub.clients)
        ws = await self.follow(compression=None)
        client = self.client_of(known)
        assert client.direct is not None
        return ws, client

    def client_of(self, known: set[Client]) -> Client:
        """The one hub client not in `known`."""
        (client,) = self.hub.clients - known
        return client


@pytest.fixture
async def live(ctx: AppContext) -> AsyncIterator[Live]:
    app = create_app(ctx.settings)
    async with serve_app(app) as url:
        yield Live(app, url)


async def updates(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(count)]


async def test_an_uncompressed_client_gets_updates_written_straight_to_its_socket(
    live: Live,
) -> None:
    ws, _ = await live.follow_directly()
    try:
        for n in range(3):
            assert live.hub.publish(TOPIC, {"n": n}) == 1
        assert live.hub.frames_written_directly == 3  # during publish, not by the writer task
        received = await updates(ws, 3)
        assert [(m["type"], m["seq"], m["data"]) for m in received] == [
            ("update", 1, {"n": 0}),
            ("update", 2, {"n": 1}),
            ("update", 3, {"n": 2}),
        ]
    finally:
        await ws.close()


class CountingTransport:
    """A transport that counts the writes it passes on."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def test_frames_of_one_event_loop_turn_reach_a_socket_in_one_write(live: Live) -> None:
    ws, client = await live.follow_directly()
    try:
        counting = client.direct.transport = CountingTransport(client.direct.transport)
        for n in range(3):  # as three topics moving in one ingest batch: one turn, no await
            live.hub.publish(TOPIC, {"n": n})
        assert counting.writes == []  # taken, written when the turn ends
        received = await updates(ws, 3)
        assert [(m["seq"], m["data"]) for m in received] == [
            (1, {"n": 0}),
            (2, {"n": 1}),
            (3, {"n": 2}),
        ]
        assert len(counting.writes) == 1 and live.hub.frames_written_directly == 3
        live.hub.publish(TOPIC, {"n": 3})  # a later turn: a write of its own
        await updates(ws, 1)
        assert len(counting.writes) == 2
    finally:
        await ws.close()


async def test_a_client_negotiating_permessage_deflate_gets_correct_frames_the_ordinary_way(
    live: Live,
) -> None:
    plain = await live.follow(compression=None)
    plain_client = live.client_of(set())
    compressed = await live.follow(compression="deflate")
    try:
        assert compressed.protocol.extensions  # deflate was negotiated
        compressed_client = live.client_of({plain_client})
        assert compressed_client.direct is None
        for n in range(3):
            assert live.hub.publish(TOPIC, {"n": n, "text": "hồ sơ " * 50}) == 2
        assert live.hub.frames_written_directly == 3  # the uncompressed client's only
        for ws in (plain, compressed):
            received = await updates(ws, 3)
            assert [m["seq"] for m in received] == [1, 2, 3]
            assert [m["data"]["n"] for m in received] == [0, 1, 2]
            assert received[0]["data"]["text"] == "hồ sơ " * 50
    finally:
        await plain.close()
        await compressed.close()


async def test_a_slow_client_gets_only_the_latest_values_then_direct_writes_again(
    live: Live,
) -> None:
    # The client does not read (max_queue=1) and updates of 64 kB are published without yielding
    # until the kernel's buffers are full and uvicorn pauses the transport: from then on the fast
    # path refuses and the hub's queue conflates.
    slow = await live.follow(compression=None, max_queue=1)
    slow_client = live.client_of(set())
    blob = "x" * 65_536
    published = 0
    while not slow_client.pending and published < 5_000:
        published += 1
        live.hub.publish(TOPIC, {"n": published, "blob": blob})
    assert slow_client.pending, "the socket never filled up"
    assert slow_client.inflight is not None  # one write waits for the socket to drain
    for _ in range(20):  # these replace one another in the queue
        published += 1
        live.hub.publish(TOPIC, {"n": published, "blob": blob})
    assert live.hub.frames_written_directly < published - 20
    try:
        received: list[dict[str, Any]] = []
        while not received or received[-1]["seq"] < published:
            received.append(json.loads(await asyncio.wait_for(slow.recv(), 10)))
        seqs = [m["seq"] for m in received]
        assert seqs == sorted(set(seqs))  # in order, no repeats
        assert len(received) < published  # older values were replaced, not queued
        assert received[-1]["data"]["n"] == published
        # Once drained, the client is written straight to again.
        direct_before = live.hub.frames_written_directly
        for _ in range(50):
            if slow_client.parked:
                break
            await asyncio.sleep(0.02)
        live.hub.publish(TOPIC, {"n": 0})
        assert live.hub.frames_written_directly == direct_before + 1
        (last,) = await updates(slow, 1)
        assert (last["seq"], last["data"]) == (published + 1, {"n": 0})
    finally:
        await slow.close()


async def test_frames_held_for_a_connection_closed_before_the_turn_ends_are_not_written(
    live: Live,
) -> None:
    ws, client = await live.follow_directly()
    try:
        counting = client.direct.transport = CountingTransport(client.direct.transport)
        live.hub.publish(TOPIC, {"n": 1})  # taken, to be written when the turn ends
        counting.close()  # closed later in the same turn: nothing may follow the close
        await asyncio.sleep(0.05)
        assert counting.writes == []
        assert live.hub.frames_written_directly == 1
    finally:
        await asyncio.wait_for(ws.close(), 5)


async def test_a_client_closing_during_publishing_is_skipped_safely(live: Live) -> None:
    staying = await live.follow(compression=None)
    staying_client = live.client_of(set())
    leaving = await live.follow(compression=None)
    leaving_client = live.client_of({staying_client})
    assert leaving_client.direct is not None
    await leaving.close()  # the close handshake is over: the server has replied and is closing
    assert leaving.close_code == 1000
    assert not leaving_client.direct.write(text_frame(b"{}"))
    for n in range(5):  # the endpoint may not have seen the disconnect yet: no error either way
        live.hub.publish(TOPIC, {"n": n})
    received = await updates(staying, 5)
    assert [m["data"]["n"] for m in received] == [0, 1, 2, 3, 4]
    for _ in range(100):
        if live.hub.client_count() == 1:
            break
        await asyncio.sleep(0.02)
    assert live.hub.clients == {staying_client}
    await staying.close()


async def test_a_hub_ping_queued_before_an_update_arrives_before_it(live: Live) -> None:
    ws = await live.follow(compression=None)
    try:
        live.hub.beat(idle_seconds=60)  # queues a ping for the writer task
        live.hub.publish(TOPIC, {"n": 1})  # must not overtake it
        ping, update = await updates(ws, 2)
        assert ping["type"] == "ping"
        assert (update["type"], update["data"]) == ("update", {"n": 1})
        assert live.hub.frames_written_directly == 0
    finally:
        await ws.close()


async def test_an_update_taken_in_a_turn_is_written_before_a_ping_queued_after_it(
    live: Live,
) -> None:
    ws = await live.follow(compression=None)
    try:
        live.hub.publish(TOPIC, {"n": 1})  # taken for the end of the turn
        live.hub.beat(idle_seconds=60)  # the writer task's ping flushes it first anyway
        update, ping = await updates(ws, 2)
        assert (update["type"], update["data"]) == ("update", {"n": 1})
        assert ping["type"] == "ping"
    finally:
        await ws.close()


class SendTap:
    """A middleware that wraps `send` to see the WebSocket messages going out."""

    def __init__(self, app: ASGIApp, *, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tapped(message: Message) -> None:
            if message["type"] == "websocket.send":
                self.seen.append(message["text"])
            await send(message)

        await self.app(scope, receive, tapped)


@pytest.mark.parametrize("server", ["middleware-wrapping-send", "legacy-websockets-impl"])
@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")
async def test_updates_go_the_ordinary_way_where_the_fast_path_is_not_provably_safe(
    ctx: AppContext, server: str
) -> None:
    seen: list[str] = []
    app = create_app(ctx.settings)
    options: dict[str, Any] = {}
    if server == "middleware-wrapping-send":
        app.add_middleware(SendTap, seen=seen)
    else:
        options["ws"] = "websockets"  # uvicorn's older implementation: not one the hub knows
    async with serve_app(app, **options) as url:
        live = Live(app, url)
        ws = await live.follow(compression=None)
        try:
            assert live.client_of(set()).direct is None
            for n in range(3):
                assert live.hub.publish(TOPIC, {"n": n}) == 1
            received = await updates(ws, 3)
            assert [(m["seq"], m["data"]) for m in received] == [
                (1, {"n": 0}),
                (2, {"n": 1}),
                (3, {"n": 2}),
            ]
            assert live.hub.frames_written_directly == 0
        finally:
            await ws.close()
    if server == "middleware-wrapping-send":
        assert [json.loads(text)["type"] for text in seen] == [
            "snapshot",
            "update",
            "update",
            "update",
        ]


@pytest.mark.parametrize("compression", [False, True], ids=["default", "IOC_WS_COMPRESSION"])
async def test_a_browser_offering_deflate_gets_the_fast_path_unless_compression_is_on(
    ctx: AppContext, compression: bool
) -> None:
    settings = ctx.settings.model_copy(update={"ws_compression": compression})
    app = create_app(settings)
    async with serve_app(app, **server_options(settings)) as url:
        live = Live(app, url)
        ws = await live.follow(compression="deflate")  # as browsers do
        try:
            assert bool(ws.protocol.extensions) is compression
            assert live.hub.publish(TOPIC, {"n": 1}) == 1
            assert [m["data"] for m in await updates(ws, 1)] == [{"n": 1}]
            assert live.hub.frames_written_directly == (0 if compression else 1)
        finally:
            await ws.close()
