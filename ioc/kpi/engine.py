"""Computes KPI cells from the records, in SQL, for any set of communes and periods.

Each formula kind has one way to compute a (unit, period) cell, used alike by incremental
recompute, a full rebuild and reads of cells not stored yet, so all three agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    Integer,
    case,
    false,
    func,
    literal,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.kit.clock import local_date
from ioc.kit.types import UTCDateTime
from ioc.kpi.catalog import KpiDefinition
from ioc.kpi.formulas import (
    Composite,
    IncidentResponse,
    InPeriod,
    LatestPerEntity,
    MedianInPeriod,
    OpenAt,
    SourceLag,
    Tally,
)
from ioc.kpi.periods import Period, PeriodKind
from ioc.records.stores import STORES

Sums = tuple[float, float | None]
"""(numerator, denominator) of a cell; the denominator is None for counts."""

STOCK_HORIZON_DAYS = 400
"""How far back a changed record can touch day cells of stock KPIs (backlog, overdue)."""
LATEST_LOOKBACK_DAYS = 31
"""An entity's latest record counts at a period's end if it is at most this old."""


def judged_at(period: Period, *, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The moment a period's value is judged at: its end, or now while it runs; None if it
    has not begun."""
    start, end = period.bounds(tz)
    if start > now:
        return None
    return min(end, now)


async def compute(
    session: AsyncSession,
    kpi: KpiDefinition,
    units: Iterable[str],
    periods: Iterable[Period],
    *,
    now: datetime,
    tz: ZoneInfo,
    by: str | None = "unit_code",
) -> dict[tuple[str, Period], Sums]:
    """The cells of `kpi` for these communes and periods (cells with no records are absent),
    keyed by unit — or, for a breakdown, by another column of the records (`by`) summed over
    the units, or with `by=None` one total over all the units, keyed `TOTAL`."""
    units = sorted(set(units))
    periods = sorted(set(periods))
    if not units or not periods:
        return {}
    formula = kpi.formula
    if isinstance(formula, Composite):
        return await _composite(session, formula, units, periods, now=now, tz=tz, by=by)
    if isinstance(formula, InPeriod):
        return await _in_period(session, formula, units, periods, now=now, key=by)
    if isinstance(formula, MedianInPeriod):
        return await _median(session, formula, units, periods, now=now, key=by)
    if isinstance(formula, IncidentResponse):
        return await _incident_response(session, formula, units, periods, tz=tz, key=by)
    moments = {p: at for p in periods if (at := judged_at(p, now=now, tz=tz)) is not None}
    if isinstance(formula, SourceLag):
        return await _source_lag(session, moments, by=by)
    if isinstance(formula, OpenAt):
        return await _open_at(session, formula, units, moments, tz=tz, key=by)
    cells: dict[tuple[str, Period], Sums] = {}
    for period, at in moments.items():
        found = await _latest(session, formula, units, at, tz=tz, key=by)
        for unit, sums in found.items():
            cells[(unit, period)] = sums
    return cells


TOTAL = "*"
"""The key of a cell totalled over all the units asked for (`by=None`)."""


def _key(table: Any, key: str | None) -> Any:
    return getattr(table, key) if key is not None else literal(TOTAL).label("total")


def _grouping(*columns: Any) -> list[Any]:
    """GROUP BY columns, leaving out the constant key of a total."""
    return [c for c in columns if getattr(c, "name", None) != "total"]


async def _composite(
    session: AsyncSession,
    formula: Composite,
    units: list[str],
    periods: list[Period],
    *,
    now: datetime,
    tz: ZoneInfo,
    by: str | None,
) -> dict[tuple[str, Period], Sums]:
    from ioc.kpi.catalog import KPIS  # the catalogue declares composites of its own KPIs

    rates: dict[tuple[str, Period], dict[str, float | None]] = {}
    for name in formula.components:
        component = KPIS[name]
        for cell, (numerator, denominator) in (
            await compute(session, component, units, periods, now=now, tz=tz, by=by)
        ).items():
            rates.setdefault(cell, {})[name] = component.value(numerator, denominator)
    cells: dict[tuple[str, Period], Sums] = {}
    for cell, cell_rates in rates.items():
        points = formula.combine(cell_rates)
        if points is not None:
            cells[cell] = (points, None)
    return cells


