"""The `/ws` handshake: a token by header, query parameter or first message; refusals close."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import websockets
from fastapi import FastAPI

from ioc.auth.permissions import Role
from ioc.auth.service import revoke_token
from tests.auth.conftest import MakeToken, bearer
from tests.support.servers import serve_app

TOPIC = "kpi:onestop.on_time_rate:75"
SUBSCRIBE = json.dumps({"type": "subscribe", "topics": [TOPIC]})


@pytest.fixture
async def ws_url(app: FastAPI) -> AsyncIterator[str]:
    async with serve_app(app) as url:
        yield url.replace("http://", "ws://") + "/ws"


async def receive(ws: websockets.ClientConnection) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_a_token_in_the_authorization_header_opens_the_live_topics(
    ws_url: str, make_token: MakeToken
) -> None:
    headers = bearer(await make_token(Role.VIEWER))
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(SUBSCRIBE)
        assert (await receive(ws))["type"] == "snapshot"


async def test_a_token_in_the_query_string_opens_the_live_topics(
    ws_url: str, make_token: MakeToken
) -> None:
    token = await make_token(Role.VIEWER)
    async with websockets.connect(f"{ws_url}?token={token}") as ws:
        await ws.send(SUBSCRIBE)
        assert (await receive(ws))["type"] == "snapshot"


async def test_a_browser_authenticates_with_its_first_message(
    ws_url: str, make_token: MakeToken
) -> None:
    token = await make_token(Role.VIEWER)
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert await receive(ws) == {"type": "auth", "ok": True}
        await ws.send(SUBSCRIBE)
        assert (await receive(ws))["topic"] == TOPIC


@pytest.mark.parametrize(
    "first_message",
    [SUBSCRIBE, json.dumps({"type": "auth", "token": "ioc_wrong"}), "{not json"],
    ids=["no-auth-message", "unknown-token", "garbage"],
)
async def test_a_client_without_a_valid_token_gets_an_error_and_is_closed(
    ws_url: str, first_message: str
) -> None:
    async with websockets.connect(ws_url) as ws:
        await ws.send(first_message)
        error = await receive(ws)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert error["type"] == "error" and "token" in error["message"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_revoked_token_in_the_query_string_is_refused(
    ws_url: str, make_token: MakeToken, app: FastAPI
) -> None:
    token = await make_token(Role.VIEWER, name="stolen")
    async with app.state.ctx.sessionmaker() as session, session.begin():
        await revoke_token(session, "stolen", now=datetime.now(UTC))
    async with websockets.connect(f"{ws_url}?token={token}") as ws:
        error = await receive(ws)
    assert error == {"type": "error", "message": "unknown, revoked or expired token"}
