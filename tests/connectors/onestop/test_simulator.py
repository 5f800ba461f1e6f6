"""The one-stop-shop simulator: deterministic realistic data, a moving clock, keyset paging."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.onestop.catalog import FIELDS, LAND, PROCEDURES
from connectors.onestop.simulator import (
    LOCAL,
    TIME_FORMAT,
    LateLandSurge,
    Simulator,
    WorkCalendar,
    create_app,
    format_local,
)
from connectors.onestop.units import current_unit_codes, legacy_wards
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local
AFTER_NATIONAL_DAY = datetime(2025, 9, 10, 3, 0, tzinfo=UTC)  # 1–2 Sept 2025 were holidays
WORKING_DAYS = {p.code: p.working_days for p in PROCEDURES}
LIFECYCLE_RANK = {2: 0, 4: 1, 5: 1, 9: 2, 10: 3, 3: 4, 7: 4}


DEFAULTS: dict[str, Any] = {
    "seed": 7,
    "rate_per_day": 80,
    "history_days": 14,
    "start": START,
    "speed": 0,
}


def make_simulator(**overrides: Any) -> Simulator:
    return Simulator(**(DEFAULTS | overrides))


def local(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=LOCAL)


@asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    app = create_app(**(DEFAULTS | overrides))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
        yield app.state.simulator, http


async def read_all(
    http: httpx.AsyncClient,
    *,
    limit: int,
    between_pages: Callable[[], Awaitable[object]] | None = None,
) -> list[dict[str, Any]]:
    """Every item of every page, following `next` until the last page."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = await http.get("/api/v1/dossiers", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        if body["next"] is None:
            assert len(body["items"]) < limit
            return items
        if between_pages is not None:
            await between_pages()
        params = {"limit": limit, **body["next"]}


# ---------------------------------------------------------------- data


def test_the_same_seed_gives_the_same_dossiers() -> None:
    first = make_simulator(seed=5).dossiers_as_of(START)
    second = make_simulator(seed=5).dossiers_as_of(START)

    assert len(first) > 500
    assert first == second


def test_a_different_seed_gives_different_dossiers() -> None:
    first = make_simulator(seed=5).dossiers_as_of(START)
    second = make_simulator(seed=6).dossiers_as_of(START)

    assert first != second
    assert {d["MaTTHC"] for d in first} & {d["MaTTHC"] for d in second}


def test_late_dossiers_concentrate_in_land() -> None:
    simulator = make_simulator(rate_per_day=400, history_days=30)
    now = format_local(simulator.now())
    due = Counter[str]()
    late = Counter[str]()
    for d in simulator.dossiers_as_of(simulator.now()):
        if d["TrangThaiHoSo"] in (3, 7) or d["NgayHenTra"] > now:
            continue
        due[d["MaLinhVuc"]] += 1
        late[d["MaLinhVuc"]] += (d["NgayKetThucXuLy"] or now) > d["NgayHenTra"]

    other_late, other_due = late.total() - late[LAND], due.total() - due[LAND]
    assert 0.15 < late[LAND] / due[LAND] < 0.35
    assert 0.005 < other_late / other_due < 0.05
    assert (late[LAND] + late["G09-TN02"]) / late.total() > 0.7


def test_dossiers_are_received_in_office_hours_on_working_days_and_saturday_mornings() -> None:
    dossiers = make_simulator(start=AFTER_NATIONAL_DAY, history_days=20).dossiers_as_of(
        AFTER_NATIONAL_DAY
    )
    received = [local(d["NgayTiepNhan"]) for d in dossiers]
    per_day = Counter(moment.date() for moment in received)

    assert all("0730" <= f"{m:%H%M}" < "1700" for m in received)
    assert all(m.weekday() != 6 for m in received)
    assert per_day[date(2025, 9, 1)] == per_day[date(2025, 9, 2)] == 0
    saturdays = [n for day, n in per_day.items() if day.weekday() == 5]
    assert saturdays and max(saturdays) < 0.2 * per_day[date(2025, 9, 3)]
    assert all(f"{m:%H%M}" < "1130" for m in received if m.weekday() == 5)


