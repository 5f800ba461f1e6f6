"""The FHIR simulator: realistic hospitals, versioned encounters, beds, stable opaque paging."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.fhir.simulator import FHIR_JSON, LOCAL, Simulator, create_app
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local
LIFECYCLES = {
    "AMB": {
        ("arrived", "in-progress", "finished"),
        ("planned", "arrived", "in-progress", "finished"),
        ("planned", "cancelled"),
        ("arrived", "cancelled"),
        ("planned", "arrived", "cancelled"),
    },
    "EMER": {
        ("arrived", "triaged", "in-progress", "finished"),
        ("arrived", "triaged", "cancelled"),
    },
    "IMP": {
        ("arrived", "in-progress", "finished"),
        ("planned", "arrived", "in-progress", "finished"),
        ("planned", "cancelled"),
    },
}


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    return Simulator(seed=7, scale=0.06, history_days=10, start=START, speed=0)


@pytest.fixture(scope="module")
def everything(simulator: Simulator) -> list[dict[str, Any]]:
    return simulator.encounters_as_of(START)


def minutes(resource: dict[str, Any], first: str, then: str) -> float:
    starts = {
        h["status"]: datetime.fromisoformat(h["period"]["start"]) for h in resource["statusHistory"]
    }
    return (starts[then] - starts[first]).total_seconds() / 60


def test_every_encounter_follows_a_lifecycle_and_counts_its_versions(
    everything: list[dict[str, Any]],
) -> None:
    for resource in everything:
        statuses = tuple(h["status"] for h in resource["statusHistory"])
        done = statuses[-1] in ("finished", "cancelled")
        assert any(
            lifecycle[: len(statuses)] == statuses
            for lifecycle in LIFECYCLES[resource["class"]["code"]]
        )
        assert done or statuses[-1] == resource["status"]
        assert resource["meta"]["versionId"] == str(len(statuses))
        assert resource["meta"]["lastUpdated"] == resource["statusHistory"][-1]["period"]["start"]
        assert resource["meta"]["lastUpdated"].endswith("+07:00")


def test_outpatient_visits_crowd_weekday_mornings(everything: list[dict[str, Any]]) -> None:
    arrivals = [
        datetime.fromisoformat(r["period"]["start"]).astimezone(LOCAL)
        for r in everything
        if r["class"]["code"] == "AMB" and "period" in r
    ]
    by_weekday = Counter(a.weekday() for a in arrivals)

    assert sum(6 <= a.hour < 12 for a in arrivals) / len(arrivals) > 0.6
    assert by_weekday[0] > by_weekday[3] > by_weekday[5] > by_weekday[6] > 0


def test_emergency_waits_are_minutes_with_a_long_tail_and_evenings_are_busiest(
    everything: list[dict[str, Any]],
) -> None:
    seen = [r for r in everything if r["class"]["code"] == "EMER" and r["status"] == "finished"]
    waits = [minutes(r, "arrived", "in-progress") for r in seen]
    hours = Counter(
        datetime.fromisoformat(r["period"]["start"]).astimezone(LOCAL).hour for r in seen
    )

    assert 8 < statistics.median(waits) < 25
    assert 0.02 < sum(w > 60 for w in waits) / len(waits) < 0.2
    assert sum(hours[h] for h in range(18, 22)) > 2 * sum(hours[h] for h in range(2, 6))


def test_inpatient_stays_last_days_and_some_are_referred_out(
    everything: list[dict[str, Any]],
) -> None:
    stays = [r for r in everything if r["class"]["code"] == "IMP" and r["status"] == "finished"]
    days = [
        (
            datetime.fromisoformat(r["period"]["end"])
            - datetime.fromisoformat(r["period"]["start"])
        ).days
        for r in stays
    ]
    dispositions = Counter(
        r["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] for r in stays
    )

    assert 3 <= statistics.mean(days) <= 9
    assert 0.02 < dispositions["other-hcf"] / len(stays) < 0.12
    assert dispositions["home"] / len(stays) > 0.8


def test_bed_occupancy_stays_mostly_between_70_and_95_percent(simulator: Simulator) -> None:
    rates: dict[str, list[float]] = {}
    for hours in range(0, 10 * 24, 12):
        for facility, counts in simulator.bed_census(START - timedelta(hours=hours)).items():
            available = sum(counts.values()) - counts.get("C", 0)
            rates.setdefault(facility, []).append(100 * counts.get("O", 0) / available)

    assert len(rates) == 7
    assert all(70 <= statistics.mean(r) <= 95 for r in rates.values())
    assert any(max(r) > 95 for r in rates.values())


def test_occupied_beds_match_inpatients_in_progress_on_a_bed(simulator: Simulator) -> None:
    census = simulator.bed_census(START)
    on_beds = Counter(
        r["serviceProvider"]["reference"].split("/")[1]
        for r in simulator.encounters_as_of(START)
        if r["class"]["code"] == "IMP" and r["status"] == "in-progress" and "location" in r
    )

    assert on_beds == Counter({facility: counts.get("O", 0) for facility, counts in census.items()})


def test_same_seed_same_history_and_the_future_unfolds_without_rewriting_it() -> None:
    one = Simulator(seed=5, scale=0.03, history_days=2, start=START, speed=0)
    two = Simulator(seed=5, scale=0.03, history_days=2, start=START, speed=0)
    before = one.encounters_as_of(START)

    assert before == two.encounters_as_of(START)
    later = one.encounters_as_of(START + timedelta(days=1))
    old = {r["id"]: r["meta"]["lastUpdated"] for r in before}
    changed = [r for r in later if r["meta"]["lastUpdated"] != old.get(r["id"])]
    assert changed and all(
        datetime.fromisoformat(r["meta"]["lastUpdated"]) > START for r in changed
    )


async def test_paging_links_are_opaque_and_stable_while_the_clock_moves() -> None:
    app = create_app(seed=3, scale=0.03, history_days=2, start=START, speed=0)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        first = await http.get("/Encounter", params={"_count": 50, "_sort": "_lastUpdated"})
        await http.post("/_sim/advance", json={"seconds": 6 * 3600})
        pages = [first.json()]
        while nxt := [link["url"] for link in pages[-1]["link"] if link["relation"] == "next"]:
            assert "_getpages=" in nxt[0] and "_lastUpdated" not in nxt[0]
            pages.append((await http.get(nxt[0])).json())
        newer = await http.get("/Encounter", params={"_lastUpdated": "gt2025-11-19T10:00:00+07:00"})
        gone = await http.get("/", params={"_getpages": "nope"})

    assert first.headers["content-type"].startswith(FHIR_JSON)
    served = [e["resource"]["id"] for page in pages for e in page["entry"]]
    assert len(served) == len(set(served)) == pages[0]["total"]
    assert all(page["meta"]["lastUpdated"] == "2025-11-19T10:00:00+07:00" for page in pages)
    assert newer.json()["total"] > 0
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"


async def test_bad_search_parameters_answer_an_operation_outcome() -> None:
    app = create_app(seed=3, scale=0.03, history_days=1, start=START, speed=0)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        naive = await http.get("/Encounter", params={"_lastUpdated": "gt2025-11-19T10:00:00"})
        sort = await http.get("/Encounter", params={"_sort": "status"})
        beds = await http.get("/Location", params={"physical-type": "bd", "_count": 1000})
        orgs = await http.get("/Organization")

    assert naive.status_code == 400
    assert naive.json()["issue"][0]["diagnostics"].endswith("needs a time zone, e.g. +07:00 or Z")
    assert sort.status_code == 400 and sort.json()["issue"][0]["code"] == "invalid"
    codes = {e["resource"]["physicalType"]["coding"][0]["code"] for e in beds.json()["entry"]}
    assert codes == {"bd"}
    assert {e["resource"]["id"] for e in orgs.json()["entry"]} >= {
        "bvdk-dong-nai",
        "bvdk-thong-nhat",
        "bv-nhi-dong-nai",
    }
