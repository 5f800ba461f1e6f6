"""Managing connector instances over REST: create, update, enable/disable, test, run, history."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from connectors.onestop.simulator import create_app as create_simulator
from ioc.app import create_app
from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance
from tests.support.servers import serve_app
from tests.support.upstream import START


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    app = create_simulator(seed=3, rate_per_day=30, history_days=5, start=START, speed=0)
    async with serve_app(app) as url:
        yield url


@pytest.fixture
async def http(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            yield client


async def create(http: httpx.AsyncClient, **overrides: object) -> httpx.Response:
    body = {"name": "motcua", "kind": "onestop", "config": {"base_url": "http://127.0.0.1:9"}}
    return await http.post("/api/v1/connectors", json=body | overrides)


async def test_create_validates_the_config_against_the_connectors_schema(
    http: httpx.AsyncClient,
) -> None:
    bad = await create(http, config={"base_url": "ftp://x", "page_size": 0})
    assert bad.status_code == 422
    assert "base_url" in bad.json()["detail"] and "page_size" in bad.json()["detail"]
    unknown = await create(http, kind="weather")
    assert (
        unknown.status_code == 422 and "no connector of kind 'weather'" in unknown.json()["detail"]
    )
    created = await create(http)
    assert created.status_code == 201
    again = await create(http)
    assert again.status_code == 422 and "already exists" in again.json()["detail"]


async def test_secrets_are_write_only_and_kept_when_an_update_omits_them(
    http: httpx.AsyncClient, ctx: AppContext
) -> None:
    created = (
        await create(http, config={"base_url": "http://127.0.0.1:9", "api_key": "s3cret"})
    ).json()
    assert created["config"]["api_key"] == "********"
    listed = (await http.get("/api/v1/connectors")).text
    assert "s3cret" not in listed
    updated = await http.patch(
        f"/api/v1/connectors/{created['id']}",
        json={"config": {"base_url": "http://127.0.0.1:10", "api_key": "********"}},
    )
    assert updated.status_code == 200
    assert updated.json()["config"] == {"base_url": "http://127.0.0.1:10", "api_key": "********"}
    async with ctx.sessionmaker() as session:
        stored = await session.scalar(select(ConnectorInstance.config))
    assert stored == {"base_url": "http://127.0.0.1:10", "api_key": "s3cret"}


async def test_disable_and_enable_switch_health_and_polling(http: httpx.AsyncClient) -> None:
    instance = (await create(http)).json()
    disabled = (await http.post(f"/api/v1/connectors/{instance['id']}/disable")).json()
    assert (disabled["enabled"], disabled["health"], disabled["stale"]) == (
        False,
        "disabled",
        False,
    )
    run = await http.post(f"/api/v1/connectors/{instance['id']}/run")
    assert run.status_code == 409
    enabled = (await http.post(f"/api/v1/connectors/{instance['id']}/enable")).json()
    assert (enabled["enabled"], enabled["health"]) == (True, "ok")


async def test_test_connection_reports_success_or_the_reason(
    http: httpx.AsyncClient, upstream_url: str
) -> None:
    good = (await create(http, name="good", config={"base_url": upstream_url})).json()
    down = (await create(http, name="down")).json()
    assert (await http.post(f"/api/v1/connectors/{good['id']}/test")).json() == {
        "ok": True,
        "error": None,
    }
    failed = (await http.post(f"/api/v1/connectors/{down['id']}/test")).json()
    assert failed["ok"] is False and failed["error"].startswith("ConnectorUnavailable")


async def test_run_now_polls_and_the_run_appears_in_the_history(
    http: httpx.AsyncClient, upstream_url: str
) -> None:
    instance = (await create(http, config={"base_url": upstream_url})).json()
    outcome = (await http.post(f"/api/v1/connectors/{instance['id']}/run")).json()
    assert outcome["ok"] is True and outcome["stored"] > 0
    runs = (await http.get(f"/api/v1/connectors/{instance['id']}/runs")).json()
    assert [(r["outcome"], r["stored"]) for r in runs] == [("ok", outcome["stored"])]
    read = (await http.get(f"/api/v1/connectors/{instance['id']}")).json()
    assert read["health"] in ("ok", "degraded") and read["last_success_at"] is not None


async def test_unknown_instance_is_a_404(http: httpx.AsyncClient) -> None:
    for response in (
        await http.get("/api/v1/connectors/999"),
        await http.patch("/api/v1/connectors/999", json={"interval_seconds": 5}),
        await http.post("/api/v1/connectors/999/run"),
        await http.get("/api/v1/connectors/999/runs"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "no connector instance with id 999"}


async def test_connector_kinds_list_config_schemas_and_secret_fields(
    http: httpx.AsyncClient,
) -> None:
    kinds = {k["kind"]: k for k in (await http.get("/api/v1/connector-kinds")).json()}
    onestop = kinds["onestop"]
    assert onestop["record_types"] == ["dossier"]
    assert "base_url" in onestop["config_schema"]["properties"]
    assert onestop["secret_fields"] == ["api_key"]
