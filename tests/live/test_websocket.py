"""The `/ws` endpoint over a real socket: snapshots of stored values, clear errors for bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import websockets

from ioc.app import create_app
from ioc.config import Settings
from ioc.context import AppContext
from tests.support.factories import ingest_dossiers, make_dossier, make_instance
from tests.support.servers import serve_app


@pytest.fixture
async def ws_url(ctx: AppContext) -> AsyncIterator[str]:
    async with serve_app(create_app(ctx.settings)) as url:
        yield url.replace("http://", "ws://") + "/ws"


async def exchange(url: str, *messages: str | dict[str, Any], replies: int) -> list[dict]:
    async with websockets.connect(url) as ws:
        for message in messages:
            await ws.send(message if isinstance(message, str) else json.dumps(message))
        return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(replies)]


async def test_subscribe_answers_with_a_snapshot_of_each_topic(ws_url: str) -> None:
    topics = ["kpi:onestop.on_time_rate:75", "kpi:onestop.overdue_open:26068"]
    replies = await exchange(ws_url, {"type": "subscribe", "topics": topics}, replies=2)
    assert [(r["type"], r["topic"], r["seq"]) for r in replies] == [
        ("snapshot", topics[0], 0),
        ("snapshot", topics[1], 0),
    ]
    assert replies[0]["data"]["name_vi"] == "Tỷ lệ hồ sơ đúng hạn"
    assert replies[0]["data"]["value"] is None  # no dossiers yet: no rate
    assert replies[1]["data"]["value"] == 0


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"type": "dance"}, "unknown message type 'dance'"),
        ({"type": "subscribe", "topics": "kpi:x:75"}, "needs 'topics'"),
        ({"type": "subscribe", "topics": ["kpi:no.such_kpi:75"]}, "unknown KPI 'no.such_kpi'"),
        ({"type": "subscribe", "topics": ["kpi:onestop.on_time_rate:00000"]}, "unknown unit"),
        ({"type": "subscribe", "topics": ["weather"]}, "unknown topic 'weather'"),
        ("x" * 70_000, "larger than"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "unknown-type",
        "topics-not-list",
        "unknown-kpi",
        "unknown-unit",
        "unknown-topic",
        "oversized",
    ],
)
async def test_bad_messages_get_an_error_and_the_connection_stays_usable(
    ws_url: str, message: str | dict, expected: str
) -> None:
    error, snapshot = await exchange(
        ws_url,
        message,
        {"type": "subscribe", "topics": ["kpi:onestop.overdue_open:75"]},
        replies=2,
    )
    assert error["type"] == "error" and expected in error["message"]
    assert snapshot["type"] == "snapshot"


@contextlib.asynccontextmanager
async def running(settings: Settings, **overrides: Any) -> AsyncIterator[tuple[str, AppContext]]:
    """The service on a real port; yields its /ws URL and its context."""
    app = create_app(settings.model_copy(update=overrides))
    async with serve_app(app) as url:
        yield url.replace("http://", "ws://") + "/ws", app.state.ctx


async def receive(ws: Any, *, kind: str, topic: str | None = None) -> dict[str, Any]:
    """The next message of `kind` (about `topic`), skipping pings and other topics."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["type"] == kind and (topic is None or message.get("topic") == topic):
            return message


async def ingest_backlog(service: AppContext, count: int) -> None:
    """Open dossiers stored as a poll stores them, then published."""
    instance_id = await make_instance(service)
    now = service.clock()
    records = [
        make_dossier(
            received_at=now - timedelta(hours=1),
            due_at=now + timedelta(days=3),
            source_updated_at=now - timedelta(hours=1),
        )
        for _ in range(count)
    ]
    await ingest_dossiers(service, records, instance_id=instance_id)


def tile_of(layout: dict[str, Any], kpi: str, visualisation: str) -> dict[str, Any]:
    return next(
        t for t in layout["tiles"] if t["kpi"] == kpi and t["visualisation"] == visualisation
    )


async def test_a_layout_topic_delivers_every_tile_and_redraws_after_new_data(
    settings: Settings, ctx: AppContext
) -> None:
    async with running(settings) as (url, service), websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "topics": ["layout:default"]}))
        snapshot = await receive(ws, kind="snapshot")
        assert snapshot["data"]["unit_name"] == "Đồng Nai"
        assert len(snapshot["data"]["tiles"]) == 11
        assert tile_of(snapshot["data"], "onestop.backlog", "sparkline")["data"]["value"] == 0
        await ingest_backlog(service, 3)
        update = await receive(ws, kind="update", topic="layout:default")
    assert update["seq"] == snapshot["seq"] + 1
    assert tile_of(update["data"], "onestop.backlog", "sparkline")["data"]["value"] == 3


async def test_a_client_resuming_after_a_reconnect_gets_the_updates_it_missed(
    settings: Settings, ctx: AppContext
) -> None:
    topic = "kpi:onestop.backlog:75"
    async with running(settings) as (url, service):
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
            snapshot = await receive(ws, kind="snapshot")
        await ingest_backlog(service, 1)
        await ingest_backlog(service, 1)
        async with websockets.connect(url) as ws:
            resume = {topic: snapshot["seq"]}
            await ws.send(
                json.dumps(
                    {
                        "type": "subscribe",
                        "topics": [topic],
                        "resume": resume,
                        "epoch": snapshot["epoch"],
                    }
                )
            )
            first = await receive(ws, kind="update")
            second = await receive(ws, kind="update")
    assert [(m["seq"], m["data"]["value"]) for m in (first, second)] == [
        (snapshot["seq"] + 1, 1),
        (snapshot["seq"] + 2, 2),
    ]


async def test_a_silent_client_is_pinged_then_closed_with_an_idle_error(
    settings: Settings, ctx: AppContext
) -> None:
    async with (
        running(settings, ws_ping_seconds=0.05, ws_idle_seconds=0.3) as (url, service),
        websockets.connect(url) as ws,
    ):
        ping = await receive(ws, kind="ping")
        error = await receive(ws, kind="error")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ping == {"type": "ping"}
    assert "idle" in error["message"]
    assert service.hub.client_count() == 0


async def test_a_client_that_answers_pings_stays_connected(
    settings: Settings, ctx: AppContext
) -> None:
    async with (
        running(settings, ws_ping_seconds=0.05, ws_idle_seconds=0.3) as (url, service),
        websockets.connect(url) as ws,
    ):
        deadline = asyncio.get_running_loop().time() + 0.8
        while asyncio.get_running_loop().time() < deadline:
            await receive(ws, kind="ping")
            await ws.send(json.dumps({"type": "pong"}))
        assert service.hub.client_count() == 1
