"""A full rebuild on PostgreSQL: one parallel aggregate per local date of a record table, then
every cell in one statement.

1. Slots. Each local date a rebuild groups records by is a *slot*: a time column of an in-period
   KPI (`received_date`), or a day on which a stock KPI starts or stops counting a record (the
   local date of `due_at` is the stored `due_date`; of `due_soon_from`, computed). For each slot,
   one `CREATE TEMPORARY TABLE … AS SELECT … GROUP BY (commune, day)` (which PostgreSQL runs with
   parallel workers, unlike `INSERT … SELECT`) sums what falls on that day: the numerators and
   denominators of the in-period KPIs over that column, and each stock's +1 on the day it starts
   counting a record and −1 on the day it stops (each event goes to the slot holding its day: a
   record counts from the latest of its start days to the earliest of its stop days).
2. Cells. One `INSERT … SELECT` over those small tables (about 100,000 rows for 5 million
   dossiers): a stock's count on each day from the horizon to yesterday is the running sum of its
   changes, today's is counted at now; months, quarters and years are sums of days (in-period) or
   the judged day's count (stocks: the period's last day, or today); the province is the sum of
   its communes; composite scores with a SQL form (the Decision 766 index) are combined from the
   summed components at every level; then one row per KPI and cell, written in key order into a
   temporary table (`CELLS_TABLE`), record type after record type.
3. Store (`store`). `kpi_values` is locked, emptied (the cells of the KPIs not rebuilt kept aside
   and put back), filled from the temporary table without its primary key, and the key built
   again: writing 862,637 cells into an indexed table cost about 4 s on an empty table and 10 s
   over the dead entries a `DELETE` leaves; without the index and building it afterwards, about
   2 s, and the table is left compact. Readers wait for this step only (before it they read the
   old cells); writers wait from the rebuild's start (`ioc.kpi.service.rebuild`).

The cells are the ones the general path computes: `tests/kpi/test_properties.py` holds a rebuild
to the oracle, and incremental recompute to a rebuild, on both databases. Values are rounded as
Python's `round` rounds (half to even on the exact binary value, `ioc.kpi.sql_round.python_round`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ARRAY,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from ioc.kit.types import UTCDateTime
from ioc.kpi.catalog import KPIS, KpiDefinition, ValueKind
from ioc.kpi.engine import STOCK_HORIZON_DAYS
from ioc.kpi.formulas import Composite, InPeriod, OpenAt, Tally
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import LONGER_KINDS, MONTHS_IN
from ioc.kpi.sql_round import python_round
from ioc.records.stores import STORES

TABLE_PREFIX = "kpi_rebuild_"
CELLS_TABLE = "kpi_rebuild_cells"
"""The rebuilt cells of every record type, until `store`."""
EPOCH = date(1970, 1, 1)
DAY_SECONDS = 86400


class _CreateTemporaryAs(Executable, ClauseElement):
    """`CREATE TEMPORARY TABLE name ON COMMIT DROP AS <select>`."""

    inherit_cache = False

    def __init__(self, name: str, query: Any) -> None:
        self.name = name
        self.query = query


@compiles(_CreateTemporaryAs)
def _compile_create(element: _CreateTemporaryAs, compiler: Any, **kw: Any) -> str:
    query = compiler.process(element.query, **kw)
    return f"CREATE TEMPORARY TABLE {element.name} ON COMMIT DROP AS {query}"


# ---------------------------------------------------------------- local dates in SQL


@dataclass(frozen=True)
class _Clock:
    """How local dates are computed: `AT TIME ZONE` per row (about 0.5 µs), or, between `since`
    and `until` where the zone keeps one UTC offset, by arithmetic on the epoch (free)."""

    tz: ZoneInfo
    offset_seconds: int
    since: datetime
    until: datetime

    @classmethod
    def around(
        cls, tz: ZoneInfo, today: date, years_back: int = 60, years_ahead: int = 10
    ) -> _Clock:
        def offset(day: date) -> int:
            moment = datetime.combine(day, time(12), tzinfo=tz)
            delta = moment.utcoffset()
            assert delta is not None
            return int(delta.total_seconds())

        here = offset(today)
        first = last = today
        for step, limit, bound in ((-1, years_back, "first"), (1, years_ahead, "last")):
            day = today
            for _ in range(limit * 366):
                following = day + timedelta(days=step)
                # the offset must hold over both midnights of every day in the range
                if offset(following) != here or _midnight_offset(following, tz) != here:
                    break
                day = following
            if bound == "first":
                first = day
            else:
                last = day
        since = datetime.combine(first, time(), tzinfo=tz)
        until = datetime.combine(last, time(), tzinfo=tz)
        return cls(tz, here, since, until)

    def _fixed(self, moment: Any) -> Any:
        since = bindparam(None, self.since, type_=UTCDateTime())
        until = bindparam(None, self.until, type_=UTCDateTime())
        return and_(moment >= since, moment < until)

    def day_of(self, moment: Any, *, before: bool) -> Any:
        """The local date of `moment` (of the microsecond before it when `before`)."""
        local = func.date_part("epoch", moment) + self.offset_seconds
        days = func.ceil(local / DAY_SECONDS) - 1 if before else func.floor(local / DAY_SECONDS)
        fast = cast(literal(EPOCH, Date), Date) + cast(days, Integer)
        shifted = moment - text("interval '1 microsecond'") if before else moment
        slow = cast(func.timezone(self.tz.key, shifted), Date)
        return case((self._fixed(moment), fast), else_=slow)

    def at_midnight(self, moment: Any, day: Any) -> Any:
        """Whether `moment`, whose local date is the column `day`, is that day's local midnight."""
        midnight_epoch = (
            day - cast(literal(EPOCH, Date), Date)
        ) * DAY_SECONDS - self.offset_seconds
        fast = func.date_part("epoch", moment) == midnight_epoch
        slow = moment == func.timezone(self.tz.key, cast(day, DateTime))
        return case((self._fixed(moment), fast), else_=slow)


