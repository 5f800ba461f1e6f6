"""Formula building blocks: how a KPI's numerator and denominator come from one record table.

A formula is declared, never coded per KPI: conditions and values are small functions of the
record table (and of the moment `at` the value is judged at), turned into SQL by the engine.

- `InPeriod`: records whose local-date `time_column` falls in the period. Additive: a month is
  the sum of its days, a province the sum of its communes.
- `OpenAt`: a stock — records open at the period's end (or now, for the current period).
- `LatestPerEntity`: the latest record of each entity (facility, school) at the period's end,
  summed (bed census, enrolment).
- `MedianInPeriod`: the median of a value over the records of the period (emergency waits).
- `Composite`: a score from other KPIs' values in the same cell (the Decision 766 index).
- `SourceLag`: not over records: how long ago each connector source last polled successfully.
- `IncidentResponse`: not over records: mean minutes from an incident's opening to its
  acknowledgement (MTTA) or resolution (MTTR); the incidents domain stores the cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement

Condition = Callable[[Any, datetime], ColumnElement[bool]]
"""(record table, the moment judged at) → SQL condition."""
Value = Callable[[Any], ColumnElement[Any]]
"""record table → SQL numeric expression."""


@dataclass(frozen=True)
class Tally:
    """One side of a formula: count the rows matching `where`, or sum `value` over them."""

    where: Condition | None = None
    value: Value | None = None


@dataclass(frozen=True)
class InPeriod:
    """Records whose local date `time_column` falls in the period."""

    record_type: str
    time_column: str
    numerator: Tally
    denominator: Tally | None = None
    where: Condition | None = None
    drifts_at: str | None = None
    """A datetime column at which an open record's value changes with time alone (it turns
    late at its due time): the cells of records whose moment has just passed are refreshed."""


@dataclass(frozen=True)
class OpenAt:
    """Records open at the period's end, or now for the current period."""

    record_type: str
    opened: str
    closed: str | None
    active_from: str
    """Local-date column from which a record can count (e.g. the due date for overdue)."""
    active_to: str | None
    """Local-date column after which it no longer counts (e.g. the resolution date)."""
    where: Condition | None = None
    """Which records count at all; must not depend on the moment (the bounds below do), so
    that a record counts over one interval of moments and a change touches only the days
    between its old and new interval's ends."""
    after: str | None = None
    """A datetime column the moment must be strictly after (overdue: past the due time);
    `active_from` is then its local date (a count reads that column's index up to the day)."""
    window: tuple[str, str] | None = None
    """Datetime columns (from, until) the moment must lie between, both included (due soon)."""

    def conditions(self, table: Any, at: Any) -> list[ColumnElement[bool]]:
        """SQL conditions: the record counts at `at` (a datetime or a column of moments)."""
        opened = getattr(table, self.opened)
        # Strictly before the moment: a record opened exactly at a period's end (local
        # midnight) belongs to the next day, as its local date says.
        found = [opened < at]
        if self.closed is not None:
            closed = getattr(table, self.closed)
            found.append(closed.is_(None) | (closed > at))
        if self.after is not None:
            found.append(getattr(table, self.after) < at)
        if self.window is not None:
            start, end = self.window
            found += [getattr(table, start) <= at, getattr(table, end) >= at]
        if self.where is not None:
            found.append(self.where(table, at))
        return found

    @property
    def moment_columns(self) -> tuple[str, ...]:
        """The datetime columns the bounds read."""
        names = [self.opened, *([self.closed] if self.closed else [])]
        names += [*([self.after] if self.after else []), *(self.window or ())]
        return tuple(names)


@dataclass(frozen=True)
class LatestPerEntity:
    """Each entity's latest record at the period's end, its values summed per unit."""

    record_type: str
    entity: str
    time_column: str
    """A datetime column ordering an entity's records."""
    date_column: str
    """The local date of `time_column`."""
    numerator: Value
    denominator: Value | None = None
    where: Condition | None = None


@dataclass(frozen=True)
class MedianInPeriod:
    """The median of `value` over the records whose local date `time_column` falls in the
    period (not additive: a province's median comes from all its records)."""

    record_type: str
    time_column: str
    value: str
    where: Condition | None = None


@dataclass(frozen=True)
class Composite:
    """A score combined from other KPIs' values in the same cell (not additive: a province's
    score comes from the province's component values, never from its communes' scores)."""

    record_type: str
    components: tuple[str, ...]
    combine: Callable[[dict[str, float | None]], float | None]
    combine_sql: Callable[[dict[str, str]], str] | None = None
    """The same combination in SQL (PostgreSQL), from SQL expressions of the component values
    (NULL for none), giving the same double as `combine`: a rebuild then scores every cell in
    the database (`ioc.kpi.scan`)."""


@dataclass(frozen=True)
class SourceLag:
    """Minutes from each enabled connector source's last successful poll (its poll runs) to
    the period's end (now while it runs): a province cell holds the largest (numerator) and
    the number of sources (denominator); a source that never succeeded counts from when it
    was added. Sources serve the whole province: communes have no cells of their own."""

    record_type: str = "connector"


@dataclass(frozen=True)
class IncidentResponse:
    """Mean minutes from opening to `moment` (an `incidents` column) of the incidents whose
    `moment` falls in the period: the numerator sums the minutes, the denominator counts the
    incidents. The incidents domain stores the cells as incidents are acknowledged and
    resolved (`ioc.incidents.response_times.update_response_kpis`); the engine leaves them alone
    in its rebuild and refresh, and computes them only on read (a period with no stored cell, a
    breakdown). A commune's cell counts its incidents; the province's counts every incident,
    including those of the province itself, so it is not the sum of its communes'."""

    moment: str
    record_type: str = "incident"


Formula = (
    InPeriod | OpenAt | LatestPerEntity | MedianInPeriod | Composite | SourceLag | IncidentResponse
)


def column(name: str) -> Value:
    """A table column by name, as a value."""
    return lambda table: getattr(table, name)
