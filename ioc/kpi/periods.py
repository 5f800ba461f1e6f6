"""Local-calendar periods (day, month, quarter, year) that KPI values are stored under."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from ioc.kit.clock import add_months, local_midnight


class PeriodKind(StrEnum):
    """The calendar granularity of a KPI cell."""

    DAY = "day"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


MONTHS_IN = {PeriodKind.MONTH: 1, PeriodKind.QUARTER: 3, PeriodKind.YEAR: 12}
LONGER_KINDS = (PeriodKind.MONTH, PeriodKind.QUARTER, PeriodKind.YEAR)


@dataclass(frozen=True, order=True)
class Period:
    """A local calendar period [start, end)."""

    kind: PeriodKind
    start: date

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        """The period of `kind` that contains the local day `day`."""
        if kind is PeriodKind.DAY:
            return cls(kind, day)
        months = MONTHS_IN[kind]
        return cls(kind, date(day.year, (day.month - 1) // months * months + 1, 1))

    @classmethod
    def parse(cls, kind: str, start: date) -> Period:
        """A period from its kind and start, or ValueError if `start` does not begin one."""
        period = cls.containing(PeriodKind(kind), start)
        if period.start != start:
            raise ValueError(f"{start} does not start a {kind} (it starts {period.start})")
        return period

    @property
    def end(self) -> date:
        """The first local day after the period."""
        if self.kind is PeriodKind.DAY:
            return self.start + timedelta(days=1)
        return add_months(self.start, MONTHS_IN[self.kind])

    @property
    def last_day(self) -> date:
        """The period's last local day."""
        return self.end - timedelta(days=1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """The UTC instants at which the period starts and ends."""
        return local_midnight(self.start, tz), local_midnight(self.end, tz)

    def days(self) -> Iterator[date]:
        """Every local day of the period."""
        day = self.start
        while day < self.end:
            yield day
            day += timedelta(days=1)