def _midnight_offset(day: date, tz: ZoneInfo) -> int:
    delta = datetime.combine(day, time(), tzinfo=tz).utcoffset()
    assert delta is not None
    return int(delta.total_seconds())


def date_column(table: Any, moment: str) -> Any | None:
    """The stored local date of datetime column `moment` (`received_at` → `received_date`),
    if the store derives one (`ioc.records.stores`: every `X_date` is the local date of `X_at`)."""
    if not moment.endswith("_at"):
        return None
    return getattr(table, moment.removesuffix("_at") + "_date", None)


# ---------------------------------------------------------------- slots and events


@dataclass
class _Slot:
    """One local date records are grouped by, and what each group sums."""

    key: str
    day: Any
    back: Any | None = None
    """For a stored date column: whether the record's moment is at that day's local midnight,
    so that the microsecond before it (when a record closed at midnight stops counting) falls
    on the day before."""
    sums: dict[str, Any] = field(default_factory=dict)
    shifted: set[str] = field(default_factory=set)
    """Columns of events dated the microsecond before the moment (one day earlier when `back`)."""


@dataclass(frozen=True)
class _Day:
    """A day an event falls on: in slot `slot`, its value `value` (for comparisons)."""

    slot: str
    value: Any
    shifted: bool = False


class _Plan:
    """The slots of one record table and the columns of the wide rows."""

    def __init__(self, table: Any, clock: _Clock, now: datetime) -> None:
        self.table = table
        self.clock = clock
        self.now = now
        self.slots: dict[str, _Slot] = {}
        self.columns: dict[str, str] = {}
        """aggregate identity → column name (identical sums are computed once)."""
        self.in_period: list[tuple[KpiDefinition, str, str | None]] = []
        self.stocks: list[tuple[KpiDefinition, list[tuple[str, str]], str]] = []
        """(kpi, [(slot, change column)], count-at-now column)."""

    def slot(self, key: str, day: Any, back: Any | None = None) -> str:
        if key not in self.slots:
            self.slots[key] = _Slot(key, day, back)
        return key

    def column_day(self, name: str) -> _Day:
        return _Day(self.slot(name, getattr(self.table, name)), getattr(self.table, name))

    def moment_day(self, moment: str, *, before: bool) -> _Day:
        """The local date of a datetime column (of the microsecond before it when `before`)."""
        column = getattr(self.table, moment)
        stored = date_column(self.table, moment)
        if stored is None:
            key = f"{moment}:{'before' if before else 'at'}"
            day = self.clock.day_of(column, before=before)
            return _Day(self.slot(key, day), day)
        if not before:
            return _Day(self.slot(stored.key, stored), stored)
        back = self.clock.at_midnight(column, stored)
        key = self.slot(stored.key, stored)
        slot = self.slots[key]
        if slot.back is None:
            slot.back = back
        value = stored - cast(case((back, 1), else_=0), Integer)
        return _Day(key, value, shifted=True)

    def aggregate(self, slot: str, expression: Any, *, shifted: bool = False) -> str:
        """The column of `slot` holding `expression` (one column per distinct aggregate)."""
        compiled = expression.compile()
        identity = f"{slot}|{shifted}|{compiled}|{sorted(compiled.params.items(), key=str)!r}"
        if identity not in self.columns:
            name = f"c{len(self.columns)}"
            self.columns[identity] = name
            self.slots[slot].sums[name] = expression
            if shifted:
                self.slots[slot].shifted.add(name)
        return self.columns[identity]

    # ---- in-period KPIs

    def add_in_period(self, kpi: KpiDefinition) -> None:
        formula = kpi.formula
        assert isinstance(formula, InPeriod)
        day = self.column_day(formula.time_column)
        base = formula.where(self.table, self.now) if formula.where is not None else None
        numerator = self.aggregate(day.slot, self._tally(formula.numerator, base))
        denominator = None
        if formula.denominator is not None:
            denominator = self.aggregate(day.slot, self._tally(formula.denominator, base))
        self.in_period.append((kpi, numerator, denominator))

    def _tally(self, tally: Tally, base: Any) -> Any:
        own = tally.where(self.table, self.now) if tally.where is not None else None
        conditions = [c for c in (base, own) if c is not None]
        if tally.value is None:
            counted = func.count()
        else:
            counted = func.sum(cast(tally.value(self.table), Float))
        if conditions:
            counted = counted.filter(and_(*conditions))
        return cast(counted, Float)

    # ---- stock KPIs

    def add_stock(self, kpi: KpiDefinition) -> None:
        formula = kpi.formula
        assert isinstance(formula, OpenAt)
        table = self.table
        starts = [self.moment_day(formula.opened, before=False)]
        required = [getattr(table, formula.opened).is_not(None)]
        if formula.where is not None:
            required.append(formula.where(table, self.now))
        if formula.after is not None:
            starts.append(self.moment_day(formula.after, before=False))
            required.append(getattr(table, formula.after).is_not(None))
        ends: list[_Day] = []
        if formula.closed is not None:
            ends.append(self.moment_day(formula.closed, before=True))
        if formula.window is not None:
            start, end = formula.window
            starts.append(self.moment_day(start, before=True))
            ends.append(self.moment_day(end, before=False))
            required += [getattr(table, start).is_not(None), getattr(table, end).is_not(None)]
        first = func.greatest(*(d.value for d in starts)) if len(starts) > 1 else starts[0].value
        last_end = func.least(*(d.value for d in ends)) if len(ends) > 1 else None
        if ends:
            end_value = last_end if last_end is not None else ends[0].value
            required.append(or_(end_value.is_(None), first < end_value))
        counted = and_(*required)
        changes: list[tuple[str, str]] = []
        for index, day in enumerate(starts):
            chosen = and_(counted, _first_of(starts, index, latest=True))
            column = self.aggregate(
                day.slot, cast(func.count().filter(chosen), Float), shifted=day.shifted
            )
            changes.append((day.slot, column))
        for index, day in enumerate(ends):
            chosen = and_(counted, _first_of(ends, index, latest=False))
            column = self.aggregate(
                day.slot, cast(-func.count().filter(chosen), Float), shifted=day.shifted
            )
            changes.append((day.slot, column))
        at_now = and_(*formula.conditions(table, bindparam(None, self.now, type_=UTCDateTime())))
        now_column = self.aggregate(starts[0].slot, cast(func.count().filter(at_now), Float))
        self.stocks.append((kpi, changes, now_column))


