"""Vietnamese working-day calendar for dossier and feedback deadlines and resolution times."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

# Office hours of a state agency: 07:30–11:30 and 13:00–17:00, 8 hours in all.
# A partial day counts as the share of these hours that has elapsed, so a lunch break or a
# night adds nothing to a resolution time.
OFFICE_HOURS: tuple[tuple[time, time], ...] = ((time(7, 30), time(11, 30)), (time(13), time(17)))
_OFFICE_SECONDS = 8 * 3600


def _seconds(moment: time) -> int:
    """Seconds since local midnight."""
    return moment.hour * 3600 + moment.minute * 60 + moment.second


def _office_fraction(moment: time) -> float:
    """Share of the office day (0..1) that has elapsed at local clock time `moment`."""
    now = _seconds(moment) + moment.microsecond / 1_000_000
    elapsed = sum(
        max(0.0, min(now, _seconds(close)) - _seconds(open_)) for open_, close in OFFICE_HOURS
    )
    return elapsed / _OFFICE_SECONDS


class WorkingCalendar:
    """Vietnamese working days: Monday–Friday minus public holidays (PyPI `holidays`, Vietnam,
    which includes Tết, Hùng Kings, 30/4, 1/5, 2/9 (+ adjacent), substituted days off, and from
    2026 Vietnam Culture Day 24/11), plus configured make-up Saturdays (ngày làm bù, worked to
    bridge a holiday; `holidays` does not know them) and optional extra days off."""

    def __init__(
        self,
        *,
        makeup_workdays: Iterable[date] = (),
        extra_days_off: Iterable[date] = (),
        tz: ZoneInfo = LOCAL_TZ,
    ) -> None:
        self.makeup_workdays = frozenset(makeup_workdays)
        self.extra_days_off = frozenset(extra_days_off)
        if clash := self.makeup_workdays & self.extra_days_off:
            raise ValueError(f"days both worked and off: {sorted(clash)}")
        self.tz = tz
        # Sorted ordinals of the working days of each year, built on first use.
        self._working_ordinals: dict[int, list[int]] = {}

    def is_working_day(self, day: date) -> bool:
        """Whether `day` (a local date) is a working day."""
        return self._is_working(day, self._public_holidays(day.year))

    def add_working_days(self, day: date, count: int) -> date:
        """The `count`-th working day after `day`; 0 gives `day` if working, else the next one."""
        if count < 0:
            raise ValueError("count must be >= 0")
        # Looking for the k-th working day on or after `first`.
        first = day.toordinal() + (1 if count else 0)
        remaining = max(count, 1)
        year = date.fromordinal(first).year
        while True:
            ordinals = self._ordinals(year)
            index = bisect_left(ordinals, first)
            available = len(ordinals) - index
            if remaining <= available:
                return date.fromordinal(ordinals[index + remaining - 1])
            remaining -= available
            year += 1

    def working_days_between(self, start: datetime, end: datetime) -> float:
        """Elapsed working time from `start` to `end`, in working days (see `OFFICE_HOURS`).

        Whole working days between the local dates count 1 each; the first and last local days
        count the share of their 8 office hours inside [start, end] when they are working days.
        """
        if end <= start:
            return 0.0
        local_start, local_end = self._local(start), self._local(end)
        first, last = local_start.date(), local_end.date()
        # Working days in [first, last), minus the part of `first` before start, plus the part
        # of `last` before end; for a single day this is the share between the two.
        total = float(self._count_working(first, last))
        if self.is_working_day(first):
            total -= _office_fraction(local_start.time())
        if self.is_working_day(last):
            total += _office_fraction(local_end.time())
        return total

    def is_due_within(self, now: datetime, due: datetime, working_days: int) -> bool:
        """Whether `due` is not past and its local date is by the `working_days`-th working day."""
        # sắp đến hạn (due soon): the horizon is the end of that local day, counted from now's date.
        if due < now:
            return False
        horizon = self.add_working_days(self._local(now).date(), working_days)
        return self._local(due).date() <= horizon

    def _local(self, moment: datetime) -> datetime:
        """`moment` in local time; naive datetimes are refused."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime: {moment!r}")
        return moment.astimezone(self.tz)

    def _is_working(self, day: date, public_holidays: holidays.HolidayBase) -> bool:
        """Whether `day` is worked, given that year's public holidays."""
        if day in self.extra_days_off:
            return False
        if day in self.makeup_workdays:
            return True
        return day.weekday() < 5 and day not in public_holidays

    @staticmethod
    def _public_holidays(year: int) -> holidays.HolidayBase:
        """Vietnamese public holidays of `year`."""
        return _vietnam_holidays(year)

    def _ordinals(self, year: int) -> list[int]:
        """Sorted ordinals of the working days of `year`."""
        ordinals = self._working_ordinals.get(year)
        if ordinals is None:
            public_holidays = self._public_holidays(year)
            start = date(year, 1, 1)
            days = (start + timedelta(days=n) for n in range((date(year, 12, 31) - start).days + 1))
            ordinals = [d.toordinal() for d in days if self._is_working(d, public_holidays)]
            self._working_ordinals[year] = ordinals
        return ordinals

    def _count_working(self, first: date, last: date) -> int:
        """Number of working days in [first, last)."""
        lo, hi = first.toordinal(), last.toordinal()
        count = 0
        for year in range(first.year, last.year + 1):
            ordinals = self._ordinals(year)
            count += bisect_left(ordinals, hi) - bisect_left(ordinals, lo)
        return count


@lru_cache(maxsize=64)
def _vietnam_holidays(year: int) -> holidays.HolidayBase:
    """Public holidays of one year, built once (the table is immutable per year)."""
    return holidays.Vietnam(years=year)


@lru_cache(maxsize=8)
def _cached_calendar(
    makeup_workdays: tuple[date, ...], extra_days_off: tuple[date, ...]
) -> WorkingCalendar:
    """One calendar per distinct configuration."""
    return WorkingCalendar(makeup_workdays=makeup_workdays, extra_days_off=extra_days_off)


def calendar_from_settings(
    makeup_workdays: list[date], extra_days_off: list[date]
) -> WorkingCalendar:
    """The (cached) calendar for the configured make-up Saturdays and extra days off."""
    return _cached_calendar(tuple(sorted(set(makeup_workdays))), tuple(sorted(set(extra_days_off))))
