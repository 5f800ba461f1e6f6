"""Scenarios over real HTTP: the one-stop-shop simulator, the IOC serving REST and /ws, a real
WebSocket client. A surge of late land dossiers in one commune opens one incident in one poll
cycle, pushed live, whose evidence is exactly the late dossiers; it resolves after the quiet
period once they are dealt with; an upstream outage opens a system incident that its recovery
resolves. A flapping upstream, and a flapping KPI (a commune's overdue dossiers rising over the
warn level and falling back under recovery, again and again), each keep one incident: re-opened
within the rule's relapse window, never duplicated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import websockets

from connectors.onestop.catalog import LAND
from connectors.onestop.simulator import create_app as create_simulator
from ioc.app import create_app
from ioc.config import Settings
from ioc.scheduler.runner import refresh_now_based
from tests.support.expected import CANCELLED, current_commune, parse
from tests.support.servers import serve_app

START = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)
"""10:00 local time on Tuesday 10 November 2026; the simulator's clock moves only when told."""
COMMUNE = "26068"  # Phường Biên Hòa


def overdue_land_dossiers(truth: list[dict[str, Any]], *, now: datetime) -> set[str]:
    """Independently of the IOC: open land dossiers of the commune past their due time."""
    return {
        d["MaHoSo"]
        for d in truth
        if d["MaLinhVuc"] == LAND
        and current_commune(d) == COMMUNE
        and d["TrangThaiHoSo"] not in CANCELLED
        and d.get("NgayHenTra")
        and parse(d["NgayHenTra"]) < now
        and parse(d["NgayTiepNhan"]) < now
        and not d.get("NgayKetThucXuLy")
    }


