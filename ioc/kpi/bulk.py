"""A full rebuild in a few set-based statements, the cells written by the database itself.

- In-period KPIs: one scan of a record table per time column computes every KPI grouped on
  that column (e.g. all six "share of the dossiers received" rates at once) and inserts their
  non-zero day cells; months, quarters and years are then the sums of the day cells, and the
  province the sum of its communes, each one `INSERT … SELECT … GROUP BY`.
- Stock KPIs (PostgreSQL): each record's interval of counted days is worked out from its
  moment columns (local dates with `AT TIME ZONE`), turned into +1/−1 events whose running sum
  per commune is the count at each day's end; today's cell is counted at now in the same
  scan. A month, quarter or year is its judged day's cell (its last day, or today). On SQLite
  stock KPIs take the general path (`service.recompute_cells`).

The cells are the ones the general path computes (`tests/kpi/test_properties.py` holds a
rebuild to the oracle on both databases).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.kit.clock import local_midnight
from ioc.kit.types import UTCDateTime
from ioc.kpi.catalog import KpiDefinition, ValueKind
from ioc.kpi.delta import rounded_sql, value_sql
from ioc.kpi.engine import STOCK_HORIZON_DAYS
from ioc.kpi.formulas import InPeriod, OpenAt, Tally
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import LONGER_KINDS, PeriodKind
from ioc.records.stores import STORES

COLUMNS = [
    "kpi",
    "unit_code",
    "period_kind",
    "period_start",
    "numerator",
    "denominator",
    "value",
    "computed_at",
]


def _postgres(session: AsyncSession) -> bool:
    return session.bind.dialect.name == "postgresql"


def _value(kpi: KpiDefinition, numerator: Any, denominator: Any, postgres: bool) -> Any:
    divisor = func.nullif(denominator, 0.0)
    if kpi.value_kind is ValueKind.PERCENT:
        return rounded_sql(100.0 * numerator / divisor, postgres)
    if kpi.value_kind is ValueKind.MEAN:
        return rounded_sql(numerator / divisor, postgres)
    return numerator


def _sum(tally: Tally, table: Any, base: Any, at: datetime) -> Any:
    value = tally.value(table) if tally.value is not None else literal(1.0)
    conditions = [
        c for c in (base, tally.where(table, at) if tally.where else None) if c is not None
    ]
    if not conditions:
        return func.sum(cast(value, Float))
    return func.sum(case((and_(*conditions), cast(value, Float)), else_=literal(0.0)))


def _now(now: datetime) -> Any:
    return bindparam("now", now, type_=UTCDateTime())


async def in_period(
    session: AsyncSession, kpis: list[KpiDefinition], communes: set[str], *, now: datetime
) -> None:
    """Insert the day cells of these in-period KPIs (of one record type): one scan per time
    column. The table must hold none of their cells."""
    postgres = _postgres(session)
    by_column: dict[str, list[KpiDefinition]] = defaultdict(list)
    for kpi in kpis:
        assert isinstance(kpi.formula, InPeriod)
        by_column[kpi.formula.time_column].append(kpi)
    for column, group in by_column.items():
        table = STORES[group[0].record_type].model
        time = getattr(table, column)
        sums = []
        for i, kpi in enumerate(group):
            formula = kpi.formula
            assert isinstance(formula, InPeriod)
            base = formula.where(table, now) if formula.where is not None else None
            sums.append(_sum(formula.numerator, table, base, now).label(f"n{i}"))
            if formula.denominator is not None:
                sums.append(_sum(formula.denominator, table, base, now).label(f"d{i}"))
        grouped = (
            select(table.unit_code.label("unit_code"), time.label("day"), *sums)
            .where(table.unit_code.in_(sorted(communes)), time.is_not(None))
            .group_by(table.unit_code, time)
            .cte(f"grouped_{column}")
        )
        parts = []
        for i, kpi in enumerate(group):
            numerator = grouped.c[f"n{i}"]
            denominator = grouped.c[f"d{i}"] if f"d{i}" in grouped.c else null()
            nonzero = numerator != 0
            if f"d{i}" in grouped.c:
                nonzero = or_(nonzero, denominator != 0)
            parts.append(
                select(
                    literal(kpi.id, String),
                    grouped.c.unit_code,
                    literal(PeriodKind.DAY.value, String),
                    grouped.c.day,
                    numerator,
                    cast(denominator, Float),
                    _value(kpi, numerator, denominator, postgres),
                    _now(now),
                ).where(nonzero)
            )
        await session.execute(insert(KpiValue).from_select(COLUMNS, union_all(*parts)))


def _local_day(column: Any, tz: ZoneInfo) -> Any:
    return cast(func.timezone(tz.key, column), Date)


def _before(column: Any) -> Any:
    return column - text("interval '1 microsecond'")


async def stocks(
    session: AsyncSession,
    kpis: list[KpiDefinition],
    communes: set[str],
    *,
    now: datetime,
    tz: ZoneInfo,
    today: date,
) -> None:
    """Insert the day cells of stock KPIs over one record table from +1/−1 events, one scan
    for all of them (PostgreSQL only)."""
    formulas = [k.formula for k in kpis]
    assert all(isinstance(f, OpenAt) for f in formulas)
    table = STORES[kpis[0].record_type].model
    first_day = today - timedelta(days=STOCK_HORIZON_DAYS)
    yesterday = today - timedelta(days=1)
    columns = [table.unit_code.label("unit_code")]
    for i, formula in enumerate(formulas):
        assert isinstance(formula, OpenAt)
        opened = getattr(table, formula.opened)
        firsts = [_local_day(opened, tz)]
        lasts = [literal(yesterday, Date)]
        counts = [opened.is_not(None)]
        if formula.where is not None:
            counts.append(formula.where(table, now))
        if formula.after is not None:
            after = getattr(table, formula.after)
            firsts.append(_local_day(after, tz))
            counts.append(after.is_not(None))
        if formula.closed is not None:
            lasts.append(_local_day(_before(getattr(table, formula.closed)), tz) - 1)
        if formula.window is not None:
            start, end = (getattr(table, n) for n in formula.window)
            firsts.append(_local_day(_before(start), tz))
            lasts.append(_local_day(end, tz) - 1)
            counts += [start.is_not(None), end.is_not(None)]
        counted = and_(*counts)
        columns += [
            case((counted, func.greatest(literal(first_day, Date), *firsts))).label(f"first{i}"),
            func.least(*lasts).label(f"last{i}"),
            case((and_(*formula.conditions(table, _now(now))), 1), else_=0).label(f"now{i}"),
        ]
    conditions = [table.unit_code.in_(sorted(communes))]
    closing = {f.closed for f in formulas if isinstance(f, OpenAt)}
    if len(closing) == 1 and None not in closing:
        # Records closed before the horizon's first day count on none of its days.
        closed = getattr(table, closing.pop())
        horizon = local_midnight(first_day, tz)
        conditions.append(or_(closed.is_(None), closed > horizon))
    spans = select(*columns).where(*conditions).cte("spans")
    parts = []
    for i, kpi in enumerate(kpis):
        first, last, at_now = spans.c[f"first{i}"], spans.c[f"last{i}"], spans.c[f"now{i}"]
        counted = first <= last
        events = union_all(
            select(spans.c.unit_code, first.label("day"), literal(1).label("change")).where(
                counted
            ),
            select(spans.c.unit_code, (last + 1).label("day"), literal(-1)).where(counted),
        ).subquery(f"events{i}")
        per_day = (
            select(events.c.unit_code, events.c.day, func.sum(events.c.change).label("change"))
            .group_by(events.c.unit_code, events.c.day)
            .subquery(f"per_day{i}")
        )
        window = {"partition_by": per_day.c.unit_code, "order_by": per_day.c.day}
        running = select(
            per_day.c.unit_code,
            per_day.c.day,
            func.sum(per_day.c.change).over(**window).label("count"),
            func.lead(per_day.c.day).over(**window).label("next"),
        ).subquery(f"running{i}")
        days = (
            func.generate_series(running.c.day, running.c.next - 1, text("interval '1 day'"))
            .table_valued("day")
            .render_derived(name=f"days{i}")
        )
        parts.append(
            select(
                literal(kpi.id, String),
                running.c.unit_code,
                literal(PeriodKind.DAY.value, String),
                cast(days.c.day, Date),
                cast(running.c.count, Float),
                cast(null(), Float),
                cast(running.c.count, Float),
                _now(now),
            )
            .select_from(running.join(days, literal(True)))
            .where(running.c.count != 0, running.c.next.is_not(None))
        )
        parts.append(
            select(
                literal(kpi.id, String),
                spans.c.unit_code,
                literal(PeriodKind.DAY.value, String),
                literal(today, Date),
                cast(func.sum(at_now), Float),
                cast(null(), Float),
                cast(func.sum(at_now), Float),
                _now(now),
            )
            .group_by(spans.c.unit_code)
            .having(func.sum(at_now) != 0)
        )
    await session.execute(insert(KpiValue).from_select(COLUMNS, union_all(*parts)))


def _period_start(kind: PeriodKind, day: Any, postgres: bool) -> Any:
    """The start of the `kind` period holding the date `day`, in SQL."""
    if postgres:
        return cast(func.date_trunc(kind.value, day), Date)
    if kind is PeriodKind.MONTH:
        return func.date(day, "start of month")
    if kind is PeriodKind.YEAR:
        return func.date(day, "start of year")
    months_in = (cast(func.strftime("%m", day), Integer) - 1) % 3
    return func.date(day, "start of month", func.printf("-%d months", months_in))


def _next_day(day: Any, postgres: bool) -> Any:
    return day + 1 if postgres else func.date(day, "+1 day")


async def longer_periods(
    session: AsyncSession, kpis: list[KpiDefinition], *, now: datetime, today: date
) -> None:
    """Insert the month, quarter and year cells from the stored day cells: sums for in-period
    KPIs, the judged day's cell (the period's last day, or today) for stocks."""
    postgres = _postgres(session)
    summed = [k.id for k in kpis if isinstance(k.formula, InPeriod)]
    judged = [k.id for k in kpis if isinstance(k.formula, OpenAt)]
    cells = KpiValue.__table__.c
    day = cells.period_start
    for kind in LONGER_KINDS:
        start = _period_start(kind, day, postgres)
        statements = []
        if summed:
            numerator, denominator = func.sum(cells.numerator), func.sum(cells.denominator)
            statements.append(
                select(
                    cells.kpi,
                    cells.unit_code,
                    literal(kind.value, String),
                    start,
                    numerator,
                    denominator,
                    value_sql(cells.kpi, numerator, denominator, postgres),
                    _now(now),
                )
                .where(cells.kpi.in_(summed), cells.period_kind == PeriodKind.DAY.value)
                .group_by(cells.kpi, cells.unit_code, start)
            )
        if judged:
            last_day = _period_start(kind, _next_day(day, postgres), postgres) == _next_day(
                day, postgres
            )
            statements.append(
                select(
                    cells.kpi,
                    cells.unit_code,
                    literal(kind.value, String),
                    start,
                    cells.numerator,
                    cells.denominator,
                    cells.value,
                    _now(now),
                ).where(
                    cells.kpi.in_(judged),
                    cells.period_kind == PeriodKind.DAY.value,
                    or_(last_day, day == literal(today, Date)),
                )
            )
        for statement in statements:
            await session.execute(insert(KpiValue).from_select(COLUMNS, statement))


async def province(
    session: AsyncSession, kpis: list[KpiDefinition], province_code: str, *, now: datetime
) -> None:
    """Insert the province cells of additive KPIs as the sums of their communes' cells."""
    postgres = _postgres(session)
    cells = KpiValue.__table__.c
    numerator, denominator = func.sum(cells.numerator), func.sum(cells.denominator)
    statement = (
        select(
            cells.kpi,
            literal(province_code, String),
            cells.period_kind,
            cells.period_start,
            numerator,
            denominator,
            value_sql(cells.kpi, numerator, denominator, postgres),
            _now(now),
        )
        .where(cells.kpi.in_([k.id for k in kpis]), cells.unit_code != province_code)
        .group_by(cells.kpi, cells.period_kind, cells.period_start)
    )
    await session.execute(insert(KpiValue).from_select(COLUMNS, statement))
