"""The soak's WebSocket load client speaks RFC 6455 to a real server: the `websockets`
library's, and the IOC's own `/ws`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bench.ws_client import HandshakeFailed, connect
from ioc.app import create_app
from ioc.context import AppContext
from tests.support.servers import serve_app

SIZES = (5, 200, 70_000)
"""Payloads whose lengths take each of the three length encodings (7 bits, 16, 64)."""


@pytest.fixture
async def library_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A `websockets` server that sends one text message of each size, pings and waits for the
    pong, echoes the client's next message, then closes; yields its port and what it heard."""
    heard: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        for size in SIZES:
            await ws.send("x" * size)
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        heard.append("pong")
        heard.append(str(await ws.recv()))  # a masked frame: the server rejects any other
        await ws.send(str(heard))
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield port, heard


async def test_messages_of_every_length_arrive_pings_are_answered_and_close_is_seen(
    library_server: tuple[int, list[str]],
) -> None:
    port, heard = library_server
    received: list[bytes] = []
    client = await asyncio.wait_for(
        connect("127.0.0.1", port, "/", lambda message, _: received.append(message)), 5
    )
    client.send_text("hello ✓")
    await asyncio.wait_for(client.closed, 5)
    assert [len(m) for m in received[:3]] == list(SIZES)
    assert heard == ["pong", "hello ✓"]
    assert received[3] == str(heard).encode()  # sent after the server heard both


async def test_a_server_that_does_not_switch_protocols_fails_the_connection(
    ctx: AppContext,
) -> None:
    async with serve_app(create_app(ctx.settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(HandshakeFailed, match="403"):
            await connect("127.0.0.1", port, "/no-such-socket", lambda *_: None)


async def test_subscribing_to_the_ioc_gets_a_snapshot_with_its_receipt_time(
    ctx: AppContext,
) -> None:
    messages: list[tuple[dict, float]] = []
    got = asyncio.Event()

    def on_message(message: bytes, received: float) -> None:
        messages.append((json.loads(message), received))
        got.set()

    async with serve_app(create_app(ctx.settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        before = time.time()
        client = await asyncio.wait_for(connect("127.0.0.1", port, "/ws", on_message), 5)
        topic = "kpi:onestop.overdue_open:75"
        client.send_text(json.dumps({"type": "subscribe", "topics": [topic]}))
        await asyncio.wait_for(got.wait(), 5)
        after = time.time()
        client.close()
    (snapshot, received), *_ = messages
    assert (snapshot["type"], snapshot["topic"], snapshot["data"]["value"]) == (
        "snapshot",
        topic,
        0,
    )
    assert before <= received <= after


def test_it_runs_on_uvloop_as_the_soak_does() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[bytes]:
        async def handler(ws: ServerConnection) -> None:
            await ws.send("on uvloop")
            await ws.close()

        received: list[bytes] = []
        async with serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            client = await asyncio.wait_for(
                connect("127.0.0.1", port, "/", lambda m, _: received.append(m)), 5
            )
            await asyncio.wait_for(client.closed, 5)
        return received

    assert uvloop.run(scenario()) == [b"on uvloop"]