def test_due_date_is_the_statutory_working_days_after_receipt_at_five_pm() -> None:
    calendar = WorkCalendar()
    dossiers = make_simulator(start=AFTER_NATIONAL_DAY, history_days=20).dossiers_as_of(
        AFTER_NATIONAL_DAY
    )
    plain = [d for d in dossiers if not d["LichSuBoSung"]]

    for d in plain:
        received = local(d["NgayTiepNhan"])
        days = WORKING_DAYS[d["MaTTHC"]] or (1 if received.hour >= 15 else 0)
        expected = calendar.add_working_days(received.date(), days)
        assert d["NgayHenTra"] == f"{expected:%Y%m%d}170000", d
    friday_one_day = [
        d
        for d in plain
        if d["NgayTiepNhan"].startswith("20250829") and WORKING_DAYS[d["MaTTHC"]] == 1
    ]
    assert friday_one_day
    assert {d["NgayHenTra"] for d in friday_one_day} == {"20250903170000"}  # after 1–2 Sept


def test_a_supplement_request_pauses_the_dossier_and_extends_its_due_date() -> None:
    simulator = make_simulator(rate_per_day=200)
    dossier = next(
        d
        for d in simulator.dossiers(START)
        if any(change.get("TrangThaiHoSo") == 5 for change in d.changes) and d.times[-1] < START
    )
    asked = next(i for i, c in enumerate(dossier.changes) if c.get("TrangThaiHoSo") == 5)

    paused, resumed = dossier.version(asked), dossier.version(asked + 1)

    assert (paused["TrangThaiHoSo"], paused["LichSuBoSung"]) == (5, [])
    assert resumed["TrangThaiHoSo"] == 4
    [entry] = resumed["LichSuBoSung"]
    assert entry["NgayYeuCauBoSung"] == paused["NgayCapNhat"]
    assert entry["NgayHenTraTruoc"] == paused["NgayHenTra"]
    assert entry["NgayHenTraMoi"] == resumed["NgayHenTra"] > paused["NgayHenTra"]


def test_outcomes_include_early_late_withdrawn_refused_and_apologies() -> None:
    dossiers = make_simulator(rate_per_day=400, history_days=30).dossiers_as_of(START)
    ended = [d for d in dossiers if d["NgayKetThucXuLy"]]
    statuses = Counter(d["TrangThaiHoSo"] for d in dossiers)
    late = [d for d in ended if d["NgayKetThucXuLy"] > d["NgayHenTra"]]

    assert sum(d["NgayKetThucXuLy"][:8] < d["NgayHenTra"][:8] for d in ended) > len(ended) / 3
    assert statuses[3] and statuses[7] and statuses[5] and statuses[9] and statuses[10]
    assert 0.3 < sum(d["CoPhieuXinLoi"] for d in late) / len(late) < 0.9
    assert set(Counter(d["KenhThucHien"] for d in dossiers)) == {1, 2, 3}
    assert {d["MaLinhVuc"] for d in dossiers} == set(FIELDS)


def test_catch_up_replays_history_and_never_runs_ahead_of_real_time() -> None:
    replaying = Simulator(history_days=2, catch_up=True, speed=10)
    finished = Simulator(history_days=2, catch_up=True, speed=1e12)
    real_now = datetime.now(UTC)

    assert abs(replaying.now() - (real_now - timedelta(days=2))) < timedelta(minutes=1)
    assert finished.now() <= datetime.now(UTC)
    assert real_now - finished.now() < timedelta(minutes=1)
    assert replaying.first_day == (real_now - timedelta(days=4)).astimezone(LOCAL).date()


def test_a_share_of_dossiers_carry_the_pre_2025_code_of_a_merged_ward() -> None:
    simulator = make_simulator()
    dossiers = simulator.dossiers_as_of(START)
    communes = {f"{c.code:05d}" for c in simulator.factory.communes}
    old = [d for d in dossiers if d["MaDiaBan"] not in communes]

    assert 0.03 < len(old) / len(dossiers) < 0.07
    assert all(d["MaDiaBan"] not in current_unit_codes() for d in old)
    assert {legacy_wards()[d["MaDiaBan"]].current_code for d in old} <= communes
    assert all(d["TenDiaBan"] == legacy_wards()[d["MaDiaBan"]].name for d in old)
    assert not [
        d
        for d in make_simulator(legacy_code_share=0).dossiers_as_of(START)
        if d["MaDiaBan"] not in communes
    ]


