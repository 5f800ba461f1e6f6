"""The HTTP surface: wall display, health, KPI reads and their errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ioc.app import create_app
from ioc.context import AppContext
from ioc.kpi.catalog import CATALOG


@pytest.fixture
async def http(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            yield client


async def test_wall_display_and_its_assets_are_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    script = await http.get("/static/app.js")
    assert script.status_code == 200 and "/ws" in script.text
    assert (await http.get("/static/style.css")).status_code == 200


async def test_healthz_answers_ok(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}


async def test_kpis_default_to_the_province_and_every_catalogue_kpi_with_labels(
    http: httpx.AsyncClient,
) -> None:
    body = (await http.get("/api/v1/kpis")).json()
    assert [k["kpi"] for k in body] == [k.id for k in CATALOG]
    assert {k["unit"] for k in body} == {"75"}
    overdue = next(k for k in body if k["kpi"] == "onestop.overdue_open")
    assert (overdue["name_vi"], overdue["name_en"]) == (
        "Hồ sơ đang quá hạn",
        "Open overdue dossiers",
    )


async def test_kpis_can_be_chosen_and_an_unknown_one_is_a_404(http: httpx.AsyncClient) -> None:
    chosen = await http.get(
        "/api/v1/kpis", params=[("kpi", "health.bed_occupancy"), ("kpi", "onestop.backlog")]
    )
    assert [k["kpi"] for k in chosen.json()] == ["health.bed_occupancy", "onestop.backlog"]
    feedback = (await http.get("/api/v1/kpis", params={"domain": "feedback"})).json()
    assert {k["domain"] for k in feedback} == {"feedback"} and len(feedback) == 4
    missing = await http.get("/api/v1/kpis", params={"kpi": "weather.rain"})
    assert missing.status_code == 404 and "unknown KPI 'weather.rain'" in missing.json()["detail"]


async def test_kpis_of_an_unknown_unit_is_a_404_with_a_message(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/kpis", params={"unit": "12345"})
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown unit code '12345'"}


async def test_system_tells_clients_the_province_time_zone_and_server_clock(
    http: httpx.AsyncClient,
) -> None:
    body = (await http.get("/api/v1/system")).json()
    assert {k: body[k] for k in ("province", "province_name", "timezone", "demo")} == {
        "province": "75",
        "province_name": "Đồng Nai",
        "timezone": "Asia/Ho_Chi_Minh",
        "demo": False,
    }
    assert body["now"].endswith("Z")