def _first_of(days: list[_Day], index: int, *, latest: bool) -> Any:
    """Whether `days[index]` is the first of the latest (or earliest) of `days`; a NULL day is
    never chosen (an open record has no stop day)."""
    mine = days[index].value
    conditions = [mine.is_not(None)]
    for other_index, other in enumerate(days):
        if other_index == index:
            continue
        before = other_index < index
        if latest:
            conditions.append(mine > other.value if before else mine >= other.value)
        else:
            beats = mine < other.value if before else mine <= other.value
            conditions.append(or_(other.value.is_(None), beats))
    return and_(*conditions)


# ---------------------------------------------------------------- the rebuild


def supported(kpi: KpiDefinition, chosen: list[KpiDefinition]) -> bool:
    """Whether this path computes `kpi`'s cells when `chosen` are rebuilt together."""
    formula = kpi.formula
    if isinstance(formula, InPeriod | OpenAt):
        return True
    if isinstance(formula, Composite) and formula.combine_sql is not None:
        ids = {k.id for k in chosen}
        return all(
            name in ids
            and KPIS[name].record_type == kpi.record_type
            and isinstance(KPIS[name].formula, InPeriod)
            for name in formula.components
        )
    return False


async def rebuild(
    session: AsyncSession,
    kpis: list[KpiDefinition],
    communes: set[str],
    province_code: str,
    *,
    now: datetime,
    tz: ZoneInfo,
    today: date,
) -> None:
    """Insert every cell of `kpis` (one record type; `supported`), none of which is stored."""
    table = STORES[kpis[0].record_type].model
    plan = _Plan(table, _Clock.around(tz, today), now)
    for kpi in kpis:
        if isinstance(kpi.formula, InPeriod):
            plan.add_in_period(kpi)
    for kpi in kpis:
        if isinstance(kpi.formula, OpenAt):
            plan.add_stock(kpi)
    composites = [k for k in kpis if isinstance(k.formula, Composite)]
    names = await slot_tables(session, plan, communes)
    try:
        await cells(session, plan, names, composites, province_code, now=now, today=today)
    finally:
        for name in names.values():
            await session.execute(text(f"DROP TABLE IF EXISTS {name}"))


