"""Incremental recompute by differences: what a batch changes in the additive cells, worked out
from the old and new versions of its records alone, without reading the other records.

The stored versions of a batch's records are read before the upsert (`snapshot`) and again
after it (the same query, so a version the upsert refused as older counts as unchanged). Each
version's contribution is worked out per KPI; a pair whose contribution did not change is
skipped, the others add their difference to the day cells, to the month, quarter and year
cells holding them and to the province, in one statement that returns the new values.

- `InPeriod`: a version adds its numerator and denominator to the day of its time column; the
  longer periods and the province are sums, so they move by the same amounts.
- `OpenAt`: a version counts on the days whose end falls in its interval of moments (opened,
  past `after`, inside `window`, not yet closed) and, today, at now. A change adds −1 over the
  old interval's days and +1 over the new one's: only the days between their ends move. A
  month, quarter or year is judged at its last day (today while it runs), so it moves with
  that day's cell.

Exactness. An open record's contribution to a rate changes with time alone (on time until its
due moment). The refresh job recomputes the cells of records whose drift moment passed since
the start of yesterday, so a stored cell holds every contribution as of now except for those:
when a changed record's old version drifted in that window, its cell is recomputed from the
records instead of adjusted. Today's stock cells (judged at now) are adjusted at the batch's
now; a record whose moment passed since the last refresh is caught by the next refresh.

On PostgreSQL the same differences are worked out by one SQL statement (`ioc.kpi.delta_sql`);
this module's pairing in Python serves SQLite (and any snapshot without a kept copy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ARRAY,
    Date,
    Float,
    Numeric,
    String,
    bindparam,
    case,
    cast,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from ioc.kit.clock import local_date
from ioc.kit.types import UTCDateTime
from ioc.kpi.catalog import CATALOG, KpiDefinition, ValueKind, fact_columns
from ioc.kpi.engine import STOCK_HORIZON_DAYS
from ioc.kpi.formulas import InPeriod, OpenAt, Tally
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import LONGER_KINDS, Period, PeriodKind
from ioc.records.stores import STORES

LOOKUP_CHUNK = 500
"""Ids per lookup on SQLite (bound parameters); PostgreSQL joins one array."""

Cell = tuple[str, str, PeriodKind, date]
"""(kpi, unit, period kind, period start)."""


def delta_kpis(record_type: str) -> list[KpiDefinition]:
    """The KPIs over `record_type` whose cells move by differences."""
    return [
        k
        for k in CATALOG
        if k.record_type == record_type and isinstance(k.formula, InPeriod | OpenAt)
    ]


def by_difference(kpi: KpiDefinition) -> bool:
    """Whether `kpi`'s cells move by differences (additive in-period and stock formulas)."""
    return isinstance(kpi.formula, InPeriod | OpenAt)


# ---------------------------------------------------------------- reading versions


def _side(tally: Tally, table: Any, at: datetime) -> Any:
    value = tally.value(table) if tally.value is not None else literal(1)
    if tally.where is None:
        return value
    return case((tally.where(table, at), value), else_=literal(0))


def _flag(condition: Any) -> Any:
    return case((condition, literal(1)), else_=literal(0))


def _selection(record_type: str, at: datetime) -> dict[str, Any]:
    """Named SQL expressions: the unit, the fact columns, and what each formula reads."""
    table = STORES[record_type].model
    chosen: dict[str, Any] = {"unit_code": table.unit_code}
    for name in fact_columns(record_type):
        chosen.setdefault(name, getattr(table, name))
    for kpi in delta_kpis(record_type):
        formula = kpi.formula
        if formula.where is not None:
            chosen[f"{kpi.id}:where"] = _flag(formula.where(table, at))
        if isinstance(formula, InPeriod):
            chosen.setdefault(formula.time_column, getattr(table, formula.time_column))
            chosen[f"{kpi.id}:n"] = _side(formula.numerator, table, at)
            if formula.denominator is not None:
                chosen[f"{kpi.id}:d"] = _side(formula.denominator, table, at)
            if formula.drifts_at is not None:
                chosen.setdefault(formula.drifts_at, getattr(table, formula.drifts_at))
        else:
            assert isinstance(formula, OpenAt)
            for name in formula.moment_columns:
                chosen.setdefault(name, getattr(table, name))
    return chosen


@dataclass
class Snapshot:
    """The stored versions of some records, as the KPI formulas read them at one moment."""

    record_type: str
    instance_id: int
    judged_at: datetime
    external_ids: list[str]
    names: tuple[str, ...]
    rows: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    kept: int | None = None
    """On PostgreSQL, the mark of the same versions copied into a temporary table, from which
    the recompute works out the differences in SQL (`ioc.kpi.delta_sql`); `rows` is then
    empty."""

    def facts(self) -> list[dict[str, Any]]:
        """The unit and local-date columns of each version (what the other formulas read)."""
        wanted = ["unit_code", *fact_columns(self.record_type)]
        positions = [self.names.index(n) for n in wanted]
        return [
            {n: row[i] for n, i in zip(wanted, positions, strict=True)}
            for row in self.rows.values()
        ]


