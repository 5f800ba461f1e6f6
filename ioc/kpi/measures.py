"""Measures: how a KPI's numerator and denominator come from records, and which cells a
changed record affects. Each measure is exact for any period, so incremental recompute and a
full rebuild agree."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import NamedTuple

from ioc.ingest.service import DossierFacts
from ioc.kit.clock import days_between
from ioc.kpi.catalog import Measure
from ioc.kpi.periods import Period, PeriodKind

STORED_KINDS = (PeriodKind.DAY, PeriodKind.MONTH)


class DossierTimes(NamedTuple):
    """The timestamps of a (not cancelled) dossier that the one-stop-shop measures read."""

    unit_code: str
    received_at: datetime
    due_at: datetime
    resolved_at: datetime | None


def is_on_time(dossier: DossierTimes, now: datetime) -> bool:
    """Ended by its due time, or still open and not yet due (đúng hạn)."""
    if dossier.resolved_at is not None:
        return dossier.resolved_at <= dossier.due_at
    return now <= dossier.due_at


def due_on_time(
    dossiers: Iterable[DossierTimes], *, start: datetime, end: datetime, now: datetime
) -> tuple[float, float]:
    """On-time dossiers ÷ dossiers due in [start, end)."""
    due = [d for d in dossiers if start <= d.due_at < end]
    return float(sum(is_on_time(d, now) for d in due)), float(len(due))


def open_overdue(
    dossiers: Iterable[DossierTimes], *, start: datetime, end: datetime, now: datetime
) -> tuple[float, None]:
    """Dossiers open and past due at the period's end (or now, for the current period)."""
    at = min(end, now)
    count = sum(
        1
        for d in dossiers
        if d.received_at <= at and d.due_at < at and (d.resolved_at is None or d.resolved_at > at)
    )
    return float(count), None


MEASURES = {Measure.DUE_ON_TIME: due_on_time, Measure.OPEN_OVERDUE: open_overdue}


def affected_periods(measure: Measure, facts: DossierFacts, today: date) -> Iterator[Period]:
    """The periods whose value of `measure` may change when this dossier version changes."""
    if facts.due_date is None:
        return
    if measure is Measure.DUE_ON_TIME:
        days: Sequence[date] = [facts.due_date]
    elif measure is Measure.OPEN_OVERDUE:
        if facts.due_date > today:
            return
        last = min(facts.resolved_date or today, today)
        days = days_between(facts.due_date, last)
    else:
        raise ValueError(f"no cells rule for measure {measure}")
    months: set[date] = set()
    for day in days:
        yield Period(PeriodKind.DAY, day)
        months.add(day.replace(day=1))
    for month in sorted(months):
        yield Period(PeriodKind.MONTH, month)
