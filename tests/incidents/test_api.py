"""Incidents over HTTP: default rules, rules CRUD, list and filters, acknowledge / assign /
notes / resolve with their timeline and conflicts, counts, response times (MTTA/MTTR) as KPI
cells and live topics."""

from __future__ import annotations

import json
from datetime import date, timedelta

import httpx
from fastapi import FastAPI

from ioc.context import AppContext
from ioc.incidents import rules
from ioc.kpi.models import KpiValue
from ioc.live.hub import Client
from tests.incidents.support import NOW, Clock, evaluate, open_incidents, per_commune_rule


async def test_default_rules_are_seeded_with_the_catalogue_thresholds(
    http: httpx.AsyncClient,
) -> None:
    rules = {r["name"]: r for r in (await http.get("/api/v1/incident-rules")).json()}
    on_time = rules["kpi:onestop.on_time_rate"]
    assert (on_time["warn"], on_time["effective_warn"], on_time["effective_critical"]) == (
        None,
        95.0,
        90.0,
    )
    assert on_time["direction"] == "below" and on_time["is_default"]
    assert rules["kpi:health.bed_occupancy"]["direction"] == "above"
    assert {"dossiers-overdue-by-field", "connectors", "bed-occupancy"} <= set(rules)
    refused = await http.delete(f"/api/v1/incident-rules/{on_time['id']}")
    assert refused.status_code == 409 and "disable it instead" in refused.json()["detail"]


async def test_rules_are_created_changed_and_deleted_with_clear_refusals(
    http: httpx.AsyncClient,
) -> None:
    body = {"name": "late-apology", "kind": "dossier_late_without_apology", "warn": 2}
    created = await http.post("/api/v1/incident-rules", json=body)
    assert created.status_code == 201
    rule = created.json()
    assert rule["group_by"] == ["unit_code", "agency_code"] and rule["effective_recovery"] == 2
    duplicate = await http.post("/api/v1/incident-rules", json=body)
    assert duplicate.status_code == 422 and "exists already" in duplicate.json()["detail"]
    bad = await http.patch(f"/api/v1/incident-rules/{rule['id']}", json={"recovery": 5})
    assert bad.status_code == 422 and "critical ≥ warn ≥ recovery" in bad.json()["detail"]
    unknown_kind = await http.post("/api/v1/incident-rules", json={"name": "x", "kind": "nope"})
    assert unknown_kind.status_code == 422
    changed = await http.patch(
        f"/api/v1/incident-rules/{rule['id']}", json={"warn": 10, "quiet_minutes": 5}
    )
    assert (changed.json()["warn"], changed.json()["quiet_minutes"]) == (10, 5)
    assert (await http.delete(f"/api/v1/incident-rules/{rule['id']}")).status_code == 204
    assert (await http.get(f"/api/v1/incident-rules/{rule['id']}")).status_code == 404