async def slot_tables(session: AsyncSession, plan: _Plan, communes: set[str]) -> dict[str, str]:
    """One temporary table per slot: (unit_code, day, back, sums…) per commune and day."""
    names = {}
    for index, slot in enumerate(plan.slots.values()):
        name = f"{TABLE_PREFIX}{index}"
        back = slot.back if slot.back is not None else literal(False, Boolean)
        query = (
            select(
                plan.table.unit_code.label("unit_code"),
                slot.day.label("day"),
                back.label("back"),
                *(expression.label(column) for column, expression in slot.sums.items()),
            )
            .where(plan.table.unit_code.in_(sorted(communes)), slot.day.is_not(None))
            .group_by(plan.table.unit_code, slot.day, *([back] if slot.back is not None else []))
        )
        await session.execute(_CreateTemporaryAs(name, query))
        names[slot.key] = name
    return names


def _ratio_sql(kpi: KpiDefinition, numerator: str, denominator: str) -> str:
    """A cell's value before rounding, as `KpiDefinition.value` computes it."""
    if kpi.value_kind is ValueKind.PERCENT:
        return f"(100.0::float8 * {numerator} / nullif({denominator}, 0.0))"
    if kpi.value_kind is ValueKind.MEAN:
        return f"({numerator} / nullif({denominator}, 0.0))"
    return numerator


def _rounded_sql(kpi: KpiDefinition, ratio: str) -> str:
    if kpi.value_kind in (ValueKind.PERCENT, ValueKind.MEAN):
        return python_round(ratio, 4)
    return ratio


async def cells(
    session: AsyncSession,
    plan: _Plan,
    names: dict[str, str],
    composites: list[KpiDefinition],
    province_code: str,
    *,
    now: datetime,
    today: date,
) -> None:
    """Every cell from the slot tables, in one `INSERT … SELECT`."""
    sql = cells_sql(plan, names, composites)
    params = [
        bindparam("now", now, type_=UTCDateTime()),
        bindparam("today", today, type_=Date()),
        bindparam("yesterday", today - timedelta(days=1), type_=Date()),
        bindparam("horizon", today - timedelta(days=STOCK_HORIZON_DAYS), type_=Date()),
        bindparam("province", province_code),
    ]
    await session.execute(
        text(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {CELLS_TABLE}"
            f" (LIKE {KpiValue.__tablename__}) ON COMMIT DROP"
        )
    )
    # JIT compiling this statement's hundreds of expressions costs seconds and saves less: it
    # runs over about 100,000 rows. (The scans over millions of records keep it.)
    jit = await session.scalar(text("SELECT current_setting('jit')"))
    await session.execute(text("SET LOCAL jit = off"))
    await session.execute(text(sql).bindparams(*(p for p in params if f":{p.key}" in sql)))
    await session.execute(text("SELECT set_config('jit', :jit, true)").bindparams(jit=jit))


