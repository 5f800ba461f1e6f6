"""Wall layouts over HTTP: the default layout, create/edit/list/delete, clear 4xx for layouts
that cannot be drawn, and every tile rendered ready to draw."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ioc.app import create_app
from ioc.context import AppContext
from ioc.sdk import Dossier, DossierStatus
from tests.support.factories import (
    BIEN_HOA,
    TRAN_BIEN,
    ingest_dossiers,
    make_dossier,
    make_instance,
)

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 local on 20 November


@pytest.fixture
async def app(ctx: AppContext) -> AsyncIterator[FastAPI]:
    service = create_app(ctx.settings, clock=lambda: NOW)
    async with service.router.lifespan_context(service):
        yield service


async def ingest(app: FastAPI, records: list[Dossier]) -> None:
    """Store dossiers as a poll does, then publish the changed cells."""
    service: AppContext = app.state.ctx
    instance_id = await make_instance(service)
    await ingest_dossiers(service, records, instance_id=instance_id)


def due_dossier(unit: str, *, late: bool, n: int) -> Dossier:
    """A dossier due on 10 November, resolved early or an hour late."""
    due = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
    resolved = due + (timedelta(hours=1) if late else -timedelta(days=1))
    return make_dossier(
        external_id=f"{unit}-{n}-{late}",
        unit_code=unit,
        received_at=due - timedelta(days=7),
        due_at=due,
        resolved_at=resolved,
        status=DossierStatus.PROCESSED,
        source_updated_at=resolved,
    )


def layout(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "bien-hoa",
        "name_vi": "Phường Biên Hòa",
        "unit": BIEN_HOA,
        "columns": 2,
        "rows": 2,
        "tiles": [
            {"visualisation": "number", "kpi": "onestop.backlog", "x": 0, "y": 0},
            {"visualisation": "incidents", "x": 1, "y": 0},
        ],
    }
    body.update(overrides)
    return body


def tile(rendered: dict[str, Any], tile_id: str) -> dict[str, Any]:
    return next(t for t in rendered["tiles"] if t["id"] == tile_id)


async def test_the_province_gets_a_default_layout_on_start(http: httpx.AsyncClient) -> None:
    layouts = (await http.get("/api/v1/layouts")).json()
    assert [(x["id"], x["unit"], x["is_default"], x["topic"]) for x in layouts] == [
        ("default", "75", True, "layout:default")
    ]
    kinds = {t["visualisation"] for t in layouts[0]["tiles"]}
    assert {"number", "gauge", "sparkline", "bars", "incidents"} <= kinds


async def test_a_layout_is_created_read_edited_listed_and_deleted(
    http: httpx.AsyncClient,
) -> None:
    created = await http.post("/api/v1/layouts", json=layout())
    assert created.status_code == 201
    assert [t["id"] for t in created.json()["tiles"]] == ["t1", "t2"]
    assert created.json()["name_en"] == "Phường Biên Hòa"
    edited = await http.patch(
        "/api/v1/layouts/bien-hoa",
        json={
            "name_en": "Bien Hoa ward",
            "columns": 3,
            "tiles": [{"visualisation": "gauge", "kpi": "onestop.on_time_rate", "x": 2, "y": 1}],
        },
    )
    assert edited.status_code == 200, edited.text
    read = (await http.get("/api/v1/layouts/bien-hoa")).json()
    assert (read["name_en"], read["columns"], read["tiles"][0]["visualisation"]) == (
        "Bien Hoa ward",
        3,
        "gauge",
    )
    assert [x["id"] for x in (await http.get("/api/v1/layouts")).json()] == [
        "default",
        "bien-hoa",
    ]
    assert (await http.delete("/api/v1/layouts/bien-hoa")).status_code == 204
    assert (await http.get("/api/v1/layouts/bien-hoa")).status_code == 404


async def test_making_a_layout_the_default_unsets_the_previous_one(
    http: httpx.AsyncClient,
) -> None:
    await http.post("/api/v1/layouts", json=layout(is_default=True))
    layouts = (await http.get("/api/v1/layouts")).json()
    assert [(x["id"], x["is_default"]) for x in layouts] == [
        ("bien-hoa", True),
        ("default", False),
    ]


@pytest.mark.parametrize(
    ("tiles", "expected"),
    [
        ([{"visualisation": "number", "kpi": "no.such_kpi", "x": 0, "y": 0}], "unknown KPI"),
        (
            [
                {
                    "visualisation": "number",
                    "kpi": "onestop.backlog",
                    "unit": "00000",
                    "x": 0,
                    "y": 0,
                }
            ],
            "unknown unit code '00000'",
        ),
        (
            [{"visualisation": "pie", "kpi": "onestop.backlog", "x": 0, "y": 0}],
            "unknown visualisation 'pie'",
        ),
        ([{"visualisation": "number", "x": 0, "y": 0}], "a number tile needs a kpi"),
        (
            [{"visualisation": "number", "kpi": "onestop.backlog", "x": 1, "y": 0, "w": 2}],
            "outside the 2×2 grid",
        ),
        (
            [
                {"visualisation": "number", "kpi": "onestop.backlog", "x": 0, "y": 0, "h": 2},
                {"visualisation": "incidents", "x": 0, "y": 1},
            ],
            "overlaps tile 1",
        ),
        (
            [{"visualisation": "bars", "kpi": "onestop.backlog", "unit": BIEN_HOA, "x": 0, "y": 0}],
            "no units below it",
        ),
    ],
    ids=[
        "unknown-kpi",
        "unknown-unit",
        "unknown-visualisation",
        "missing-kpi",
        "outside-grid",
        "overlap",
        "bars-of-a-commune",
    ],
)
async def test_a_layout_that_cannot_be_drawn_is_refused_with_a_clear_422(
    http: httpx.AsyncClient, tiles: list[dict[str, Any]], expected: str
) -> None:
    created = await http.post("/api/v1/layouts", json=layout(tiles=tiles))
    assert created.status_code == 422
    assert expected in created.text
    edited = await http.patch(
        "/api/v1/layouts/default", json={"columns": 2, "rows": 2, "tiles": tiles}
    )
    assert edited.status_code == 422
    assert expected in edited.text


async def test_a_duplicate_id_is_a_conflict(http: httpx.AsyncClient) -> None:
    await http.post("/api/v1/layouts", json=layout())
    again = await http.post("/api/v1/layouts", json=layout())
    assert again.status_code == 409 and "already exists" in again.json()["detail"]


async def test_tiles_render_values_threshold_colours_and_bars_worst_first(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    # Biên Hòa: 1 of 4 on time (25 %); Trấn Biên: 3 of 3 (100 %).
    await ingest(
        app,
        [due_dossier(BIEN_HOA, late=n > 0, n=n) for n in range(4)]
        + [due_dossier(TRAN_BIEN, late=False, n=n) for n in range(3)],
    )
    body = layout(
        unit="75",
        columns=3,
        rows=1,
        tiles=[
            {"id": "rate", "visualisation": "gauge", "kpi": "onestop.on_time_rate", "x": 0, "y": 0},
            {
                "id": "lenient",
                "visualisation": "number",
                "kpi": "onestop.on_time_rate",
                "unit": TRAN_BIEN,
                "thresholds": {"warn": 99.5, "critical": 50},
                "x": 1,
                "y": 0,
            },
            {"id": "bars", "visualisation": "bars", "kpi": "onestop.on_time_rate", "x": 2, "y": 0},
        ],
    )
    assert (await http.post("/api/v1/layouts", json=body)).status_code == 201
    rendered = (await http.get("/api/v1/layouts/bien-hoa/tiles")).json()
    rate = tile(rendered, "rate")
    assert (rate["title_vi"], rate["unit_name"]) == ("Tỷ lệ hồ sơ đúng hạn", "Đồng Nai")
    assert rate["data"]["value"] == pytest.approx(400 / 7)
    assert rate["data"]["status"] == "critical"  # below the catalogue's 90 % critical line
    assert rate["data"]["range"] == {"min": 0.0, "max": 100.0}
    lenient = tile(rendered, "lenient")["data"]
    assert (lenient["value"], lenient["status"], lenient["warn"]) == (100.0, "ok", 99.5)
    bars = tile(rendered, "bars")["data"]["bars"]["rows"]
    assert [(r["unit"], r["value"], r["status"]) for r in bars] == [
        (BIEN_HOA, 25.0, "critical"),
        (TRAN_BIEN, 100.0, "ok"),
    ]


async def test_a_stock_sparkline_draws_today_hour_by_hour_against_yesterday(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    # Received at 09:00 local yesterday, still open: in the backlog from then on.
    received = NOW - timedelta(days=1, hours=1)
    await ingest(
        app,
        [
            make_dossier(
                external_id="open-1",
                received_at=received,
                due_at=NOW + timedelta(days=3),
                source_updated_at=received,
            )
        ],
    )
    body = layout(
        tiles=[
            {
                "id": "s",
                "visualisation": "sparkline",
                "kpi": "onestop.backlog",
                "unit": "75",
                "x": 0,
                "y": 0,
            }
        ]
    )
    await http.post("/api/v1/layouts", json=body)
    data = tile((await http.get("/api/v1/layouts/bien-hoa/tiles")).json(), "s")["data"]
    assert data["mode"] == "hourly"
    yesterday = {p["hour"]: p["value"] for p in data["yesterday"]}
    assert (yesterday[8], yesterday[10], yesterday[24]) == (0, 1, 1)
    assert [p["hour"] for p in data["today"]] == list(range(0, 11))  # 00:00 … 10:00 now
    assert data["today"][-1]["value"] == data["value"] == 1


async def test_an_incident_tile_lists_the_open_incidents_under_its_unit_critical_first(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await http.post("/api/v1/layouts", json=layout())
    before = tile((await http.get("/api/v1/layouts/bien-hoa/tiles")).json(), "t2")["data"]
    assert before == {"available": True, "items": [], "open": 0}  # served, none open yet

    incidents = [
        {
            "id": 1,
            "title": "Hồ sơ quá hạn",
            "severity": "warn",
            "status": "open",
            "unit_code": BIEN_HOA,
            "opened_at": "2026-11-20T01:00:00Z",
        },
        {
            "id": 2,
            "title": "Giường bệnh quá tải",
            "severity": "critical",
            "status": "open",
            "unit_code": BIEN_HOA,
            "opened_at": "2026-11-20T00:00:00Z",
        },
        {
            "id": 3,
            "title": "Elsewhere",
            "severity": "critical",
            "status": "open",
            "unit_code": TRAN_BIEN,
            "opened_at": "2026-11-20T02:00:00Z",
        },
        {
            "id": 4,
            "title": "Done",
            "severity": "critical",
            "status": "resolved",
            "unit_code": BIEN_HOA,
            "opened_at": "2026-11-20T02:00:00Z",
        },
    ]

    async def provider(topic: str) -> list[dict[str, Any]]:
        return incidents

    # The tile's own filtering and order, whatever the incidents domain holds.
    app.state.ctx.hub.topics.register("incidents", provider)
    after = tile((await http.get("/api/v1/layouts/bien-hoa/tiles")).json(), "t2")["data"]
    assert after["available"] and after["open"] == 2
    assert [i["id"] for i in after["items"]] == [2, 1]  # critical first


async def test_a_freshness_tile_lists_every_source_with_when_it_turns_stale(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await make_instance(app.state.ctx, name="motcua", interval_seconds=60)
    body = layout(tiles=[{"id": "f", "visualisation": "freshness", "x": 0, "y": 0}])
    await http.post("/api/v1/layouts", json=body)
    data = tile((await http.get("/api/v1/layouts/bien-hoa/tiles")).json(), "f")["data"]
    assert data["available"]
    assert [(s["name"], s["stale"], s["last_success_at"]) for s in data["sources"]] == [
        ("motcua", True, None)  # never polled: stale from the start
    ]