def test_a_dossier_is_digitised_when_all_its_documents_are() -> None:
    dossiers = make_simulator().dossiers_as_of(START)

    for d in dossiers:
        documents = d["DanhSachGiayTo"]
        assert documents[0]["TenGiayTo"] == "Đơn đề nghị (tờ khai)"
        assert d["DuocSoHoa"] == all(doc["DuocSoHoa"] for doc in documents)
        assert all(doc["DuocSoHoa"] for doc in documents if doc["DuocLayTuKhoDMQG"])
    assert 0.75 < sum(d["DuocSoHoa"] for d in dossiers) / len(dossiers) < 0.9
    reused = sum(any(doc["DuocLayTuKhoDMQG"] for doc in d["DanhSachGiayTo"]) for d in dossiers)
    assert 0.3 < reused / len(dossiers) < 0.8


def test_an_electronic_result_comes_with_its_file_link() -> None:
    dossiers = make_simulator().dossiers_as_of(START)
    electronic = [d for d in dossiers if d["CoKetQuaDienTu"]]

    assert electronic
    for d in dossiers:
        links = [r["DuongDanTepTinKetQua"] for r in d["DanhSachGiayToKetQua"]]
        assert links == (
            [f"https://motcua.example.gov.vn/ketqua/{d['MaHoSo']}.pdf"]
            if d["CoKetQuaDienTu"]
            else []
        )


def received_between(simulator: Simulator, first: datetime, last: datetime) -> list[str]:
    return sorted(d.id for d in simulator.dossiers(last) if first <= d.received_at <= last)


def test_a_surge_multiplies_new_arrivals_and_leaves_earlier_ones_alone() -> None:
    steady, surging, again = (make_simulator(rate_per_day=100) for _ in range(3))
    for simulator in (surging, again):
        simulator.faults.surge = 2.5
    for simulator in (steady, surging, again):
        simulator.observe_faults()
        simulator.clock.advance(3 * 86400)
    before = (START - timedelta(days=14), START)
    after = (START, START + timedelta(days=3))

    assert received_between(surging, *before) == received_between(steady, *before)
    assert set(received_between(steady, *after)) < set(received_between(surging, *after))
    ratio = len(received_between(surging, *after)) / len(received_between(steady, *after))
    assert 2.2 < ratio < 2.8
    assert surging.dossiers_as_of(surging.now()) == again.dossiers_as_of(again.now())


def test_a_surge_below_one_thins_new_arrivals() -> None:
    steady, quiet = make_simulator(rate_per_day=100), make_simulator(rate_per_day=100)
    quiet.faults.surge = 0.5
    for simulator in (steady, quiet):
        simulator.observe_faults()
        simulator.clock.advance(3 * 86400)
    after = (START, START + timedelta(days=3))

    ratio = len(received_between(quiet, *after)) / len(received_between(steady, *after))
    assert 0.35 < ratio < 0.65


def test_late_land_surge_scenario_adds_late_land_dossiers_in_one_commune() -> None:
    steady, incident = make_simulator(), make_simulator()
    commune = f"{incident.factory.communes[10].code:05d}"
    incident.start_scenario(LateLandSurge(commune=commune, per_day=30, hours=48))
    for simulator in (steady, incident):
        simulator.clock.advance(40 * 86400)
    now = incident.now()

    extra = {d["MaHoSo"]: d for d in incident.dossiers_as_of(now)}
    for d in steady.dossiers_as_of(now):
        extra.pop(d["MaHoSo"])
    received = [local(d["NgayTiepNhan"]) for d in extra.values()]
    ended = [d for d in extra.values() if d["NgayKetThucXuLy"]]
    late = [d for d in ended if d["NgayKetThucXuLy"] > d["NgayHenTra"]]

    assert 40 < len(extra) < 80  # about 30 a weekday for the two days it ran
    assert all(START <= moment < START + timedelta(hours=48) for moment in received)
    assert {(d["MaLinhVuc"], d["MaDiaBan"]) for d in extra.values()} <= {
        (LAND, commune),
        *((LAND, w.code) for w in incident.factory.communes[10].predecessors),
    }
    assert len(late) / len(ended) > 0.75