async def next_update(ws: Any, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The next `incidents` update whose data `matches`."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        is_update = message["type"] == "update" and message["topic"] == "incidents"
        if is_update and matches(message["data"]):
            return message


async def all_records(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """Every record of a paginated records endpoint, page by page."""
    items: list[dict[str, Any]] = []
    while True:
        url = httpx.URL(path).copy_merge_params({"limit": 40, "offset": len(items)})
        page = (await http.get(url)).json()
        items += page["items"]
        if len(items) >= page["total"]:
            assert len(items) == page["total"]
            return items


async def test_late_land_surge_and_an_outage_open_and_resolve_incidents(
    settings: Settings, ctx: object
) -> None:
    simulator_app = create_simulator(seed=5, rate_per_day=20, history_days=3, start=START, speed=0)
    simulator = simulator_app.state.simulator
    app = create_app(settings, clock=simulator.now)
    async with (
        serve_app(simulator_app) as sim_url,
        serve_app(app) as ioc_url,
        httpx.AsyncClient(base_url=ioc_url, timeout=60) as http,
        httpx.AsyncClient(base_url=sim_url) as sim,
    ):
        # Only the rules of this scenario: the defaults are disabled, not deleted.
        for rule in (await http.get("/api/v1/incident-rules")).json():
            assert rule["is_default"]
            patched = await http.patch(
                f"/api/v1/incident-rules/{rule['id']}", json={"enabled": False}
            )
            assert patched.status_code == 200
        created = await http.post(
            "/api/v1/incident-rules",
            json={
                "name": "land-overdue",
                "kind": "dossier_overdue",
                "group_by": ["unit_code", "field_code"],
                "warn": 15,
                "recovery": 10,
                "quiet_minutes": 60,
            },
        )
        assert created.status_code == 201, created.text
        outage_rule = await http.post(
            "/api/v1/incident-rules",
            json={"name": "outage", "kind": "connector_health", "warn": 0, "quiet_minutes": 0},
        )
        assert outage_rule.status_code == 201, outage_rule.text
        connector = await http.post(
            "/api/v1/connectors",
            json={
                "name": "motcua",
                "kind": "onestop",
                "config": {"base_url": sim_url, "page_size": 500},
            },
        )
        connector_id = connector.json()["id"]

        async def poll() -> dict[str, Any]:
            return (await http.post(f"/api/v1/connectors/{connector_id}/run")).json()

        assert (await poll())["ok"]
        assert (await http.get("/api/v1/incidents")).json()["total"] == 0

        ws_url = ioc_url.replace("http://", "ws://") + "/ws"
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "subscribe", "topics": ["incidents"]}))
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert snapshot["type"] == "snapshot" and snapshot["data"]["items"] == []

            # The surge: extra land dossiers in one commune, every one of them ending late.
            started = await sim.post(
                "/_sim/scenario", json={"commune": COMMUNE, "per_day": 60, "late_rate": 1.0}
            )
            assert started.status_code == 200, started.text
            await sim.post("/_sim/advance", json={"seconds": 16 * 86400})
            truth = overdue_land_dossiers(
                simulator.dossiers_as_of(simulator.now()), now=simulator.now()
            )
            assert len(truth) > 20

            assert (await poll())["ok"]  # one poll cycle
            opened = await next_update(
                ws, lambda data: any(i["rule_kind"] == "dossier_overdue" for i in data["items"])
            )
            (live,) = opened["data"]["items"]
            assert (live["status"], live["unit_code"], live["domain"]) == (
                "open",
                COMMUNE,
                "onestop",
            )
            assert {
                "id",
                "title",
                "severity",
                "unit_name",
                "kpi",
                "opened_at",
                "last_seen_at",
            } <= set(live)

            listed = (await http.get("/api/v1/incidents")).json()
            assert listed["total"] == 1
            incident_id = listed["items"][0]["id"]
            detail = (await http.get(f"/api/v1/incidents/{incident_id}")).json()
            assert detail["subject"] == {"unit_code": COMMUNE, "field_code": LAND}
            evidence = await all_records(http, f"/api/v1/incidents/{incident_id}/records")
            assert {r["external_id"] for r in evidence} == truth
            assert detail["value"] == len(truth) == detail["evidence"]["records"]
            # The evidence's drill-down query reproduces exactly the same records.
            assert detail["evidence"]["query_exact"] is True
            reproduced = await all_records(http, detail["evidence"]["query"])
            assert {r["external_id"] for r in reproduced} == truth

            # Recovery: the surge stops and its dossiers are dealt with; quiet for an hour.
            await sim.delete("/_sim/scenario")
            await sim.post("/_sim/advance", json={"seconds": 45 * 86400})
            assert (await poll())["ok"]
            cleared = (await http.get(f"/api/v1/incidents/{incident_id}")).json()
            assert cleared["status"] == "open" and cleared["cleared_since"] is not None
            assert cleared["value"] <= 10  # back under the recovery level
            await sim.post("/_sim/advance", json={"seconds": 3601})
            assert (await http.post("/api/v1/incidents/evaluate")).status_code == 200
            resolved = await next_update(
                ws,
                lambda data: any(
                    i["id"] == incident_id and i["status"] == "resolved" for i in data["changed"]
                ),
            )
            (change,) = [i for i in resolved["data"]["changed"] if i["id"] == incident_id]
            assert change["status"] == "resolved" and resolved["data"]["items"] == []
            timeline = (await http.get(f"/api/v1/incidents/{incident_id}")).json()["timeline"]
            assert [e["kind"] for e in timeline] == ["opened", "cleared", "resolved"]
            assert timeline[-1]["actor"] == "system"

            # An outage of the upstream opens a system incident; its recovery resolves it.
            (await sim.post("/_sim/faults", json={"mode": "error"})).raise_for_status()
            assert not (await poll())["ok"]
            outage = await next_update(
                ws, lambda data: any(i["domain"] == "system" for i in data["items"])
            )
            (system,) = outage["data"]["items"]
            assert system["rule_kind"] == "connector_health" and system["status"] == "open"
            (await sim.post("/_sim/faults", json={"mode": None})).raise_for_status()
            assert (await poll())["ok"]
            back = await next_update(
                ws, lambda data: any(i["id"] == system["id"] for i in data["changed"])
            )
            assert back["data"]["changed"][0]["status"] == "resolved"
            assert back["data"]["items"] == []
        counts = (await http.get("/api/v1/incidents", params={"status": "resolved"})).json()
        assert counts["total"] == 2


async def test_a_flapping_upstream_opens_one_incident_that_stays_open(
    settings: Settings, ctx: object
) -> None:
    simulator_app = create_simulator(seed=3, rate_per_day=5, history_days=1, start=START, speed=0)
    app = create_app(settings.model_copy(update={"incident_default_rules": False}))
    async with (
        serve_app(simulator_app) as sim_url,
        serve_app(app) as ioc_url,
        httpx.AsyncClient(base_url=ioc_url, timeout=60) as http,
        httpx.AsyncClient(base_url=sim_url) as sim,
    ):
        assert (await http.get("/api/v1/incident-rules")).json() == []
        rule = {"name": "outage", "kind": "connector_health", "warn": 0, "quiet_minutes": 30}
        assert (await http.post("/api/v1/incident-rules", json=rule)).status_code == 201
        connector = await http.post(
            "/api/v1/connectors",
            json={"name": "flaky", "kind": "onestop", "config": {"base_url": sim_url}},
        )
        run = f"/api/v1/connectors/{connector.json()['id']}/run"
        outcomes = []
        for mode in ("error", None, "error", None, "error", None):
            (await sim.post("/_sim/faults", json={"mode": mode})).raise_for_status()
            outcomes.append((await http.post(run)).json()["ok"])
        assert outcomes == [False, True, False, True, False, True]
        (incident,) = (await http.get("/api/v1/incidents")).json()["items"]
        assert incident["status"] == "open"  # never quiet for 30 minutes
        timeline = (await http.get(f"/api/v1/incidents/{incident['id']}")).json()["timeline"]
        assert [e["kind"] for e in timeline] == [
            "opened",
            "cleared",
            "condition_returned",
            "cleared",
            "condition_returned",
            "cleared",
        ]