def _tally(side: Tally, table: Any, at: datetime) -> Any:
    value = side.value(table) if side.value is not None else literal(1)
    condition = side.where(table, at) if side.where is not None else None
    if condition is None:
        return func.sum(value)
    return func.sum(case((condition, value), else_=literal(0)))


async def _in_period(
    session: AsyncSession,
    formula: InPeriod,
    units: list[str],
    periods: list[Period],
    *,
    now: datetime,
    key: str | None = "unit_code",
) -> dict[tuple[str, Period], Sums]:
    table = STORES[formula.record_type].model
    group = _key(table, key)
    time = getattr(table, formula.time_column)
    sides = [_tally(formula.numerator, table, now)]
    if formula.denominator is not None:
        sides.append(_tally(formula.denominator, table, now))
    base = formula.where(table, now) if formula.where is not None else true()
    cells: dict[tuple[str, Period], Sums] = {}
    days = [p for p in periods if p.kind is PeriodKind.DAY]
    if days:  # all day cells in one grouped query
        wanted = {p.start for p in days}
        query = (
            select(group, time, *sides)
            .where(table.unit_code.in_(units), time.between(min(wanted), max(wanted)), base)
            .group_by(*_grouping(group, time))
        )
        for unit, day, *sums in (await session.execute(query)).all():
            if day in wanted:
                cells[(unit, Period(PeriodKind.DAY, day))] = _sums(sums)
    for period in (p for p in periods if p.kind is not PeriodKind.DAY):
        query = (
            select(group, *sides)
            .where(table.unit_code.in_(units), time.between(period.start, period.last_day), base)
            .group_by(*_grouping(group))
        )
        for unit, *sums in (await session.execute(query)).all():
            cells[(unit, period)] = _sums(sums)
    return cells


async def _median(
    session: AsyncSession,
    formula: MedianInPeriod,
    units: list[str],
    periods: list[Period],
    *,
    now: datetime,
    key: str | None,
) -> dict[tuple[str, Period], Sums]:
    table = STORES[formula.record_type].model
    group = _key(table, key)
    time = getattr(table, formula.time_column)
    where = formula.where(table, now) if formula.where is not None else true()
    first = min(p.start for p in periods)
    last = max(p.last_day for p in periods)
    query = select(group, time, getattr(table, formula.value)).where(
        table.unit_code.in_(units), time.between(first, last), where
    )
    values: dict[tuple[str, Period], list[float]] = defaultdict(list)
    for group_key, day, value in (await session.execute(query)).all():
        for period in periods:
            if period.start <= day <= period.last_day:
                values[(group_key, period)].append(float(value))
    return {cell: (median(found), float(len(found))) for cell, found in values.items()}


async def _open_at(
    session: AsyncSession,
    formula: OpenAt,
    units: list[str],
    moments: dict[Period, datetime],
    *,
    tz: ZoneInfo,
    key: str | None,
) -> dict[tuple[str, Period], Sums]:
    """Counts at many moments in one query: the records joined with a list of the moments,
    each moment once (every running period is judged now: one count serves them all)."""
    if not moments:
        return {}
    distinct = sorted(set(moments.values()))
    table = STORES[formula.record_type].model
    group = _key(table, key)
    # A UNION ALL of one-row SELECTs: portable, where VALUES column aliases are not (SQLite).
    at_list = union_all(
        *(
            select(literal(i, Integer).label("slot"), literal(at, UTCDateTime()).label("at"))
            for i, at in enumerate(distinct)
        )
    ).subquery("moments")
    opened = getattr(table, formula.opened)
    conditions = [
        table.unit_code.in_(units),
        opened < max(moments.values()),  # lets an index on the column narrow the scan
        *formula.conditions(table, at_list.c.at),
    ]
    if formula.after is not None:
        # Past `after` by the last moment, so on or before its local date (`active_from` is
        # the local date of `after`): overdue dossiers are read from the (unit, due date) index
        # up to today instead of every open dossier.
        latest = local_date(max(moments.values()), tz)
        conditions.append(getattr(table, formula.active_from) <= latest)
    if formula.closed is not None:
        closed = getattr(table, formula.closed)
        conditions.append((closed.is_(None)) | (closed > min(moments.values())))
    query = (
        select(at_list.c.slot, group, func.count())
        .select_from(table)
        .join(at_list, true())
        .where(*conditions)
        .group_by(*_grouping(at_list.c.slot, group))
    )
    periods_at: dict[datetime, list[Period]] = defaultdict(list)
    for period, at in moments.items():
        periods_at[at].append(period)
    return {
        (value, period): (float(count), None)
        for slot, value, count in (await session.execute(query)).all()
        for period in periods_at[distinct[slot]]
    }