async def snapshot(
    session: AsyncSession,
    record_type: str,
    *,
    instance_id: int,
    external_ids: list[str],
    at: datetime,
) -> Snapshot:
    """The stored versions of these records (those not stored are absent)."""
    chosen = _selection(record_type, at)
    names = tuple(chosen)
    found = Snapshot(record_type, instance_id, at, external_ids, names)
    postgres = session.bind.dialect.name == "postgresql"
    size = len(external_ids) if postgres else LOOKUP_CHUNK
    for start in range(0, len(external_ids), size or 1):
        chunk = external_ids[start : start + size]
        query = lookup_query(record_type, chosen, instance_id, chunk, postgres=postgres)
        connection = await session.connection()  # plain rows: no ORM machinery per row
        for external_id, *values in (await connection.execute(query)).all():
            found.rows[external_id] = tuple(values)
    return found


def lookup_query(
    record_type: str,
    chosen: dict[str, Any],
    instance_id: int,
    external_ids: list[str],
    *,
    postgres: bool,
) -> Select[Any]:
    """The `chosen` expressions (labelled c0, c1, …) of the stored versions of these records,
    after their external id. On PostgreSQL each id of one array parameter is looked up by the
    unique key (a lateral subquery kept apart by `OFFSET 0`): as a join, a table grown since its
    last `ANALYZE` was planned as a hash of every row; elsewhere an `IN` list."""
    table = STORES[record_type].model
    columns = [table.external_id, *(expr.label(f"c{i}") for i, expr in enumerate(chosen.values()))]
    if not postgres:
        return select(*columns).where(
            table.instance_id == instance_id, table.external_id.in_(external_ids)
        )
    ids = (
        func.unnest(bindparam("ids", external_ids, type_=ARRAY(String)))
        .table_valued("external_id")
        .render_derived(name="incoming")
    )
    found = (
        select(*columns)
        .where(table.instance_id == instance_id, table.external_id == ids.c.external_id)
        .offset(0)
        .lateral("found")
    )
    return select(*found.c).select_from(ids).join(found, true())


# ---------------------------------------------------------------- differences


