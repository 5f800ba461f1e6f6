"""`/readyz` and `/metrics` over HTTP."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from ioc.app import create_app
from ioc.context import AppContext


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus samples by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_readyz_is_200_when_the_database_is_migrated_and_the_scheduler_off(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["failed"]) == ("ready", [])
    assert body["checks"]["scheduler"]["detail"].startswith("disabled")
    assert body["checks"]["migrations"]["ok"] and body["checks"]["database"]["ok"]


async def test_readyz_is_503_naming_the_scheduler_when_it_stopped(ctx: AppContext) -> None:
    app = create_app(ctx.settings.model_copy(update={"scheduler_enabled": True}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as http:
            assert (await http.get("/readyz")).status_code == 200
            app.state.ctx.scheduler.shutdown(wait=False)
            response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["scheduler"]
    assert response.json()["checks"]["scheduler"]["detail"] == "enabled but not running"


async def test_metrics_label_http_latency_by_route_template_not_raw_path(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/api/v1/connectors/424242")).status_code == 404
    assert (await http.get("/api/v1/connectors/434343")).status_code == 404
    text = (await http.get("/metrics")).text
    found = samples(text)
    key = (
        "ioc_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/v1/connectors/{instance_id}"), ("status", "404")),
    )
    assert found[key] == 2
    assert "424242" not in text


async def test_each_app_counts_its_own_requests_in_one_process(
    ctx: AppContext, app: FastAPI, http: httpx.AsyncClient
) -> None:
    other = create_app(ctx.settings)  # a second app must not clash with the first's metrics
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            for _ in range(3):
                await client.get("/healthz")
            await http.get("/healthz")
            theirs = samples((await client.get("/metrics")).text)
    ours = samples((await http.get("/metrics")).text)
    key = (
        "ioc_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    assert (theirs[key], ours[key]) == (3, 1)
