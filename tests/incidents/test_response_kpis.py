"""MTTA and MTTR as catalogue KPIs: listed, read like any KPI, broken down by agency and unit,
drawn by every KPI tile kind (the default layout's MTTR tile included), and kept by a rebuild."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ioc.context import AppContext
from ioc.kpi.service import rebuild
from ioc.scheduler.runner import write_transaction
from tests.incidents.support import NOW, Clock, open_incidents, per_commune_rule

BIEN_HOA, TRAN_BIEN = "26068", "26041"


@pytest.fixture
async def http(app: FastAPI, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """A client after two incidents were handled: Biên Hòa's by agency SNV (acknowledged after
    10 minutes, resolved after 30), Trấn Biên's by agency STP (20 and 60 minutes)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
        await per_commune_rule(client)
        await open_incidents(app, {BIEN_HOA: 94.0, TRAN_BIEN: 80.0})
        ids = {
            i["unit_code"]: i["id"] for i in (await client.get("/api/v1/incidents")).json()["items"]
        }
        steps = [
            (0, TRAN_BIEN, "assign", {"assignee": "Sở Tư pháp", "agency_code": "STP"}),
            (0, BIEN_HOA, "assign", {"assignee": "Sở Nội vụ", "agency_code": "SNV"}),
            (10, BIEN_HOA, "acknowledge", {}),
            (20, TRAN_BIEN, "acknowledge", {}),
            (30, BIEN_HOA, "resolve", {}),
            (60, TRAN_BIEN, "resolve", {}),
        ]
        for minutes, unit, action, body in steps:
            clock.now = NOW + timedelta(minutes=minutes)
            done = await client.post(
                f"/api/v1/incidents/{ids[unit]}/{action}", json={"actor": "trực ban", **body}
            )
            assert done.status_code == 200, done.text
        yield client


def by_id(items: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
    return next(i for i in items if i[key] == value)


async def test_response_times_are_catalogue_kpis_read_like_any_other(
    http: httpx.AsyncClient,
) -> None:
    catalog = (await http.get("/api/v1/kpis/catalog")).json()
    mttr = by_id(catalog, "id", "incidents.mttr_minutes")
    assert mttr["name_vi"] == "Thời gian xử lý sự cố trung bình (MTTR)"
    assert (mttr["unit_of_measure"], mttr["good_direction"], mttr["formula_kind"]) == (
        "min",
        "down",
        "incident_response",
    )
    assert mttr["breakdown_axes"] == ["unit", "agency"] and not mttr["additive"]
    read = (await http.get("/api/v1/kpis", params={"kpi": "incidents.mttr_minutes"})).json()
    assert [(r["kpi"], r["unit"], r["value"], r["denominator"]) for r in read] == [
        ("incidents.mttr_minutes", "75", 45.0, 2.0)
    ]
    commune = await http.get(
        "/api/v1/kpis", params={"kpi": "incidents.mtta_minutes", "unit": BIEN_HOA}
    )
    assert [r["value"] for r in commune.json()] == [10.0]
    records = await http.get("/api/v1/kpis/incidents.mttr_minutes/records")
    assert records.status_code == 422 and "/api/v1/incidents" in records.json()["detail"]


async def test_response_times_break_down_by_agency_as_the_incident_stats_do(
    http: httpx.AsyncClient,
) -> None:
    stats = (await http.get("/api/v1/incidents/stats", params={"by": "agency"})).json()
    expected = {r["key"]: (r["mtta_minutes"], r["mttr_minutes"]) for r in stats["rows"]}
    assert expected == {"SNV": (10.0, 30.0), "STP": (20.0, 60.0)}
    for index, kpi in enumerate(("incidents.mtta_minutes", "incidents.mttr_minutes")):
        split = (await http.get(f"/api/v1/kpis/{kpi}/breakdown", params={"by": "agency"})).json()
        rows = [(r["key"], r["value"]) for r in split["rows"]]
        # Worst (slowest) first.
        assert rows == sorted(((k, v[index]) for k, v in expected.items()), key=lambda r: -r[1])
        assert split["total"]["value"] == (15.0, 45.0)[index]
    by_unit = (
        await http.get("/api/v1/kpis/incidents.mttr_minutes/breakdown", params={"by": "unit"})
    ).json()
    assert [(r["key"], r["value"]) for r in by_unit["rows"] if r["value"] is not None] == [
        (TRAN_BIEN, 60.0),
        (BIEN_HOA, 30.0),
    ]


async def test_every_kpi_tile_kind_draws_the_response_times_and_the_default_layout_has_mttr(
    http: httpx.AsyncClient,
) -> None:
    tiles = [
        {"id": kind, "visualisation": kind, "kpi": "incidents.mttr_minutes", "x": x, "y": 0}
        for x, kind in enumerate(("number", "gauge", "sparkline", "bars"))
    ]
    body = {"id": "response", "name_vi": "Sự cố", "unit": "75", "columns": 4, "rows": 1}
    created = await http.post("/api/v1/layouts", json=body | {"tiles": tiles})
    assert created.status_code == 201, created.text
    rendered = (await http.get("/api/v1/layouts/response/tiles")).json()["tiles"]
    number = by_id(rendered, "id", "number")
    assert (number["title_vi"], number["data"]["value"]) == (
        "Thời gian xử lý sự cố trung bình (MTTR)",
        45.0,
    )
    assert by_id(rendered, "id", "gauge")["data"]["range"] == {"min": 0.0, "max": 56.25}
    assert by_id(rendered, "id", "sparkline")["data"]["today_value"] == 45.0
    bars = by_id(rendered, "id", "bars")["data"]["bars"]["rows"]
    assert [(r["unit"], r["value"]) for r in bars] == [(TRAN_BIEN, 60.0), (BIEN_HOA, 30.0)]
    default = (await http.get("/api/v1/layouts/default/tiles")).json()["tiles"]
    assert by_id(default, "kpi", "incidents.mttr_minutes")["data"]["value"] == 45.0


async def test_a_kpi_rebuild_keeps_the_response_time_cells(
    app: FastAPI, http: httpx.AsyncClient, clock: Clock
) -> None:
    running: AppContext = app.state.ctx
    async with write_transaction(running) as session:
        await rebuild(session, province_code="75", tz=running.settings.tz, now=clock.now)
    read = await http.get("/api/v1/kpis", params={"kpi": "incidents.mttr_minutes"})
    assert [r["value"] for r in read.json()] == [45.0]
