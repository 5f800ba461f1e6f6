"""What the service counts: polls, records, KPI recomputes, WebSocket clients and delivery."""

from __future__ import annotations

import asyncio
import json

import websockets
from prometheus_client import generate_latest

from ioc.app import create_app
from ioc.context import AppContext
from ioc.scheduler.runner import poll_instance
from tests.ops.test_api import samples
from tests.support.factories import make_instance
from tests.support.servers import serve_app
from tests.support.upstream import running_upstream


async def test_a_poll_counts_its_outcome_duration_stored_and_rejected_records(
    ctx: AppContext,
) -> None:
    async for upstream in running_upstream():
        instance_id = await make_instance(
            ctx, name="dn", config={"base_url": upstream.url, "page_size": 50}
        )
        await upstream.set_faults(malformed=2)
        outcome = await poll_instance(ctx, instance_id, force=True)
        await upstream.set_faults(mode="rate_limited", retry_after_seconds=1)
        await poll_instance(ctx, instance_id, force=True)
    found = samples(generate_latest(ctx.metrics.registry).decode())
    labels = (("connector", "dn"), ("kind", "onestop"))
    assert outcome.ok and outcome.stored > 0 and outcome.rejected == 2
    assert found[("ioc_records_stored_total", labels)] == outcome.stored
    assert found[("ioc_records_rejected_total", labels)] == 2
    assert found[("ioc_polls_total", (*labels, ("outcome", "ok")))] == 1
    assert found[("ioc_polls_total", (*labels, ("outcome", "rate_limited")))] == 1
    assert found[("ioc_poll_duration_seconds_count", (*labels, ("outcome", "ok")))] == 1
    # One recompute per ingest transaction, which stores the pages ready (one or several).
    transactions = found[("ioc_ingest_batch_pages_count", ())]
    assert 1 <= transactions <= outcome.pages
    assert found[("ioc_ingest_batch_pages_sum", ())] == outcome.pages
    assert found[("ioc_kpi_recompute_seconds_count", (("trigger", "ingest"),))] == transactions
    assert found[("ioc_ingest_stage_seconds_count", (("stage", "fetch"),))] >= outcome.pages
    for stage in ("begin", "ingest", "kpi", "incidents", "cursor", "commit", "publish"):
        assert found[("ioc_ingest_stage_seconds_count", (("stage", stage),))] == transactions
    assert found[("ioc_ingest_kpi_cells_total", ())] > 0


async def test_websocket_clients_are_gauged_and_each_delivery_timed(ctx: AppContext) -> None:
    app = create_app(ctx.settings)
    topic = "kpi:onestop.backlog:75"
    async with serve_app(app) as url:
        service: AppContext = app.state.ctx
        registry = service.metrics.registry

        def clients() -> float | None:
            return registry.get_sample_value("ioc_ws_clients")

        async with websockets.connect(url.replace("http", "ws") + "/ws") as ws:
            await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
            assert clients() == 1
            assert service.hub is not None and service.hub.publish(topic, {"value": 1}) == 1
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "update"
            await asyncio.sleep(0)  # the writer observes after its send returns
        for _ in range(100):
            if clients() == 0:
                break
            await asyncio.sleep(0.02)
        found = samples(generate_latest(service.metrics.registry).decode())
    assert clients() == 0
    assert found[("ioc_ws_fanout_latency_seconds_count", ())] == 1
