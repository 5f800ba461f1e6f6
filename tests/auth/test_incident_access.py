"""Incidents under access control: who may act, whom the timeline names, what the audit keeps."""

from __future__ import annotations

from datetime import date

import httpx
from fastapi import FastAPI

from ioc.auth.permissions import Role
from ioc.context import AppContext
from ioc.incidents.tasks import evaluate_now
from ioc.kit.upsert import upsert
from ioc.kpi.models import KpiValue
from ioc.scheduler.runner import write_transaction
from tests.auth.conftest import MakeToken, bearer
from tests.incidents.support import per_commune_rule

COMMUNE = "26068"


async def open_one_incident(app: FastAPI, http: httpx.AsyncClient, admin: dict[str, str]) -> int:
    """One rule (on-time rate per commune), one commune far below it, judged now."""
    await per_commune_rule(http, admin)
    running: AppContext = app.state.ctx
    today = running.clock().astimezone(running.settings.tz).date()
    cell = {
        "kpi": "onestop.on_time_rate",
        "unit_code": COMMUNE,
        "period_kind": "month",
        "period_start": date(today.year, today.month, 1),
        "numerator": 80.0,
        "denominator": 100.0,
        "value": 80.0,
        "computed_at": running.clock(),
    }
    async with write_transaction(running) as session:
        await upsert(
            session, KpiValue, [cell], keys=("kpi", "unit_code", "period_kind", "period_start")
        )
    await evaluate_now(running)
    (incident,) = (await http.get("/api/v1/incidents", headers=admin)).json()["items"]
    return incident["id"]


async def test_incident_actions_are_gated_name_the_caller_and_are_audited(
    app: FastAPI, http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    admin = bearer(await make_token(Role.ADMIN, name="quan-tri"))
    operator = bearer(await make_token(Role.OPERATOR, name="truc-ban"))
    leader = bearer(await make_token(Role.LEADER, name="lanh-dao"))
    url = f"/api/v1/incidents/{await open_one_incident(app, http, admin)}"

    # A body's actor is ignored once a token names the caller.
    acknowledged = await http.post(f"{url}/acknowledge", json={"actor": "ai đó"}, headers=operator)
    refused = await http.post(f"{url}/resolve", json={}, headers=operator)
    resolved = await http.post(f"{url}/resolve", json={}, headers=leader)

    assert acknowledged.status_code == 200, acknowledged.text
    assert refused.status_code == 403 and "resolve" in refused.json()["detail"]
    assert resolved.status_code == 200, resolved.text
    people = [
        (e["kind"], e["actor"]) for e in resolved.json()["timeline"] if e["actor"] != "system"
    ]
    assert people == [("acknowledged", "truc-ban"), ("resolved", "lanh-dao")]
    target = url.removeprefix("/api/v1/incidents/")
    audit = await http.get("/api/v1/audit", params={"target": f"incident:{target}"}, headers=admin)
    entries = list(reversed(audit.json()["items"]))
    assert [(e["action"], e["actor_name"]) for e in entries] == [
        ("incident.acknowledge", "truc-ban"),
        ("incident.resolve", "lanh-dao"),
    ]
    assert (entries[0]["before"]["status"], entries[0]["after"]["status"]) == (
        "open",
        "acknowledged",
    )


async def test_rule_and_layout_edits_need_an_admin_and_are_audited(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    admin = bearer(await make_token(Role.ADMIN, name="quan-tri"))
    leader = bearer(await make_token(Role.LEADER, name="lanh-dao"))
    layout = {
        "id": "so-noi-vu",
        "name_vi": "Sở Nội vụ",
        "name_en": "Home affairs",
        "columns": 1,
        "rows": 1,
        "tiles": [{"visualisation": "number", "kpi": "onestop.backlog", "x": 0, "y": 0}],
    }
    assert (await http.post("/api/v1/layouts", json=layout, headers=leader)).status_code == 403
    assert (await http.post("/api/v1/layouts", json=layout, headers=admin)).status_code == 201
    deleted = await http.delete("/api/v1/layouts/so-noi-vu", headers=admin)
    assert deleted.status_code == 204
    audit = await http.get("/api/v1/audit", params={"action": "layout.*"}, headers=admin)
    entries = list(reversed(audit.json()["items"]))
    assert [(e["action"], e["actor_name"]) for e in entries] == [
        ("layout.create", "quan-tri"),
        ("layout.delete", "quan-tri"),
    ]
    assert entries[1]["before"]["name_vi"] == "Sở Nội vụ"