async def test_incidents_are_listed_filtered_and_counted_by_unit_and_severity(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await per_commune_rule(http)
    await open_incidents(app, {"26068": 94.0, "26041": 80.0, "26080": 99.0})
    page = (await http.get("/api/v1/incidents", params={"limit": 1})).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    critical = (await http.get("/api/v1/incidents", params={"severity": "critical"})).json()
    assert [i["unit_code"] for i in critical["items"]] == ["26041"]
    by_unit = (await http.get("/api/v1/incidents", params={"unit": "26068"})).json()
    assert [i["severity"] for i in by_unit["items"]] == ["warn"]
    assert (await http.get("/api/v1/incidents", params={"domain": "health"})).json()["total"] == 0
    in_province = await http.get("/api/v1/incidents", params={"unit": "75", "status": "active"})
    assert in_province.json()["total"] == 2
    counts = (await http.get("/api/v1/incidents/counts")).json()
    assert (counts["warn"], counts["critical"], counts["total"]) == (1, 1, 2)
    assert [(u["unit_code"], u["critical"]) for u in counts["units"]] == [
        ("26041", 1),
        ("26068", 0),
    ]
    bad = await http.get("/api/v1/incidents", params={"status": "closed"})
    assert bad.status_code == 422 and "status must be" in bad.json()["detail"]
    bad_sort = await http.get("/api/v1/incidents", params={"sort": "-value"})
    assert bad_sort.status_code == 422 and "sort must be" in bad_sort.json()["detail"]
    later = (NOW + timedelta(hours=1)).isoformat()
    assert (await http.get("/api/v1/incidents", params={"to": later})).json()["total"] == 2
    earlier = (NOW - timedelta(hours=1)).isoformat()
    assert (await http.get("/api/v1/incidents", params={"to": earlier})).json()["total"] == 0
    stats = (await http.get("/api/v1/incidents/stats", params={"by": "unit"})).json()
    assert {(r["key"], r["label"], r["opened"]) for r in stats["rows"]} == {
        ("26041", "Phường Trấn Biên", 1),
        ("26068", "Phường Biên Hòa", 1),
    }
    assert (await http.get("/api/v1/incidents/stats", params={"by": "field"})).status_code == 422
    detail = (await http.get(f"/api/v1/incidents/{critical['items'][0]['id']}")).json()
    assert detail["evidence"]["cells"][0]["value"] == 80.0
    assert detail["evidence"]["query"].startswith("/api/v1/kpis/onestop.on_time_rate/records?")
    assert "side=late" in detail["evidence"]["query"]
    assert (await http.get("/api/v1/incidents/999999")).status_code == 404


async def test_acknowledge_assign_note_and_resolve_fill_the_timeline_and_response_times(
    app: FastAPI, http: httpx.AsyncClient, clock: Clock
) -> None:
    await per_commune_rule(http)
    await open_incidents(app, {"26068": 94.0})
    (incident,) = (await http.get("/api/v1/incidents")).json()["items"]
    url = f"/api/v1/incidents/{incident['id']}"
    clock.now = NOW + timedelta(minutes=12)
    acked = await http.post(f"{url}/acknowledge", json={"actor": "trực ban", "note": "đang xem"})
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    again = await http.post(f"{url}/acknowledge", json={"actor": "trực ban"})
    assert again.status_code == 409 and "acknowledged" in again.json()["detail"]
    assigned = await http.post(
        f"{url}/assign", json={"actor": "lãnh đạo", "assignee": "Sở Nội vụ", "agency_code": "SNV"}
    )
    assert assigned.json()["assignee"] == "Sở Nội vụ"
    assert (await http.post(f"{url}/notes", json={"actor": "a", "text": ""})).status_code == 422
    await http.post(f"{url}/notes", json={"actor": "Sở Nội vụ", "text": "đã liên hệ xã"})
    clock.now = NOW + timedelta(minutes=42)
    resolved = (await http.post(f"{url}/resolve", json={"actor": "lãnh đạo"})).json()
    assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "lãnh đạo")
    assert [(e["kind"], e["actor"]) for e in resolved["timeline"]] == [
        ("opened", "system"),
        ("acknowledged", "trực ban"),
        ("assigned", "lãnh đạo"),
        ("note", "Sở Nội vụ"),
        ("resolved", "lãnh đạo"),
    ]
    assert (
        await http.post(f"{url}/assign", json={"actor": "x", "assignee": "y"})
    ).status_code == 409

    stats = (await http.get("/api/v1/incidents/stats", params={"by": "agency"})).json()
    assert [(r["key"], r["mtta_minutes"], r["mttr_minutes"]) for r in stats["rows"]] == [
        ("SNV", 12.0, 42.0)
    ]
    running: AppContext = app.state.ctx
    async with running.sessionmaker() as session:
        for kpi, minutes in (("incidents.mtta_minutes", 12.0), ("incidents.mttr_minutes", 42.0)):
            for unit in ("26068", "75"):
                cell = await session.get(KpiValue, (kpi, unit, "month", date(2026, 11, 1)))
                assert cell is not None and (cell.value, cell.denominator) == (minutes, 1)
    assert running.hub is not None
    tile = await running.hub.topics("kpi:incidents.mttr_minutes:75")
    assert (tile["value"], tile["unit_of_measure"]) == (42.0, "min")
    live = await running.hub.topics("incidents")
    assert live["items"] == []