class Differences:
    """Accumulates what changed pairs of versions add to the cells."""

    def __init__(
        self,
        *,
        communes: set[str],
        province_code: str,
        now: datetime,
        tz: ZoneInfo,
        drift_since: datetime,
    ) -> None:
        self.communes = communes
        self.province_code = province_code
        self.now = now
        self.tz = tz
        self.today = local_date(now, tz)
        self.first_day = self.today - timedelta(days=STOCK_HORIZON_DAYS)
        self.local_date = _local_dates(tz, now)
        self.drift_since = drift_since
        self.days: dict[tuple[str, str, date], list[float | None]] = {}
        """In-period day deltas: (kpi, unit, day) → [numerator, denominator]."""
        self.events: dict[tuple[str, str], dict[date, int]] = defaultdict(lambda: defaultdict(int))
        """Stock interval ends: (kpi, unit) → day → +n where counting starts or −n where it ends."""
        self.now_counts: dict[tuple[str, str], int] = defaultdict(int)
        """Stock changes at now (today's running cells)."""
        self.recount: set[tuple[str, str, date]] = set()
        """In-period day cells to recompute from the records (a drifted old version)."""

    def add(self, before: Snapshot, after: Snapshot) -> None:
        """The differences between the versions before and after a batch."""
        position = {n: i for i, n in enumerate(after.names)}
        handlers = [self._handler(kpi, position) for kpi in delta_kpis(after.record_type)]
        unit_at = position["unit_code"]
        for external_id in after.external_ids:
            old = before.rows.get(external_id)
            new = after.rows.get(external_id)
            if old == new:
                continue
            if old is not None and old[unit_at] not in self.communes:
                old = None
            if new is not None and new[unit_at] not in self.communes:
                new = None
            for handle in handlers:
                handle(old, new)

    def _handler(
        self, kpi: KpiDefinition, position: dict[str, int]
    ) -> Callable[[tuple[Any, ...] | None, tuple[Any, ...] | None], None]:
        formula = kpi.formula
        unit_at = position["unit_code"]
        where_at = position.get(f"{kpi.id}:where")
        if isinstance(formula, InPeriod):
            day_at = position[formula.time_column]
            n_at = position[f"{kpi.id}:n"]
            d_at = position.get(f"{kpi.id}:d")
            drift_at = position[formula.drifts_at] if formula.drifts_at else None

            def counted(
                row: tuple[Any, ...] | None,
            ) -> tuple[str, date, float, float | None] | None:
                if (
                    row is None
                    or row[day_at] is None
                    or (where_at is not None and not row[where_at])
                ):
                    return None
                denominator = float(row[d_at] or 0) if d_at is not None else None
                return row[unit_at], row[day_at], float(row[n_at] or 0), denominator

            def in_period(old: tuple[Any, ...] | None, new: tuple[Any, ...] | None) -> None:
                before, after = counted(old), counted(new)
                if before == after:
                    return
                if before is not None:
                    drift = old[drift_at] if drift_at is not None and old is not None else None
                    if drift is not None and self.drift_since <= drift <= self.now:
                        self.recount.add((kpi.id, before[0], before[1]))
                    else:
                        self._add_day(kpi.id, before, -1.0)
                if after is not None:
                    self._add_day(kpi.id, after, 1.0)

            return in_period

        assert isinstance(formula, OpenAt)
        columns = [unit_at, *(position[n] for n in formula.moment_columns)]
        if where_at is not None:
            columns.append(where_at)

        def stock(old: tuple[Any, ...] | None, new: tuple[Any, ...] | None) -> None:
            if old is not None and new is not None and all(old[i] == new[i] for i in columns):
                return
            if old is not None:
                self._add_interval(kpi.id, formula, old, position, where_at, -1)
            if new is not None:
                self._add_interval(kpi.id, formula, new, position, where_at, 1)

        return stock

    def _add_day(
        self, kpi: str, counted: tuple[str, date, float, float | None], sign: float
    ) -> None:
        unit, day, numerator, denominator = counted
        sums = self.days.setdefault((kpi, unit, day), [0.0, None])
        sums[0] = (sums[0] or 0.0) + sign * numerator
        if denominator is not None:
            sums[1] = (sums[1] or 0.0) + sign * denominator

    def _add_interval(
        self,
        kpi: str,
        formula: OpenAt,
        row: tuple[Any, ...],
        position: dict[str, int],
        where_at: int | None,
        sign: int,
    ) -> None:
        if where_at is not None and not row[where_at]:
            return
        opened = row[position[formula.opened]]
        if opened is None:
            return
        closed = row[position[formula.closed]] if formula.closed else None
        strict = [opened]  # the moment must be after these
        if formula.after is not None:
            strict.append(row[position[formula.after]])
        start = end = None
        if formula.window is not None:
            start, end = (row[position[n]] for n in formula.window)
            if start is None or end is None:
                return
        if any(m is None for m in strict):
            return
        now = self.now
        unit = row[position["unit_code"]]
        counts_now = (
            all(m < now for m in strict)
            and (closed is None or closed > now)
            and (start is None or start <= now <= end)
        )
        if counts_now:
            self.now_counts[(kpi, unit)] += sign
        # A past day d counts when its end (local midnight after d) is after every strict
        # bound (d ≥ local date of the bound), at or after `start`, before `closed` and at or
        # before `end`.
        tick = timedelta(microseconds=1)
        day_of = self.local_date
        first = max(day_of(m) for m in strict)
        if start is not None:
            first = max(first, day_of(start - tick))
        last = self.today - timedelta(days=1)
        if closed is not None:
            last = min(last, day_of(closed - tick) - timedelta(days=1))
        if end is not None:
            last = min(last, day_of(end) - timedelta(days=1))
        first = max(first, self.first_day)
        if first > last:
            return
        events = self.events[(kpi, unit)]
        events[first] += sign
        events[last + timedelta(days=1)] -= sign

    def cells(self) -> dict[Cell, list[float | None]]:
        """Every cell's difference, communes and province, with zero ones left out."""
        cells: dict[Cell, list[float | None]] = {}

        def add(
            kpi: str, unit: str, kind: PeriodKind, start: date, sums: list[float | None]
        ) -> None:
            for key in ((kpi, unit, kind, start), (kpi, self.province_code, kind, start)):
                total = cells.setdefault(key, [0.0, None])
                total[0] = (total[0] or 0.0) + (sums[0] or 0.0)
                if sums[1] is not None:
                    total[1] = (total[1] or 0.0) + sums[1]

        for (kpi, unit, day), sums in self.days.items():
            for kind in PeriodKind:
                add(kpi, unit, kind, Period.containing(kind, day).start, sums)

        def add_stock(kpi: str, unit: str, day: date, count: int) -> None:
            sums: list[float | None] = [float(count), None]
            add(kpi, unit, PeriodKind.DAY, day, sums)
            for kind in LONGER_KINDS:
                period = Period.containing(kind, day)
                if min(period.last_day, self.today) == day:
                    add(kpi, unit, kind, period.start, sums)

        for (kpi, unit), events in self.events.items():
            running = 0
            days = sorted(events)
            for first, following in pairwise(days):
                running += events[first]
                if running:
                    for offset in range((following - first).days):
                        add_stock(kpi, unit, first + timedelta(days=offset), running)
        for (kpi, unit), count in self.now_counts.items():
            if count:
                add_stock(kpi, unit, self.today, count)
        return {k: v for k, v in cells.items() if v[0] or v[1]}


