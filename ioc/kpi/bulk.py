"""A full rebuild of in-period KPIs in a few set-based statements, the cells written by the
database itself (SQLite's path; PostgreSQL's is `ioc.kpi.scan`).

One scan of a record table per time column computes every KPI grouped on that column (e.g. all
six "share of the dossiers received" rates at once) and inserts their non-zero day cells;
months, quarters and years are then the sums of the day cells, and the province the sum of its
communes, each one `INSERT … SELECT … GROUP BY`. Stock KPIs take the general path
(`service.recompute_cells`); `longer_periods` also copies a stock's judged day cell (its last
day, or today) to its month, quarter and year.

The cells are the ones the general path computes (`tests/kpi/test_properties.py` holds a
rebuild to the oracle on both databases).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

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
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.kit.types import UTCDateTime
from ioc.kpi.catalog import KpiDefinition, ValueKind
from ioc.kpi.delta import rounded_sql, value_sql
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
