"""The `/ws` endpoint: subscribe (with resume), unsubscribe, snapshots, updates, heartbeats and
errors."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ioc.auth.deps import accept_websocket
from ioc.config import Settings
from ioc.context import AppContext
from ioc.live.frames import direct_writer
from ioc.live.hub import Client, Hub

router = APIRouter(tags=["live"])


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn settings `/ws` depends on: permessage-deflate only if `IOC_WS_COMPRESSION`
    (a compressed client misses the shared-frame fast path of `ioc.live.frames`)."""
    return {"ws_per_message_deflate": settings.ws_compression}


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
        websocket,
        queue_limit=ctx.settings.ws_client_queue,
        send_timeout=ctx.settings.ws_send_timeout,
        fanout=ctx.metrics.ws_fanout,
        direct=direct_writer(websocket, hub.frames),
    )
    hub.attach(client)
    writer = client.task = asyncio.create_task(client.run_writer())
    try:
        while not client.closed:
            receive = asyncio.create_task(websocket.receive())
            done, _ = await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:  # the writer failed, or the hub closed the client
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            client.heard()
            if message.get("text") is None:
                client.send_control(
                    {"type": "error", "message": "binary frames are not supported; send JSON text"}
                )
                continue
            await handle_message(hub, client, message["text"])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        ctx.metrics.ws_clients.dec()
        hub.drop(client)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(2):
                await writer  # flushes the closing reason, if any
        client.cancel()
        with contextlib.suppress(Exception):
            await websocket.close()


def _error(client: Client, message: str) -> None:
    client.send_control({"type": "error", "message": message})


async def handle_message(hub: Hub, client: Client, raw: str) -> None:
    """Act on one client message, answering bad ones with an `error` message."""
    if len(raw) > MAX_MESSAGE_BYTES or len(raw.encode()) > MAX_MESSAGE_BYTES:
        _error(client, f"message larger than {MAX_MESSAGE_BYTES} bytes")
        return
    try:
        message: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        _error(client, "message is not valid JSON")
        return
    if not isinstance(message, dict):
        _error(client, "message must be a JSON object")
        return
    kind = message.get("type")
    if kind in ("subscribe", "unsubscribe"):
        topics = message.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            _error(client, f"{kind} needs 'topics': a list of topic names")
            return
        if kind == "unsubscribe":
            hub.unsubscribe(client, topics)
            return
        resume = message.get("resume")
        if resume is not None and not (
            isinstance(resume, dict)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in resume.values())
        ):
            _error(client, "'resume' must map topic names to the last seq seen (integers)")
            return
        epoch = message.get("epoch")
        await hub.subscribe(client, topics, resume=resume, epoch=epoch)
    elif kind == "pong":
        return
    elif kind == "ping":
        client.send_control({"type": "pong"})
    else:
        _error(
            client, f"unknown message type {kind!r}; expected subscribe, unsubscribe, ping, pong"
        )