# ---------------------------------------------------------------- HTTP


async def test_paging_to_exhaustion_returns_each_current_version_once_in_order() -> None:
    async with running() as (simulator, http):
        items = await read_all(http, limit=97)

        assert items == simulator.dossiers_as_of(simulator.now())
    keys = [(d["NgayCapNhat"], d["MaHoSo"]) for d in items]
    assert keys == sorted(set(keys))
    assert len({d["MaHoSo"] for d in items}) == len(items)


async def test_statuses_progress_as_the_clock_advances() -> None:
    async with running() as (simulator, http):
        before = {d["MaHoSo"]: d for d in await read_all(http, limit=1000)}
        jump = await http.post("/_sim/advance", json={"seconds": 3 * 86400})
        after = {d["MaHoSo"]: d for d in await read_all(http, limit=1000)}

        assert jump.json()["now"] == "2025-11-22T03:00:00+00:00"
        assert jump.json()["history_from"] == "2025-11-05"
        assert simulator.now() == START + timedelta(days=3)
    progressed = [i for i in before if after[i]["NgayCapNhat"] != before[i]["NgayCapNhat"]]

    assert set(before) < set(after)
    assert len(progressed) > 100
    for dossier_id in progressed:
        old, new = before[dossier_id], after[dossier_id]
        assert LIFECYCLE_RANK[new["TrangThaiHoSo"]] >= LIFECYCLE_RANK[old["TrangThaiHoSo"]]
        assert new["NgayCapNhat"] > old["NgayCapNhat"]


async def test_keyset_paging_misses_no_change_while_the_clock_advances() -> None:
    async with running(rate_per_day=150) as (simulator, http):

        async def two_hours_pass() -> None:
            await http.post("/_sim/advance", json={"seconds": 7200})

        served = await read_all(http, limit=200, between_pages=two_hours_pass)
        truth = simulator.dossiers_as_of(simulator.now())

    keys = [(d["NgayCapNhat"], d["MaHoSo"]) for d in served]
    latest = {d["MaHoSo"]: d for d in served}  # served in key order: the last one wins
    assert keys == sorted(set(keys))
    assert simulator.now() > START + timedelta(hours=4)
    assert len(served) > len(truth)  # some dossiers changed while we paged, and came again
    assert sorted(latest.values(), key=lambda d: (d["NgayCapNhat"], d["MaHoSo"])) == truth


async def test_the_first_page_of_a_30_day_history_at_400_a_day_is_a_full_page() -> None:
    async with running(rate_per_day=400, history_days=30) as (_, http):
        response = await http.get("/api/v1/dossiers")

    assert response.status_code == 200
    assert len(response.json()["items"]) == 200


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        pytest.param({"limit": 0}, 422, "greater than or equal to 1", id="limit-zero"),
        pytest.param({"limit": 1001}, 422, "less than or equal to 1000", id="limit-too-big"),
        pytest.param({"updated_after": "yesterday"}, 400, "not an ISO 8601", id="bad-time"),
        pytest.param(
            {"updated_after": "2025-11-19T08:00:00"}, 400, "needs a UTC offset", id="naive"
        ),
        pytest.param({"after_id": "X"}, 400, "after_id needs updated_after", id="lone-id"),
    ],
)
async def test_bad_query_parameters_get_a_4xx_with_a_message(
    params: dict[str, Any], status: int, message: str
) -> None:
    async with running(history_days=1) as (_, http):
        response = await http.get("/api/v1/dossiers", params=params)

    assert response.status_code == status
    assert message in response.text


async def test_updated_after_alone_skips_that_whole_second() -> None:
    async with running(history_days=2) as (simulator, http):
        truth = simulator.dossiers_as_of(simulator.now())
        pivot = local(truth[10]["NgayCapNhat"]).isoformat()
        response = await http.get("/api/v1/dossiers", params={"updated_after": pivot})

    first = response.json()["items"][0]
    assert first["NgayCapNhat"] > truth[10]["NgayCapNhat"]