def _local_dates(tz: ZoneInfo, now: datetime) -> Callable[[datetime], date]:
    """`local_date` in `tz`; a shift by a constant offset when the zone kept one offset for
    years around now (Asia/Ho_Chi_Minh since 1975), which is several times faster."""
    offsets = {tz.utcoffset(now + timedelta(days=n)) for n in range(-800, 801, 15)}
    if len(offsets) == 1:
        (offset,) = offsets
        if offset is not None:
            return lambda moment: (moment + offset).date()
    return lambda moment: local_date(moment, tz)


# ---------------------------------------------------------------- storing


def rounded_sql(value: Any, postgres: bool) -> Any:
    """`value` rounded to 4 decimals in SQL, as `KpiDefinition.value` rounds."""
    if postgres:
        return cast(func.round(cast(value, Numeric), 4), Float)
    return func.round(value, 4)


def value_sql(kpi: Any, numerator: Any, denominator: Any, postgres: bool) -> Any:
    """A cell's displayed value in SQL, as `KpiDefinition.value` computes it."""
    percent = [k.id for k in CATALOG if k.value_kind is ValueKind.PERCENT]
    mean = [k.id for k in CATALOG if k.value_kind is ValueKind.MEAN]
    divisor = func.nullif(denominator, 0.0)
    return case(
        (kpi.in_(percent), rounded_sql(100.0 * numerator / divisor, postgres)),
        (kpi.in_(mean), rounded_sql(numerator / divisor, postgres)),
        else_=numerator,
    )


async def add_to_cells(
    session: AsyncSession, differences: dict[Cell, list[float | None]], *, now: datetime
) -> list[tuple[str, str, str, date, float, float | None]]:
    """Add the differences to the stored cells (creating missing ones); returns each touched
    cell's new (kpi, unit, period kind, period start, numerator, denominator)."""
    if not differences:
        return []
    from ioc.kpi.catalog import KPIS

    table = KpiValue.__table__
    postgres = session.bind.dialect.name == "postgresql"
    keys = sorted(differences)
    rows = [
        {
            "kpi": kpi,
            "unit_code": unit,
            "period_kind": kind.value,
            "period_start": start,
            "numerator": differences[(kpi, unit, kind, start)][0] or 0.0,
            "denominator": differences[(kpi, unit, kind, start)][1],
            "value": KPIS[kpi].value(*differences[(kpi, unit, kind, start)]),  # type: ignore[arg-type]
            "computed_at": now,
        }
        for kpi, unit, kind, start in keys
    ]
    insert = (postgresql.insert if postgres else sqlite.insert)(table)
    excluded = insert.excluded
    numerator = table.c.numerator + excluded.numerator
    denominator = case(
        (excluded.denominator.is_(None), table.c.denominator),
        else_=func.coalesce(table.c.denominator, 0.0) + excluded.denominator,
    )
    returning = (
        table.c.kpi,
        table.c.unit_code,
        table.c.period_kind,
        table.c.period_start,
        table.c.numerator,
        table.c.denominator,
    )

    def upserted(statement: Any) -> Any:
        return statement.on_conflict_do_update(
            index_elements=["kpi", "unit_code", "period_kind", "period_start"],
            set_={
                "numerator": numerator,
                "denominator": denominator,
                "value": value_sql(table.c.kpi, numerator, denominator, postgres),
                "computed_at": excluded.computed_at,
            },
        ).returning(*returning)

    found: list[Any] = []
    connection = await session.connection()
    if postgres:
        names = list(rows[0])
        types = {
            "kpi": String,
            "unit_code": String,
            "period_kind": String,
            "period_start": Date,
            "numerator": Float,
            "denominator": Float,
            "value": Float,
            "computed_at": UTCDateTime,
        }
        arrays = [
            bindparam(f"a_{n}", [r[n] for r in rows], type_=ARRAY(types[n]))
            for n in names
            if n != "computed_at"
        ]
        source = (
            func.unnest(*arrays)
            .table_valued(*[n for n in names if n != "computed_at"])
            .render_derived(name="differences")
        )
        select_rows = select(
            *(source.c[n] for n in names if n != "computed_at"),
            bindparam("now", now, type_=UTCDateTime()),
        )
        statement = upserted(insert.from_select(names, select_rows))
        found = (await connection.execute(statement)).all()
    else:
        for start in range(0, len(rows), 400):
            statement = upserted(insert.values(rows[start : start + 400]))
            found += (await connection.execute(statement)).all()
    return [tuple(r) for r in found]
