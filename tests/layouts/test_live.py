"""A wall following a layout redraws when the layout itself is edited; the layouts followed follow
the subscriptions."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import httpx
import websockets

from ioc.app import create_app
from ioc.context import AppContext
from ioc.layouts.live import LayoutFeed
from ioc.live.hub import Client, Hub
from tests.live.test_hub import RecordingSender
from tests.support.servers import serve_app


async def receive(ws: Any, *, kind: str, topic: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["type"] == kind and message.get("topic") == topic:
            return message


async def test_editing_a_followed_layout_sends_its_new_tiles(ctx: AppContext) -> None:
    app = create_app(ctx.settings)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url) as http,
        websockets.connect(url.replace("http://", "ws://") + "/ws") as ws,
    ):
        await ws.send(json.dumps({"type": "subscribe", "topics": ["layout:default", "layouts"]}))
        before = await receive(ws, kind="snapshot", topic="layout:default")
        edited = await http.patch(
            "/api/v1/layouts/default",
            json={
                "name_vi": "Một cửa",
                "columns": 1,
                "rows": 1,
                "tiles": [{"visualisation": "number", "kpi": "onestop.backlog", "x": 0, "y": 0}],
            },
        )
        assert edited.status_code == 200
        announced = await receive(ws, kind="update", topic="layouts")
        after = await receive(ws, kind="update", topic="layout:default")
    assert len(before["data"]["tiles"]) == 11
    assert announced["data"]["changed"] == "default"
    assert (after["data"]["name_vi"], len(after["data"]["tiles"])) == ("Một cửa", 1)


async def test_the_layouts_followed_follow_the_subscriptions_as_they_change() -> None:
    async def state(topic: str) -> dict[str, Any]:
        return {"topic": topic}

    hub = Hub(state)
    feed = LayoutFeed(SimpleNamespace(hub=hub))  # type: ignore[arg-type]  # it reads the hub only
    client = Client(RecordingSender(), queue_limit=10)
    hub.attach(client)
    assert feed.followed() == set()
    await hub.subscribe(client, ["layout:default", "kpi:onestop.backlog:75"])
    assert feed.followed() == {"default"}
    await hub.subscribe(client, ["layout:health"])
    assert feed.followed() == {"default", "health"}
    hub.unsubscribe(client, ["layout:default"])
    assert feed.followed() == {"health"}