def overdue_in_commune(truth: list[dict[str, Any]], *, now: datetime) -> int:
    """Independently of the IOC: the commune's open dossiers (any field) past their due time."""
    return sum(
        1
        for d in truth
        if current_commune(d) == COMMUNE
        and d["TrangThaiHoSo"] not in CANCELLED
        and d.get("NgayHenTra")
        and parse(d["NgayHenTra"]) < now
        and parse(d["NgayTiepNhan"]) < now
        and not d.get("NgayKetThucXuLy")
    )


async def test_a_flapping_kpi_reopens_its_one_incident_on_every_relapse(
    settings: Settings, ctx: object
) -> None:
    # Three short surges of late land dossiers two weeks apart: the commune's open overdue
    # dossiers rise over the warn level two days after each, and fall back under the recovery
    # level within the fortnight (the seed fixes the counts, checked against the upstream data).
    simulator_app = create_simulator(seed=5, rate_per_day=20, history_days=3, start=START, speed=0)
    simulator = simulator_app.state.simulator
    app = create_app(
        settings.model_copy(update={"incident_default_rules": False}), clock=simulator.now
    )
    async with (
        serve_app(simulator_app) as sim_url,
        serve_app(app) as ioc_url,
        httpx.AsyncClient(base_url=ioc_url, timeout=60) as http,
        httpx.AsyncClient(base_url=sim_url) as sim,
    ):
        rule = {
            "name": "overdue-in-bien-hoa",
            "kind": "kpi_threshold",
            "kpi": "onestop.overdue_open",
            "unit_code": COMMUNE,
            "warn": 25,
            "recovery": 10,
            "pending_evaluations": 1,
            "quiet_minutes": 60,
            "relapse_minutes": 7 * 24 * 60,
        }
        created = await http.post("/api/v1/incident-rules", json=rule)
        assert created.status_code == 201, created.text
        connector = await http.post(
            "/api/v1/connectors",
            json={"name": "motcua", "kind": "onestop", "config": {"base_url": sim_url}},
        )
        run = f"/api/v1/connectors/{connector.json()['id']}/run"

        async def tick(seconds: float) -> float:
            """Move time, poll the upstream, let the time-driven KPI refresh and the rules
            run; the commune's overdue count, equal to the upstream's."""
            await sim.post("/_sim/advance", json={"seconds": seconds})
            assert (await http.post(run)).json()["ok"]
            await refresh_now_based(app.state.ctx)
            assert (await http.post("/api/v1/incidents/evaluate")).status_code == 200
            params = {"kpi": "onestop.overdue_open", "unit": COMMUNE}
            (read,) = (await http.get("/api/v1/kpis", params=params)).json()
            now = simulator.now()
            assert read["value"] == overdue_in_commune(simulator.dossiers_as_of(now), now=now)
            return read["value"]

        async def incidents() -> list[dict[str, Any]]:
            every = [("status", s) for s in ("open", "acknowledged", "resolved")]
            return (await http.get("/api/v1/incidents", params=every)).json()["items"]

        assert await tick(0) <= 10 and await incidents() == []
        breaches: list[float] = []
        recoveries: list[float] = []
        for cycle in range(3):
            started = await sim.post(
                "/_sim/scenario",
                json={"commune": COMMUNE, "per_day": 150, "late_rate": 1.0, "hours": 8},
            )
            assert started.status_code == 200, started.text
            breaches.append(await tick(2 * 86400))
            found = await incidents()
            assert len(found) == 1, found  # opened, or re-opened: never a second one
            incident = found[0]
            assert (incident["status"], incident["reopen_count"]) == ("open", cycle)
            if cycle == 2:
                break
            recoveries.append(await tick(12 * 86400 - 3600))
            assert (await incidents())[0]["status"] == "open"  # cleared, quiet for an hour
            await tick(3600)
            (resolved,) = await incidents()
            assert resolved["status"] == "resolved"
        assert min(breaches) > 25 and max(recoveries) <= 10, (breaches, recoveries)
        detail = (await http.get(f"/api/v1/incidents/{incident['id']}")).json()
        assert [e["kind"] for e in detail["timeline"]] == [
            "opened",
            "cleared",
            "resolved",
            "reopened",
            "cleared",
            "resolved",
            "reopened",
        ]
