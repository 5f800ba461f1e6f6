"""The `/ws` endpoint: subscribe, unsubscribe, snapshots, updates, pings and errors."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ioc.auth.deps import accept_websocket
from ioc.context import AppContext
from ioc.live.hub import Client, Hub

router = APIRouter(tags=["live"])

MAX_MESSAGE_BYTES = 64 * 1024


@router.websocket("/ws")
async def live(websocket: WebSocket) -> None:
    """One wall display (or any client) following topics."""
    ctx: AppContext = websocket.app.state.ctx
    hub = ctx.hub
    assert hub is not None
    if await accept_websocket(websocket) is None:  # refused: closed with the reason
        return
    ctx.metrics.ws_clients.inc()
    client = Client(
        websocket, queue_limit=ctx.settings.ws_client_queue, fanout=ctx.metrics.ws_fanout
    )
    writer = asyncio.create_task(client.run_writer())
    pinger = asyncio.create_task(_ping(client, ctx.settings.ws_ping_seconds))
    try:
        while not client.closed:
            receive = asyncio.create_task(websocket.receive())
            done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:  # the writer failed or the hub dropped the client
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is None:
                client.send_control(
                    {"type": "error", "message": "binary frames are not supported; send JSON text"}
                )
                continue
            await handle_message(hub, client, message["text"])
    except WebSocketDisconnect:
        pass
    finally:
        ctx.metrics.ws_clients.dec()
        hub.drop(client)
        for task in (writer, pinger):
            task.cancel()
        for task in (writer, pinger):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await websocket.close()


async def handle_message(hub: Hub, client: Client, raw: str) -> None:
    """Act on one client message, answering bad ones with an `error` message."""
    if len(raw.encode()) > MAX_MESSAGE_BYTES:
        client.send_control(
            {"type": "error", "message": f"message larger than {MAX_MESSAGE_BYTES} bytes"}
        )
        return
    try:
        message: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        client.send_control({"type": "error", "message": "message is not valid JSON"})
        return
    if not isinstance(message, dict):
        client.send_control({"type": "error", "message": "message must be a JSON object"})
        return
    kind = message.get("type")
    if kind in ("subscribe", "unsubscribe"):
        topics = message.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            client.send_control(
                {"type": "error", "message": f"{kind} needs 'topics': a list of topic names"}
            )
            return
        if kind == "subscribe":
            await hub.subscribe(client, topics)
        else:
            hub.unsubscribe(client, topics)
    elif kind == "pong":
        return
    elif kind == "ping":
        client.send_control({"type": "pong"})
    else:
        client.send_control(
            {
                "type": "error",
                "message": f"unknown message type {kind!r}; expected subscribe, unsubscribe, ping",
            }
        )


async def _ping(client: Client, every: float) -> None:
    while not client.closed:
        await asyncio.sleep(every)
        client.send_control({"type": "ping"})
