"""The Open311 simulator: deterministic realistic data, a moving clock, GeoReport v2 queries."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from vietnam_provinces import ProvinceCode, Ward

from connectors.open311.catalog import SERVICES
from connectors.open311.simulator import Simulator, WorkCalendar, create_app
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local
DEFAULTS: dict[str, Any] = {"seed": 7, "history_days": 14, "start": START, "speed": 0}
JURISDICTION = {"jurisdiction_id": "dongnai.gov.vn"}
SLA = {service.code: service.sla_working_days for service in SERVICES}


def make_simulator(**overrides: Any) -> Simulator:
    return Simulator(**(DEFAULTS | overrides))


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


@asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    app = create_app(**(DEFAULTS | overrides))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        yield app.state.simulator, http


# ---------------------------------------------------------------- data


def test_the_same_seed_gives_the_same_requests_and_another_seed_others() -> None:
    first = make_simulator(seed=5).requests_as_of()
    again = make_simulator(seed=5).requests_as_of()
    other = make_simulator(seed=6).requests_as_of()

    assert len(first) > 500
    assert first == again
    assert first != other


def test_requests_are_in_real_communes_inside_the_province() -> None:
    codes = {f"{int(w.code):05d}" for w in Ward.iter_by_province(ProvinceCode(75))}
    requests = make_simulator().requests_as_of()

    assert {r["ward_code"] for r in requests if "ward_code" in r} <= codes
    assert all(10.4 < r["lat"] < 12.4 and 106.3 < r["long"] < 107.7 for r in requests)
    without = [r for r in requests if "ward_code" not in r]
    assert 0.1 < len(without) / len(requests) < 0.25
    assert all(r["requested_datetime"].endswith("+07:00") for r in requests)


def test_expected_time_is_the_service_sla_in_working_days_at_five_pm() -> None:
    calendar = WorkCalendar()
    for r in make_simulator().requests_as_of():
        requested = at(r["requested_datetime"])
        due = calendar.add_working_days(requested.date(), SLA[r["service_code"]])
        assert r["expected_datetime"] == f"{due:%Y-%m-%d}T17:00:00+07:00", r


def test_most_requests_close_within_their_sla_some_late_and_a_few_stay_open_long() -> None:
    simulator = make_simulator(history_days=45)
    requests = simulator.requests_as_of()
    now = simulator.now()
    due = [r for r in requests if at(r["expected_datetime"]) < now]
    closed = [r for r in due if r["status"] == "closed"]
    on_time = [r for r in closed if r["updated_datetime"] <= r["expected_datetime"]]
    overdue_open = [r for r in due if r["status"] == "open"]

    assert 0.75 < len(on_time) / len(due) < 0.92
    assert len(closed) > len(on_time)
    assert 0.01 < len(overdue_open) / len(due) < 0.12
    assert all("đôn đốc" in r["status_notes"] for r in overdue_open if r["status"] == "open")


def test_categories_vary_with_commune_and_provincial_agencies() -> None:
    requests = make_simulator().requests_as_of()
    codes = Counter(r["service_code"] for r in requests)
    agencies = {r["agency_responsible"] for r in requests}

    assert set(codes) == set(SLA)
    assert codes["MT01"] > codes["AN01"]
    assert {"Sở Xây dựng", "Sở Y tế", "Công an tỉnh Đồng Nai"} <= agencies
    assert any(a.startswith("UBND phường") for a in agencies)


def test_a_surge_multiplies_new_requests_from_the_moment_it_is_set() -> None:
    plain, surged = make_simulator(history_days=1), make_simulator(history_days=1)
    surged.set_surge(5)
    for simulator in (plain, surged):
        simulator.clock.advance(86400)

    def made_after_start(simulator: Simulator) -> set[str]:
        return {
            r["service_request_id"]
            for r in simulator.requests_as_of()
            if at(r["requested_datetime"]) > START
        }

    before = {r["service_request_id"] for r in plain.requests_as_of(START)}
    assert before == {r["service_request_id"] for r in surged.requests_as_of(START)}
    assert made_after_start(plain) < made_after_start(surged)
    assert len(made_after_start(surged)) > 3.5 * len(made_after_start(plain))


def test_catch_up_replays_history_and_never_runs_ahead_of_real_time() -> None:
    replaying = Simulator(history_days=2, catch_up=True, speed=10)
    finished = Simulator(history_days=2, catch_up=True, speed=1e12)
    real_now = datetime.now(UTC)

    assert abs(replaying.now() - (real_now - timedelta(days=2))) < timedelta(minutes=1)
    assert real_now - finished.now() < timedelta(minutes=1)
    assert finished.now() <= datetime.now(UTC)


# ---------------------------------------------------------------- HTTP


async def test_service_list_has_the_georeport_fields() -> None:
    async with running(history_days=1) as (_, http):
        response = await http.get("/services.json", params=JURISDICTION)

    services = response.json()
    assert response.status_code == 200
    assert set(services[0]) == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert {s["service_code"] for s in services} == set(SLA)
    assert {(s["metadata"], s["type"]) for s in services} == {(False, "realtime")}


async def test_requests_are_filtered_by_requested_time_status_code_and_id() -> None:
    async with running() as (simulator, http):
        truth = simulator.requests_as_of()
        window = {
            "start_date": "2025-11-10T00:00:00+07:00",
            "end_date": "2025-11-12T23:59:59+07:00",
        }
        closed = await http.get(
            "/requests.json", params=JURISDICTION | window | {"status": "closed"}
        )
        roads = await http.get("/requests.json", params=JURISDICTION | {"service_code": "GT01"})
        wanted = [truth[3]["service_request_id"], truth[7]["service_request_id"]]
        by_id = await http.get(
            "/requests.json",
            params=JURISDICTION | {"service_request_id": ",".join(wanted), "status": "open"},
        )
        single = await http.get(f"/requests/{wanted[0]}.json", params=JURISDICTION)

    expected = [
        r
        for r in truth
        if "2025-11-10" <= r["requested_datetime"][:10] <= "2025-11-12" and r["status"] == "closed"
    ]
    assert closed.json() == expected
    assert roads.json() == [r for r in truth if r["service_code"] == "GT01"]
    assert by_id.json() == [truth[3], truth[7]]  # other parameters are ignored
    assert single.json() == [truth[3]]


async def test_default_window_is_the_last_90_days_capped_at_max_results() -> None:
    async with running(history_days=100, rate_per_day=20, max_results=5000) as (simulator, http):
        everything = await http.get("/requests.json", params=JURISDICTION)
        truth = simulator.requests_as_of()
    async with running(history_days=3, max_results=25) as (_, http):
        capped = await http.get("/requests.json", params=JURISDICTION)

    served = everything.json()
    assert served == [r for r in truth if at(r["requested_datetime"]) >= START - timedelta(days=90)]
    assert len(served) < len(truth)
    assert len(capped.json()) == 25
    dates = [r["requested_datetime"] for r in capped.json()]
    assert dates == sorted(dates, reverse=True)  # newest first


@pytest.mark.parametrize(
    ("params", "status", "description"),
    [
        pytest.param({}, 400, "jurisdiction_id is required", id="no-jurisdiction"),
        pytest.param(
            {"jurisdiction_id": "hanoi.gov.vn"},
            400,
            "jurisdiction_id 'hanoi.gov.vn' is not served here",
            id="wrong-jurisdiction",
        ),
        pytest.param(
            JURISDICTION
            | {"start_date": "2025-06-01T00:00:00+07:00", "end_date": "2025-11-01T00:00:00+07:00"},
            400,
            "start_date and end_date may not span more than 90 days",
            id="span",
        ),
        pytest.param(
            JURISDICTION | {"start_date": "2025-11-01T00:00:00"},
            400,
            "start_date needs a UTC offset, e.g. 2025-11-19T08:00:00+07:00",
            id="naive",
        ),
        pytest.param(
            JURISDICTION | {"end_date": "hôm qua"},
            400,
            "end_date 'hôm qua' is not an ISO 8601 time",
            id="not-a-time",
        ),
        pytest.param(
            JURISDICTION | {"status": "pending"},
            400,
            "status 'pending' is not open or closed",
            id="status",
        ),
    ],
)
async def test_bad_queries_get_an_open311_error_array(
    params: dict[str, str], status: int, description: str
) -> None:
    async with running(history_days=1) as (_, http):
        response = await http.get("/requests.json", params=params)

    assert response.status_code == status
    assert response.json() == [{"code": status, "description": description}]


async def test_unknown_request_id_gets_404_and_keys_are_checked_when_configured() -> None:
    async with running(history_days=1, api_key="s3cret") as (_, http):
        unknown = await http.get(
            "/requests/PAKN-000000-0000.json", params=JURISDICTION | {"api_key": "s3cret"}
        )
        missing = await http.get("/requests.json", params=JURISDICTION)
        wrong = await http.get("/services.json", params=JURISDICTION | {"api_key": "x"})

    assert unknown.status_code == 404
    assert unknown.json()[0]["description"] == "service request 'PAKN-000000-0000' not found"
    assert missing.json() == [{"code": 401, "description": "api_key is required"}]
    assert wrong.json() == [{"code": 403, "description": "api_key is not valid"}]


async def test_requests_close_as_the_clock_advances() -> None:
    async with running() as (simulator, http):
        before = {r["service_request_id"]: r for r in simulator.requests_as_of()}
        jump = await http.post("/_sim/advance", json={"seconds": 3 * 86400})
        response = await http.get("/requests.json", params=JURISDICTION)
        after = {r["service_request_id"]: r for r in response.json()}

    assert jump.json()["now"] == "2025-11-22T03:00:00+00:00"
    assert set(before) < set(after)
    closed_since = [
        i for i in before if before[i]["status"] == "open" and after[i]["status"] == "closed"
    ]
    assert len(closed_since) > 50
    assert all(after[i]["updated_datetime"] > before[i]["updated_datetime"] for i in closed_since)
    assert all(after[i]["status"] == "closed" for i in before if before[i]["status"] == "closed")


async def test_malformed_items_rotate_through_the_documented_faults() -> None:
    async with running(history_days=3) as (simulator, http):
        await http.post("/_sim/faults", json={"malformed": 6})
        items = (await http.get("/requests.json", params=JURISDICTION)).json()
        truth = simulator.requests_as_of()
        left = (await http.get("/_sim/faults")).json()

    assert left["malformed"] == 0
    assert "service_request_id" not in items[0]
    assert items[1]["requested_datetime"] == truth[1]["requested_datetime"][:19]
    assert items[2]["status"] == "pending"
    assert "ward_code" not in items[3] and items[3]["address"] == "Gần chợ, ven đường lớn"
    assert items[4]["lat"] == "mười một độ bắc"
    assert "service_request_id" not in items[5]
    assert items[6:] == truth[6:]


async def test_fault_modes_answer_500_429_and_slowly_until_cleared() -> None:
    async with running(history_days=1) as (_, http):
        await http.post("/_sim/faults", json={"mode": "error"})
        failing = await http.get("/requests.json", params=JURISDICTION)
        await http.post("/_sim/faults", json={"mode": "rate_limited"})
        limited = await http.get("/requests.json", params=JURISDICTION)
        await http.post("/_sim/faults", json={"mode": None, "slow_seconds": 0.3})
        started = time.perf_counter()
        slow = await http.get("/requests.json", params=JURISDICTION)
        slow_seconds = time.perf_counter() - started
        await http.post("/_sim/faults", json={"slow_seconds": 0})
        healthy = await http.get("/requests.json", params=JURISDICTION)
        health = await http.get("/healthz")

    assert failing.status_code == 500
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "30")
    assert slow.status_code == 200 and slow_seconds >= 0.3
    assert healthy.status_code == 200
    assert health.json()["status"] == "ok"


def test_working_days_skip_weekends_and_the_national_day_holidays() -> None:
    calendar = WorkCalendar()

    assert calendar.add_working_days(date(2025, 8, 29), 1) == date(2025, 9, 3)  # 1–2 Sept off
    assert calendar.add_working_days(date(2025, 11, 22), 0) == date(2025, 11, 24)
    assert calendar.add_working_days(date(2025, 11, 19), 15) == date(2025, 12, 10)
