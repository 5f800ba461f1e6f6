"""The `/ws` endpoint over a real socket: snapshots of stored values, clear errors for bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from ioc.app import create_app
from ioc.context import AppContext
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
