"""Helpers of the incident tests: a clock the test moves, on-time cells that open incidents."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
from fastapi import FastAPI

from ioc.context import AppContext
from ioc.kit.upsert import upsert
from ioc.kpi.models import KpiValue
from ioc.scheduler.runner import write_transaction

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 local on 20 November


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def open_incidents(app: FastAPI, values: dict[str, float]) -> None:
    """Store on-time rates for units in November 2026 and judge every rule (as the refresh
    does)."""
    running: AppContext = app.state.ctx
    rows = [
        {
            "kpi": "onestop.on_time_rate",
            "unit_code": unit,
            "period_kind": "month",
            "period_start": date(2026, 11, 1),
            "numerator": value,
            "denominator": 100.0,
            "value": value,
            "computed_at": NOW,
        }
        for unit, value in values.items()
    ]
    async with write_transaction(running) as session:
        await upsert(
            session, KpiValue, rows, keys=("kpi", "unit_code", "period_kind", "period_start")
        )
    await evaluate(app)


async def evaluate(app: FastAPI) -> int:
    """Judge every rule now over HTTP (open access); returns how many incidents changed."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
        response = await client.post("/api/v1/incidents/evaluate")
    assert response.status_code == 200
    return response.json()["changed"]


async def per_commune_rule(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
    """Disable every rule and add one: the on-time rate judged in each commune."""
    for rule in (await http.get("/api/v1/incident-rules", headers=headers)).json():
        await http.patch(
            f"/api/v1/incident-rules/{rule['id']}", json={"enabled": False}, headers=headers
        )
    created = await http.post(
        "/api/v1/incident-rules",
        headers=headers,
        json={
            "name": "on-time-by-commune",
            "kind": "kpi_threshold",
            "kpi": "onestop.on_time_rate",
            "per_commune": True,
        },
    )
    assert created.status_code == 201, created.text