def cells_sql(plan: _Plan, names: dict[str, str], composites: list[KpiDefinition]) -> str:
    """The `INSERT … SELECT` of `cells` (parameters :now, :today, :yesterday, :horizon,
    :province)."""
    n_in, n_st = len(plan.in_period), len(plan.stocks)
    wide = [f"n{i}" for i in range(n_in)] + [f"d{i}" for i in range(n_in)]
    wide += [f"s{j}" for j in range(n_st)]

    def row(values: dict[str, str]) -> str:
        return ", ".join(f"{values.get(c, 'NULL::float8')} AS {c}" for c in wide)

    # in-period sums per slot row
    slot_rows = []
    for key, name in names.items():
        values = {}
        for i, (_, numerator, denominator) in enumerate(plan.in_period):
            if numerator in plan.slots[key].sums:
                values[f"n{i}"] = numerator
                values[f"d{i}"] = denominator if denominator is not None else "NULL::float8"
        if values:
            slot_rows.append(f"SELECT unit_code, day, {row(values)} FROM {name}")
    # stock changes per (unit, day), events before the horizon on its first day
    change_rows = []
    for key, name in names.items():
        slot = plan.slots[key]
        for shifted in (False, True):
            values = {}
            for j, (_, changes, _now) in enumerate(plan.stocks):
                mine = [c for s, c in changes if s == key and (c in slot.shifted) == shifted]
                if mine:
                    values[f"s{j}"] = " + ".join(f"coalesce({c}, 0.0)" for c in mine)
            if values:
                day = "day - CASE WHEN back THEN 1 ELSE 0 END" if shifted else "day"
                change_rows.append(f"SELECT unit_code, {day} AS day, {row(values)} FROM {name}")
    now_rows = []
    for j, (_, _changes, now_column) in enumerate(plan.stocks):
        slot_key = next(k for k, s in plan.slots.items() if now_column in s.sums)
        now_rows.append((j, names[slot_key], now_column))
    stocks = [f"s{j}" for j in range(n_st)]
    ctes = []
    parts = list(slot_rows)
    if stocks:
        sums = ", ".join(f"sum({s}) AS {s}" for s in stocks)
        running = ", ".join(f"sum(coalesce(c.{s}, 0.0)) OVER w AS {s}" for s in stocks)
        ctes.append(
            f"changes AS (SELECT unit_code, greatest(day, :horizon) AS day, {sums}"
            f" FROM ({' UNION ALL '.join(change_rows)}) AS e"
            " WHERE day < :today GROUP BY 1, 2)"
        )
        ctes.append(
            f"counts AS (SELECT g.unit_code, g.day, {running}"
            " FROM (SELECT u.unit_code, d::date AS day"
            " FROM (SELECT DISTINCT unit_code FROM changes) AS u"
            " CROSS JOIN generate_series(CAST(:horizon AS timestamp),"
            " CAST(:yesterday AS timestamp), interval '1 day') AS d) AS g"
            " LEFT JOIN changes AS c ON c.unit_code = g.unit_code AND c.day = g.day"
            " WINDOW w AS (PARTITION BY g.unit_code ORDER BY g.day))"
        )
        parts.append(f"SELECT unit_code, day, {row({s: s for s in stocks})} FROM counts")
        for j, name, column in now_rows:
            parts.append(
                f"SELECT unit_code, :today AS day, {row({f's{j}': f'sum({column})'})}"
                f" FROM {name} GROUP BY unit_code"
            )
    summed = ", ".join(f"sum({c}) AS {c}" for c in wide)
    ctes.append(
        f"days AS (SELECT unit_code, day, {summed}"
        f" FROM ({' UNION ALL '.join(parts)}) AS x GROUP BY unit_code, day)"
    )
    spans = ", ".join(
        f"('{kind.value}', interval '{MONTHS_IN[kind]} months')" for kind in LONGER_KINDS
    )
    start = "date_trunc(k.kind, d.day::timestamp)::date"
    judged = f"d.day = :today OR d.day = ({start} + k.span - interval '1 day')::date"
    longer = [f"sum(d.n{i}) AS n{i}" for i in range(n_in)]
    longer += [f"sum(d.d{i}) AS d{i}" for i in range(n_in)]
    longer += [f"sum(d.{s}) FILTER (WHERE {judged}) AS {s}" for s in stocks]
    ctes.append(
        f"periods AS (SELECT unit_code, 'day'::text AS kind, day AS start, {', '.join(wide)}"
        f" FROM days UNION ALL SELECT d.unit_code, k.kind, {start}, {', '.join(longer)}"
        f" FROM days AS d CROSS JOIN (VALUES {spans}) AS k(kind, span) GROUP BY 1, 2, 3)"
    )
    ctes.append(
        f"levels AS (SELECT * FROM periods UNION ALL SELECT :province, kind, start, {summed}"
        " FROM periods GROUP BY kind, start)"
    )
    # values: rates rounded as Python rounds, composite scores from them
    ratios, values, rates = [], [], {}
    for i, (kpi, _, denominator) in enumerate(plan.in_period):
        n = f"coalesce(n{i}, 0.0)"
        d = f"coalesce(d{i}, 0.0)" if denominator is not None else "NULL::float8"
        ratios.append(f"{_ratio_sql(kpi, n, d)} AS r{i}")
        values.append(f"{_rounded_sql(kpi, f'r{i}')} AS v{i}")
        rates[kpi.id] = f"v{i}"
    scores = []
    for m, kpi in enumerate(composites):
        formula = kpi.formula
        assert isinstance(formula, Composite) and formula.combine_sql is not None
        scores.append(f"{formula.combine_sql({c: rates[c] for c in formula.components})} AS g{m}")
    ctes.append(
        f"ratios AS MATERIALIZED (SELECT *, {', '.join(ratios or ['NULL AS r'])} FROM levels)"
    )
    ctes.append(
        f"valued AS MATERIALIZED (SELECT *, {', '.join(values or ['NULL AS v'])} FROM ratios)"
    )
    # in key order (commune, kind, start here; KPI by KPI below): the primary key index is then
    # written from left to right instead of at random places
    ctes.append(
        f"scored AS MATERIALIZED (SELECT *, {', '.join(scores or ['NULL AS g'])} FROM valued"
        ' ORDER BY unit_code COLLATE "C", kind COLLATE "C", start)'
    )
    cells: dict[str, tuple[str, str, str, str]] = {}
    for i, (kpi, _, denominator) in enumerate(plan.in_period):
        n = f"coalesce(n{i}, 0.0)"
        d = f"coalesce(d{i}, 0.0)" if denominator is not None else "NULL::float8"
        cells[kpi.id] = (n, d, f"v{i}", f"{n} <> 0.0 OR {d} <> 0.0")
    for j, (kpi, _, _) in enumerate(plan.stocks):
        cells[kpi.id] = (f"s{j}", "NULL::float8", f"s{j}", f"s{j} <> 0.0")
    for m, kpi in enumerate(composites):
        cells[kpi.id] = (f"g{m}", "NULL::float8", f"g{m}", f"g{m} IS NOT NULL")
    selects = [
        f"SELECT '{kpi_id}', unit_code, kind, start, {n}, {d}, {v}, :now FROM scored WHERE {keep}"
        for kpi_id, (n, d, v, keep) in sorted(cells.items())  # str order is "C" order
    ]
    return (
        f"WITH {', '.join(ctes)} "
        f"INSERT INTO {CELLS_TABLE} (kpi, unit_code, period_kind, period_start, numerator,"
        f" denominator, value, computed_at) {' UNION ALL '.join(selects)}"
    )


async def store(session: AsyncSession, replaced: list[str]) -> None:
    """Drop every stored cell of the KPIs `replaced` and store those of `CELLS_TABLE` (step 3)."""
    table = KpiValue.__tablename__
    key = KpiValue.__table__.primary_key
    columns = ", ".join(c.name for c in key.columns)
    kept = f"{TABLE_PREFIX}kept"
    await session.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
    await session.execute(
        text(
            f"CREATE TEMPORARY TABLE {kept} ON COMMIT DROP AS"
            f" SELECT * FROM {table} WHERE kpi <> ALL(:replaced)"
        ).bindparams(bindparam("replaced", replaced, type_=ARRAY(String)))
    )
    await session.execute(text(f"TRUNCATE {table}"))
    await session.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {key.name}"))
    for source in (kept, CELLS_TABLE):  # the rebuilt cells are in key order already
        await session.execute(text(f"INSERT INTO {table} SELECT * FROM {source}"))
    await session.execute(
        text(f"ALTER TABLE {table} ADD CONSTRAINT {key.name} PRIMARY KEY ({columns})")
    )
    await session.execute(text(f"DROP TABLE {kept}, {CELLS_TABLE}"))