async def test_the_incident_records_of_a_kpi_incident_are_the_records_behind_its_cell(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await per_commune_rule(http)
    await open_incidents(app, {"26068": 50.0})
    (incident,) = (await http.get("/api/v1/incidents")).json()["items"]
    page = (await http.get(f"/api/v1/incidents/{incident['id']}/records")).json()
    # No dossiers are stored: the cell's records (as its query lists them) are none either.
    assert (page["record_type"], page["total"]) == ("dossier", 0)
    detail = (await http.get(f"/api/v1/incidents/{incident['id']}")).json()
    same = (await http.get(detail["evidence"]["query"])).json()
    assert same["total"] == page["total"]


def test_thresholds_breach_strictly_and_recover_at_the_recovery_level() -> None:
    below = rules.Thresholds("below", warn=95, critical=90, recovery=97)
    assert [below.severity(v) for v in (96, 95, 94.9, 90, 89)] == [
        None,
        None,
        "warn",
        "warn",
        "critical",
    ]
    assert [below.recovered(v) for v in (96, 97, None)] == [False, True, False]
    above = rules.Thresholds("above", warn=85, critical=95, recovery=80)
    assert [above.severity(v) for v in (85, 86, 96)] == [None, "warn", "critical"]
    assert above.worse(86, 96) == 96 and below.worse(94, 89) == 89


async def test_live_message_carries_the_whole_active_list(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await per_commune_rule(http)
    running: AppContext = app.state.ctx
    assert running.hub is not None
    screen = Client(Recorder(), queue_limit=10)
    await running.hub.subscribe(screen, ["incidents"])
    assert last_frame(screen, "incidents")["type"] == "snapshot"
    await open_incidents(app, {"26068": 94.0, "26041": 80.0})
    message = last_frame(screen, "incidents")
    assert message["type"] == "update"
    data = message["data"]
    assert [i["unit_code"] for i in data["items"]] == ["26041", "26068"]  # critical first
    assert {i["unit_code"] for i in data["changed"]} == {"26041", "26068"}


def last_frame(client: Client, topic: str) -> dict:
    """The newest message queued for a client on a topic (frames wait as (frame, seq))."""
    frame, _ = client.pending[topic][-1]
    return json.loads(frame)


class Recorder:
    """A connection that keeps what it is sent."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_text(self, data: str) -> None:
        self.frames.append(data)


async def test_disabling_a_rule_resolves_its_incidents_and_deleting_keeps_them(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    await per_commune_rule(http)
    await open_incidents(app, {"26068": 94.0})
    (incident,) = (await http.get("/api/v1/incidents")).json()["items"]
    rule_id = incident["rule_id"]
    disabled = await http.patch(f"/api/v1/incident-rules/{rule_id}", json={"enabled": False})
    assert disabled.status_code == 200
    detail = (await http.get(f"/api/v1/incidents/{incident['id']}")).json()
    assert (detail["status"], detail["resolved_by"]) == ("resolved", "system")
    assert detail["timeline"][-1]["message"] == "rule disabled: on-time-by-commune"
    assert await evaluate(app) == 0  # a disabled rule judges nothing
    assert (await http.delete(f"/api/v1/incident-rules/{rule_id}")).status_code == 204
    kept = (await http.get(f"/api/v1/incidents/{incident['id']}")).json()
    assert (kept["status"], kept["rule_id"]) == ("resolved", None)
