"""Time helpers: UTC inside, the deployment's local calendar for periods."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

Clock = Callable[[], datetime]
"""Returns the current aware UTC time; injected so tests and simulations can control it."""


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    """The local calendar day a UTC instant falls on."""
    return moment.astimezone(tz).date()


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which a local calendar day starts."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def add_months(day: date, months: int) -> date:
    """The first day of the month `months` after the month of `day`."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def days_between(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