async def test_malformed_items_rotate_through_the_documented_faults_and_keep_paging() -> None:
    async with running(history_days=3) as (simulator, http):
        knobs = await http.post("/_sim/faults", json={"malformed": 5})
        items = await read_all(http, limit=50)
        truth = simulator.dossiers_as_of(simulator.now())
        left = (await http.get("/_sim/faults")).json()

    assert knobs.json()["malformed"] == 5
    assert left["malformed"] == 0
    assert [d["NgayCapNhat"] for d in items] == [d["NgayCapNhat"] for d in truth]
    assert "MaHoSo" not in items[0]
    assert items[1]["NgayHenTra"] < items[1]["NgayTiepNhan"]
    assert items[2]["MaDiaBan"] == "99999"
    assert "T" in items[3]["NgayTiepNhan"]
    assert "MaHoSo" not in items[4]
    assert items[5:] == truth[5:]


async def test_fault_modes_answer_500_429_and_slowly_until_cleared() -> None:
    async with running(history_days=1) as (_, http):
        await http.post("/_sim/faults", json={"mode": "error"})
        failing = await http.get("/api/v1/dossiers")
        await http.post("/_sim/faults", json={"mode": "rate_limited"})
        limited = await http.get("/api/v1/dossiers")
        await http.post("/_sim/faults", json={"mode": "timeout", "timeout_seconds": 0.3})
        started = time.perf_counter()
        slow = await http.get("/api/v1/dossiers")
        slow_seconds = time.perf_counter() - started
        await http.post("/_sim/faults", json={"mode": None})
        healthy = await http.get("/api/v1/dossiers")
        health = await http.get("/healthz")

    assert failing.status_code == 500
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "30")
    assert slow.status_code == 200 and slow_seconds >= 0.3
    assert healthy.status_code == 200
    assert health.json()["status"] == "ok"


async def test_fault_knobs_update_partially_and_read_back() -> None:
    async with running(history_days=1) as (_, http):
        await http.post("/_sim/faults", json={"mode": "error", "timeout_seconds": 2})
        await http.post("/_sim/faults", json={"malformed": 3, "slow_seconds": 0.5})
        knobs = (await http.get("/_sim/faults")).json()
        unknown = await http.post("/_sim/faults", json={"mode": "explode"})

    assert knobs == {
        "mode": "error",
        "timeout_seconds": 2,
        "slow_seconds": 0.5,
        "retry_after_seconds": 30,
        "malformed": 3,
        "surge": 1.0,
    }
    assert unknown.status_code == 422


async def test_scenario_endpoint_starts_lists_and_stops_a_late_land_surge() -> None:
    async with running(history_days=1) as (simulator, http):
        commune = f"{simulator.factory.communes[0].code:05d}"
        started = await http.post("/_sim/scenario", json={"commune": commune, "per_day": 20})
        unknown = await http.post("/_sim/scenario", json={"commune": "99999"})
        await http.post("/_sim/advance", json={"seconds": 3600})
        stopped = (await http.delete("/_sim/scenario")).json()

    assert started.status_code == 200
    assert started.json()["name"] == "late_land_surge"
    assert started.json()["since"] == START.isoformat() and started.json()["until"] is None
    assert unknown.status_code == 422 and "not a current commune" in unknown.text
    assert [s["until"] for s in stopped] == [(START + timedelta(hours=1)).isoformat()]


async def test_a_surge_set_over_http_starts_at_the_simulated_moment_it_was_set() -> None:
    async with running(history_days=1) as (simulator, http):
        await http.post("/_sim/advance", json={"seconds": 3600})
        await http.post("/_sim/faults", json={"surge": 4})
        await http.post("/_sim/advance", json={"seconds": 3600})

        assert simulator.surge_at(START + timedelta(minutes=59)) == 1.0
        assert simulator.surge_at(START + timedelta(hours=1)) == 4.0


async def test_slow_seconds_delays_every_answer_and_it_still_succeeds() -> None:
    async with running(history_days=1) as (_, http):
        await http.post("/_sim/faults", json={"slow_seconds": 0.3})
        started = time.perf_counter()
        response = await http.get("/api/v1/dossiers", params={"limit": 5})
        elapsed = time.perf_counter() - started

    assert response.status_code == 200 and len(response.json()["items"]) == 5
    assert elapsed >= 0.3