SOURCE_AXIS = "name"
"""The breakdown of `SourceLag` cells: by connector instance name."""


async def _source_lag(
    session: AsyncSession, moments: dict[Period, datetime], *, by: str | None
) -> dict[tuple[str, Period], Sums]:
    """Each enabled source's minutes since its last successful poll at each moment: the largest
    and the count of sources as one total (`by=None`), or per source (`by="name"`); none per
    commune."""
    from ioc.ingest.models import ConnectorInstance, PollRun  # poll history, not records

    if by not in (None, SOURCE_AXIS) or not moments:
        return {}
    sources = (
        await session.execute(
            select(
                ConnectorInstance.id, ConnectorInstance.name, ConnectorInstance.created_at
            ).where(ConnectorInstance.enabled.is_(True))
        )
    ).all()
    cells: dict[tuple[str, Period], Sums] = {}
    for period, at in moments.items():
        last_ok = dict(
            (
                await session.execute(
                    select(PollRun.instance_id, func.max(PollRun.finished_at))
                    .where(PollRun.outcome == "ok", PollRun.finished_at <= at)
                    .group_by(PollRun.instance_id)
                )
            ).all()
        )
        lags = {
            name: max(0.0, (at - (last_ok.get(id_) or created)).total_seconds() / 60)
            for id_, name, created in sources
            if created is not None and created < at
        }
        if not lags:
            continue
        if by is None:
            cells[(TOTAL, period)] = (round(max(lags.values()), 2), float(len(lags)))
        else:
            for name, lag in lags.items():
                cells[(name, period)] = (round(lag, 2), 1.0)
    return cells


INCIDENT_AXIS = "agency_code"
"""The breakdown of `IncidentResponse` cells beside units: by the incident's agency."""


async def _incident_response(
    session: AsyncSession,
    formula: IncidentResponse,
    units: list[str],
    periods: list[Period],
    *,
    tz: ZoneInfo,
    key: str | None,
) -> dict[tuple[str, Period], Sums]:
    """The minutes from opening to `formula.moment` summed (numerator) and the incidents
    counted (denominator), of the incidents of these units whose moment falls in each period;
    a province among the units also counts the incidents of no unit (system incidents)."""
    from ioc.incidents.models import Incident  # incidents, not records
    from ioc.units.models import AdminUnit

    if key not in (None, "unit_code", INCIDENT_AXIS):
        return {}
    moment = getattr(Incident, formula.moment)
    group = getattr(Incident, key) if key is not None else None
    where = Incident.unit_code.in_(units)
    if key != "unit_code":
        top = await session.scalar(
            select(func.count())
            .select_from(AdminUnit)
            .where(AdminUnit.code.in_(units), AdminUnit.parent_code.is_(None))
        )
        if top:
            where = where | Incident.unit_code.is_(None)
    cells: dict[tuple[str, Period], list[float]] = {}
    for period in periods:
        start, end = period.bounds(tz)
        columns = [Incident.opened_at, moment, *([group] if group is not None else [])]
        found = await session.execute(select(*columns).where(where, moment >= start, moment < end))
        for opened, reached, *grouped in found.all():
            name = grouped[0] if grouped else TOTAL
            sums = cells.setdefault((name, period), [0.0, 0.0])
            sums[0] += max((reached - opened).total_seconds() / 60, 0.0)
            sums[1] += 1
    return {cell: (numerator, denominator) for cell, (numerator, denominator) in cells.items()}


async def _latest(
    session: AsyncSession,
    formula: LatestPerEntity,
    units: list[str],
    at: datetime,
    *,
    tz: ZoneInfo,
    key: str | None,
) -> dict[str, Sums]:
    table = STORES[formula.record_type].model
    group = _key(table, key)
    time = getattr(table, formula.time_column)
    entity = getattr(table, formula.entity)
    upto, since = _lookback(time, at, tz)
    where = formula.where(table, at) if formula.where is not None else true()
    latest = (
        select(table.unit_code, entity.label("entity"), func.max(time).label("latest"))
        .where(table.unit_code.in_(units), time <= upto, time > since, where)
        .group_by(table.unit_code, entity)
        .subquery()
    )
    sides = [func.sum(formula.numerator(table))]
    if formula.denominator is not None:
        sides.append(func.sum(formula.denominator(table)))
    query = (
        select(group, *sides)
        .join(
            latest,
            (table.unit_code == latest.c.unit_code)
            & (entity == latest.c.entity)
            & (time == latest.c.latest),
        )
        .where(where)
        .group_by(*_grouping(group))
    )
    return {value: _sums(sums) for value, *sums in (await session.execute(query)).all()}


