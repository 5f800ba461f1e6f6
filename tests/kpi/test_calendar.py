"""Tests of the Vietnamese working-day calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from ioc.kpi.calendar import WorkingCalendar, calendar_from_settings

VN = ZoneInfo("Asia/Ho_Chi_Minh")


def local(*args: int) -> datetime:
    """An aware datetime in Vietnamese local time."""
    return datetime(*args, tzinfo=VN)


@pytest.fixture
def calendar() -> WorkingCalendar:
    """A calendar without configured overrides."""
    return WorkingCalendar()


@pytest.mark.parametrize(
    "day",
    [date(2026, 3, 7), date(2026, 3, 8)],
    ids=["saturday", "sunday"],
)
def test_weekends_are_not_working_days(calendar: WorkingCalendar, day: date) -> None:
    assert not calendar.is_working_day(day)


@pytest.mark.parametrize(
    "day",
    [date(2026, 2, d) for d in range(16, 21)] + [date(2026, 11, 24)],
    ids=[f"tet-feb-{d}" for d in range(16, 21)] + ["culture-day-24-11"],
)
def test_public_holidays_of_2026_are_not_working_days(calendar: WorkingCalendar, day: date) -> None:
    assert not calendar.is_working_day(day)


def test_ordinary_weekday_is_a_working_day(calendar: WorkingCalendar) -> None:
    assert calendar.is_working_day(date(2026, 3, 9))


def test_configured_makeup_saturday_is_a_working_day() -> None:
    saturday = date(2026, 2, 7)
    assert WorkingCalendar(makeup_workdays=[saturday]).is_working_day(saturday)


def test_configured_extra_day_off_is_not_a_working_day() -> None:
    monday = date(2026, 3, 9)
    assert not WorkingCalendar(extra_days_off=[monday]).is_working_day(monday)


def test_day_both_worked_and_off_is_refused() -> None:
    day = date(2026, 2, 7)
    with pytest.raises(ValueError, match="both worked and off"):
        WorkingCalendar(makeup_workdays=[day], extra_days_off=[day])


@pytest.mark.parametrize(
    ("day", "count", "expected"),
    [
        (date(2026, 2, 13), 1, date(2026, 2, 23)),  # Fri before Tết → Mon after
        (date(2026, 2, 12), 3, date(2026, 2, 24)),
        (date(2026, 3, 6), 1, date(2026, 3, 9)),  # Fri → Mon
        (date(2026, 3, 5), 3, date(2026, 3, 10)),
        (date(2026, 3, 9), 0, date(2026, 3, 9)),  # working day itself
        (date(2026, 3, 7), 0, date(2026, 3, 9)),  # Saturday → next working day
        (date(2026, 12, 30), 2, date(2027, 1, 4)),  # across the year end and 1/1
        (date(2026, 1, 1), 248, date(2026, 12, 31)),  # 2026 has 248 working days
    ],
    ids=[
        "across-tet",
        "into-tet-and-out",
        "across-weekend",
        "thursday-plus-three",
        "zero-on-working-day",
        "zero-on-saturday",
        "across-new-year",
        "whole-year",
    ],
)
def test_add_working_days_skips_weekends_and_holidays(
    calendar: WorkingCalendar, day: date, count: int, expected: date
) -> None:
    assert calendar.add_working_days(day, count) == expected


def test_add_working_days_counts_makeup_saturday() -> None:
    calendar = WorkingCalendar(makeup_workdays=[date(2026, 3, 7)])
    assert calendar.add_working_days(date(2026, 3, 6), 1) == date(2026, 3, 7)


def test_add_working_days_refuses_negative_count(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError):
        calendar.add_working_days(date(2026, 3, 9), -1)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (local(2026, 3, 9, 8, 30), local(2026, 3, 9, 10, 30), 0.25),
        (local(2026, 3, 9, 11, 0), local(2026, 3, 9, 14, 0), 0.1875),  # lunch not counted
        (local(2026, 3, 9, 6, 0), local(2026, 3, 9, 20, 0), 1.0),  # whole office day
        (local(2026, 3, 9, 18, 0), local(2026, 3, 9, 22, 0), 0.0),  # after hours
        (local(2026, 3, 6, 16, 0), local(2026, 3, 9, 9, 0), 0.125 + 0.1875),  # Fri → Mon
        (local(2026, 3, 7, 9, 0), local(2026, 3, 8, 15, 0), 0.0),  # within a weekend
        (local(2026, 2, 13, 9, 30), local(2026, 2, 23, 9, 30), 1.0),  # across Tết
        (local(2026, 3, 9, 9, 0), local(2026, 3, 16, 9, 0), 5.0),  # one week
        (local(2026, 1, 5, 7, 30), local(2027, 1, 4, 7, 30), 247.0),  # a year, long span
    ],
    ids=[
        "within-one-morning",
        "across-lunch",
        "whole-day",
        "after-hours",
        "across-weekend",
        "within-weekend",
        "across-tet",
        "one-week",
        "one-year",
    ],
)
def test_working_days_between_counts_office_time(
    calendar: WorkingCalendar, start: datetime, end: datetime, expected: float
) -> None:
    assert calendar.working_days_between(start, end) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (local(2026, 3, 10, 9, 0), local(2026, 3, 9, 9, 0)),
        (local(2026, 3, 9, 9, 0), local(2026, 3, 9, 9, 0)),
    ],
    ids=["end-before-start", "end-equals-start"],
)
def test_working_days_between_is_zero_when_end_is_not_after_start(
    calendar: WorkingCalendar, start: datetime, end: datetime
) -> None:
    assert calendar.working_days_between(start, end) == 0.0


def test_working_days_between_converts_utc_to_local_dates(calendar: WorkingCalendar) -> None:
    # 2026-11-30T18:30Z is Tue 1 Dec 01:30 local; 2026-12-01T02:00Z is 1 Dec 09:00 local.
    start = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    end = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert calendar.working_days_between(start, end) == pytest.approx(1.5 / 8)


def test_working_days_between_refuses_naive_datetimes(calendar: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        calendar.working_days_between(datetime(2026, 3, 9, 8), datetime(2026, 3, 9, 9))


@pytest.mark.parametrize(
    ("now", "due", "working_days", "expected"),
    [
        (local(2026, 3, 9, 10, 0), local(2026, 3, 10, 16, 0), 1, True),  # due tomorrow
        (local(2026, 3, 9, 10, 0), local(2026, 3, 11, 9, 0), 1, False),  # in two days
        (local(2026, 3, 6, 10, 0), local(2026, 3, 9, 16, 0), 1, True),  # Fri → Mon
        (local(2026, 2, 13, 10, 0), local(2026, 2, 23, 16, 0), 1, True),  # Fri → after Tết
        (local(2026, 3, 9, 10, 0), local(2026, 3, 9, 9, 0), 1, False),  # already overdue
        (local(2026, 3, 9, 10, 0), local(2026, 3, 9, 16, 0), 0, True),  # due later today
        (
            datetime(2026, 3, 9, 3, 0, tzinfo=UTC),  # Mon 10:00 local
            datetime(2026, 3, 10, 17, 30, tzinfo=UTC),  # Wed 00:30 local
            1,
            False,
        ),
    ],
    ids=[
        "next-working-day",
        "beyond-horizon",
        "across-weekend",
        "across-tet",
        "overdue",
        "today-with-zero-days",
        "utc-due-falls-on-local-day-after-horizon",
    ],
)
def test_is_due_within_flags_dossiers_due_soon(
    calendar: WorkingCalendar, now: datetime, due: datetime, working_days: int, expected: bool
) -> None:
    assert calendar.is_due_within(now, due, working_days) is expected


def test_calendar_from_settings_returns_the_same_calendar_for_the_same_settings() -> None:
    first = calendar_from_settings([date(2026, 2, 7)], [])
    assert calendar_from_settings([date(2026, 2, 7)], []) is first
    assert calendar_from_settings([], []) is not first


def test_working_days_between_handles_decades_without_day_by_day_loops() -> None:
    # Not timed: a 30-year span must simply work through the per-year cache.
    calendar = WorkingCalendar()
    days = calendar.working_days_between(local(2000, 1, 3, 7, 30), local(2030, 1, 1, 7, 30))
    assert 7000 < days < 7600
