"""Local-calendar periods (day, month) that KPI values are stored under."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from ioc.kit.clock import add_months, local_midnight


class PeriodKind(StrEnum):
    """The calendar granularity of a KPI cell."""

    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, order=True)
class Period:
    """A local calendar period [start, end)."""

    kind: PeriodKind
    start: date

    @classmethod
    def containing(cls, kind: PeriodKind, day: date) -> Period:
        """The period of `kind` that contains the local day `day`."""
        if kind is PeriodKind.MONTH:
            return cls(kind, day.replace(day=1))
        return cls(kind, day)

    @property
    def end(self) -> date:
        """The first local day after the period."""
        if self.kind is PeriodKind.MONTH:
            return add_months(self.start, 1)
        return self.start + timedelta(days=1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """The UTC instants at which the period starts and ends."""
        return local_midnight(self.start, tz), local_midnight(self.end, tz)
