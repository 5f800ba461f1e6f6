"""The school data simulator: realistic schools and calendar, a moving clock, exports."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from vietnam_provinces import ProvinceCode, Ward

from connectors.education.catalog import Level, SchoolCalendar
from connectors.education.simulator import CSV_HEADER, Simulator, local_date
from tests.connectors.education.support import START, Upstream

BASE: dict[str, Any] = {"seed": 3, "history_days": 5, "start": START, "speed": 0}


def make_simulator(**overrides: Any) -> Simulator:
    return Simulator(**(BASE | overrides))


def test_schools_are_a_few_hundred_of_every_level_in_real_communes() -> None:
    simulator = make_simulator()
    communes = {f"{int(w.code):05d}" for w in Ward.iter_by_province(ProvinceCode(75))}

    levels = Counter(school.level for school in simulator.schools)
    assert 300 <= len(simulator.schools) <= 700
    assert set(levels) == set(Level)
    assert {school.commune_code for school in simulator.schools} <= communes
    assert len({school.code for school in simulator.schools}) == len(simulator.schools)
    assert all(school.name.startswith("Trường ") for school in simulator.schools)


@pytest.mark.parametrize(
    ("level", "low", "high"),
    [(Level.PRESCHOOL, 9, 18), (Level.PRIMARY, 17, 28), (Level.UPPER_SECONDARY, 14, 24)],
    ids=["preschool", "primary", "upper-secondary"],
)
def test_pupils_per_teacher_are_realistic_by_level(level: Level, low: float, high: float) -> None:
    schools = [s for s in make_simulator().schools if s.level is level]

    ratio = sum(s.enrolled for s in schools) / sum(s.teachers for s in schools)

    assert low <= ratio <= high


@pytest.mark.parametrize(
    "day",
    [
        date(2025, 11, 16),  # Sunday
        date(2025, 9, 2),  # National Day
        date(2026, 2, 12),  # the week before Tết
        date(2026, 2, 19),  # Tết
        date(2025, 7, 15),  # summer break
        date(2026, 5, 1),  # Labour Day
    ],
    ids=["sunday", "national-day", "before-tet", "tet", "summer", "labour-day"],
)
def test_no_attendance_when_schools_are_closed(day: date) -> None:
    assert make_simulator().factory.day(day) == []


def test_only_schools_with_saturday_classes_report_on_saturday() -> None:
    simulator = make_simulator()

    rows = simulator.factory.day(date(2025, 11, 15))

    assert rows and all(row.school.saturday for row in rows)
    assert len(rows) < len(simulator.factory.day(date(2025, 11, 14))) / 3


def test_first_school_day_after_tet_is_a_day_after_a_break() -> None:
    calendar = SchoolCalendar()
    _, last = calendar.tet_break(2026)

    assert calendar.after_break(last + timedelta(days=1))
    assert not calendar.after_break(date(2025, 11, 18))


def test_attendance_is_mostly_93_to_98_percent_and_dips_somewhere() -> None:
    simulator = make_simulator(history_days=30)
    rows = simulator.attendance_as_of(simulator.now())
    by_day: dict[str, list[int]] = {}
    for row in rows:
        totals = by_day.setdefault(row["date"], [0, 0])
        totals[0] += row["present"]
        totals[1] += row["enrolled"]

    daily = [present / enrolled for present, enrolled in by_day.values()]
    assert all(0.92 <= rate <= 0.98 for rate in daily)
    assert min(row["present"] / row["enrolled"] for row in rows) < 0.85  # outbreaks, downpours


def test_a_day_appears_when_schools_report_in_the_afternoon() -> None:
    simulator = make_simulator()
    wednesday = START.date().isoformat()

    morning = simulator.attendance_as_of(START)
    evening = simulator.attendance_as_of(START + timedelta(hours=8))  # 18:00

    assert not any(row["date"] == wednesday for row in morning)
    reported = [row for row in evening if row["date"] == wednesday]
    assert len(reported) == len(simulator.factory.day(START.date()))
    assert all(14 <= datetime.fromisoformat(row["updated_at"]).hour < 18 for row in reported)


def test_corrections_come_later_the_same_week_with_a_new_update_time() -> None:
    simulator = make_simulator(history_days=14)
    rows = simulator.attendance_as_of(simulator.now())

    corrected = [row for row in rows if row["version"] > 1]
    assert 0.03 < len(corrected) / len(rows) < 0.15
    for row in corrected:
        day, updated = date.fromisoformat(row["date"]), datetime.fromisoformat(row["updated_at"])
        assert day <= updated.date() <= day + timedelta(days=5 - day.weekday())


def test_the_feed_is_ordered_by_update_time_school_and_day() -> None:
    rows = make_simulator().attendance_as_of(START)

    keys = [(datetime.fromisoformat(r["updated_at"]), r["school_code"], r["date"]) for r in rows]
    assert keys == sorted(keys)


def test_same_seed_same_data_and_another_seed_other_data() -> None:
    one, two, other = make_simulator(), make_simulator(), make_simulator(seed=4)

    assert one.attendance_as_of(START) == two.attendance_as_of(START)
    assert one.attendance_as_of(START) != other.attendance_as_of(START)


def test_surge_below_one_means_fewer_schools_report() -> None:
    simulator = make_simulator()
    simulator.faults.surge = 0.5

    evening = simulator.attendance_as_of(START + timedelta(hours=8))

    reported = [row for row in evening if row["date"] == START.date().isoformat()]
    assert 0.35 < len(reported) / len(simulator.factory.day(START.date())) < 0.65


def test_catch_up_clock_starts_history_days_back_and_never_runs_ahead() -> None:
    simulator = Simulator(seed=3, history_days=2, catch_up=True, speed=1e9)
    time.sleep(0.01)  # 10⁷ simulated seconds: far more than the two days to replay

    assert abs((simulator.now() - datetime.now(UTC)).total_seconds()) < 5
    assert simulator.first_day == local_date(datetime.now(UTC) - timedelta(days=4))


# ---------------------------------------------------------------- HTTP


async def test_schools_route_lists_every_school_with_its_figures(source: Upstream) -> None:
    body = (await source.control.get("/api/v1/schools")).json()

    assert len(body["items"]) == len(source.simulator.schools)
    first = body["items"][0]
    assert set(first) == {
        "code", "name", "level", "commune_code", "commune_name", "enrolled", "classes",
        "teachers", "saturday_classes", "updated_at",
    }  # fmt: skip
    assert first["level"] in {level.value for level in Level}


async def test_attendance_route_refuses_bad_parameters_with_400(source: Upstream) -> None:
    bad_since = await source.control.get("/api/v1/attendance", params={"since": "yesterday"})
    naive = await source.control.get("/api/v1/attendance", params={"since": "2025-11-18T10:00"})
    bad_token = await source.control.get("/api/v1/attendance", params={"page_token": "x"})

    assert [r.status_code for r in (bad_since, naive, bad_token)] == [400, 400, 400]
    assert "not an ISO 8601 time" in bad_since.json()["detail"]


async def test_export_is_an_excel_style_csv_with_validators(source: Upstream) -> None:
    response = await source.control.get("/exports/attendance-2025-11-18.csv")

    assert response.status_code == 200
    assert response.content.startswith(b"\xef\xbb\xbf" + ",".join(CSV_HEADER).encode() + b"\r\n")
    assert response.headers["last-modified"] == "Tue, 18 Nov 2025 11:00:00 GMT"
    again = await source.control.get(
        "/exports/attendance-2025-11-18.csv", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    second_line = response.content.decode("utf-8-sig").split("\r\n")[1]
    assert ",18/11/2025," in second_line


@pytest.mark.parametrize(
    "name",
    [
        "attendance-2025-11-16.csv",  # a Sunday
        "attendance-2025-11-19.csv",  # today: exported at 18:00
        "attendance-2025-02-30.csv",
        "report.csv",
    ],
)
async def test_missing_exports_answer_404(source: Upstream, name: str) -> None:
    assert (await source.control.get(f"/exports/{name}")).status_code == 404


async def test_export_listing_grows_when_the_evening_export_runs(source: Upstream) -> None:
    before = (await source.control.get("/exports/")).json()["files"]
    await source.advance(8 * 3600)
    after = (await source.control.get("/exports/")).json()["files"]

    assert [f["name"] for f in after] == [f["name"] for f in before] + ["attendance-2025-11-19.csv"]
    assert set(after[0]) == {"name", "size", "last_modified", "etag", "url"}