def _lookback(time: Any, at: datetime, tz: ZoneInfo) -> tuple[Any, Any]:
    """The window (since, upto] in which an entity's latest record counts at `at`: up to the
    last instant before `at` (a record stamped exactly at a period's end is the next day's)."""
    if isinstance(time.type, Date):  # a day column: the days up to the moment judged at
        upto = local_date(at - timedelta(microseconds=1), tz)
        return upto, upto - timedelta(days=LATEST_LOOKBACK_DAYS)
    return at - timedelta(microseconds=1), at - timedelta(days=LATEST_LOOKBACK_DAYS)


def _sums(values: list[Any]) -> Sums:
    numerator = float(values[0] or 0)
    denominator = float(values[1] or 0) if len(values) > 1 else None
    return numerator, denominator


def affected_days(kpi: KpiDefinition, facts: dict[str, Any], today: date) -> list[date]:
    """The days whose cells of `kpi` a version of a record (its facts) counts in."""
    formula = kpi.formula
    if isinstance(formula, SourceLag | IncidentResponse):
        return []
    if isinstance(formula, Composite):
        from ioc.kpi.catalog import KPIS

        days = {d for name in formula.components for d in affected_days(KPIS[name], facts, today)}
        return sorted(days)
    if isinstance(formula, InPeriod | MedianInPeriod):
        day = facts.get(formula.time_column)
        return [day] if day is not None else []
    if isinstance(formula, OpenAt):
        first = facts.get(formula.active_from)
        last = facts.get(formula.active_to) if formula.active_to else None
        last = min(last or today, today)
    else:
        first = facts.get(formula.date_column)
        last = min(first + timedelta(days=LATEST_LOOKBACK_DAYS), today) if first else None
    if first is None or last is None or first > last:
        return []
    first = max(first, today - timedelta(days=STOCK_HORIZON_DAYS))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def periods_of(days: Iterable[date]) -> set[Period]:
    """The day periods of these days and the month, quarter and year periods containing them."""
    periods: set[Period] = set()
    for day in days:
        for kind in PeriodKind:
            periods.add(Period.containing(kind, day))
    return periods


def group_by_unit(cells: Iterable[tuple[str, Period]]) -> dict[Period, set[str]]:
    """Cells regrouped as the units wanted per period."""
    grouped: dict[Period, set[str]] = defaultdict(set)
    for unit, period in cells:
        grouped[period].add(unit)
    return grouped


def cell_conditions(
    kpi: KpiDefinition, period: Period, *, side: str, now: datetime, tz: ZoneInfo
) -> list[Any]:
    """Conditions on the record table that select exactly the records behind a cell: those
    counted in its numerator (`side="numerator"`) or its denominator."""
    formula = kpi.formula
    if isinstance(formula, Composite | SourceLag | IncidentResponse):
        return [false()]  # a score has no records of its own; see its components
    table = STORES[formula.record_type].model
    if isinstance(formula, MedianInPeriod):
        time = getattr(table, formula.time_column)
        where = formula.where(table, now) if formula.where is not None else true()
        return [time.between(period.start, period.last_day), where]
    if isinstance(formula, InPeriod):
        time = getattr(table, formula.time_column)
        conditions = [time.between(period.start, period.last_day)]
        if formula.where is not None:
            conditions.append(formula.where(table, now))
        tally = formula.numerator if side == "numerator" else formula.denominator
        if tally is not None and tally.where is not None:
            conditions.append(tally.where(table, now))
        return conditions
    at = judged_at(period, now=now, tz=tz)
    if at is None:
        return [false()]
    if isinstance(formula, OpenAt):
        return formula.conditions(table, at)
    time = getattr(table, formula.time_column)
    entity = getattr(table, formula.entity)
    upto, since = _lookback(time, at, tz)
    where = formula.where(table, at) if formula.where is not None else true()
    latest = (
        select(table.unit_code, entity, func.max(time))
        .where(time <= upto, time > since, where)
        .group_by(table.unit_code, entity)
    )
    return [tuple_(table.unit_code, entity, time).in_(latest), where]
