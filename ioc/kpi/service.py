"""The KPI service: recomputes exactly the cells a change touched, refreshes the cells that drift
with time, rebuilds everything, rolls communes up to the province by summing numerators and
denominators, and reads current values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ARRAY,
    Date,
    String,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.ingest.service import ChangeSet
from ioc.kit.clock import local_date, local_midnight
from ioc.kit.upsert import upsert
from ioc.kpi import bulk, delta_sql, scan
from ioc.kpi.catalog import CATALOG, KPIS, KpiDefinition
from ioc.kpi.delta import Differences, add_to_cells, by_difference, snapshot
from ioc.kpi.engine import STOCK_HORIZON_DAYS, TOTAL, affected_days, compute, periods_of
from ioc.kpi.formulas import (
    Composite,
    IncidentResponse,
    InPeriod,
    MedianInPeriod,
    OpenAt,
    SourceLag,
)
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.schemas import KpiRead
from ioc.records.stores import STORES
from ioc.units.models import AdminUnit
from ioc.units.service import COMMUNE_LEVEL

KINDS = {k.value: k for k in PeriodKind}
BULK_WORK_MEM = "256MB"
"""PostgreSQL's memory for one sort or hash during a rebuild (the default 4 MB spills)."""
Wanted = dict[str, set[tuple[str, Period]]]
"""Commune cells to recompute, by KPI id."""


@dataclass(frozen=True)
class CellValue:
    """A computed KPI cell."""

    kpi: KpiDefinition
    unit_code: str
    period: Period
    numerator: float
    denominator: float | None
    computed_at: datetime

    @property
    def value(self) -> float | None:
        """The displayed value."""
        return self.kpi.value(self.numerator, self.denominator)

    def read(self) -> KpiRead:
        """As the API and live topics present it."""
        return to_read(self.kpi, self.unit_code, self.period, self)


async def recompute(
    session: AsyncSession,
    *,
    changes: ChangeSet,
    province_code: str,
    tz: ZoneInfo,
    now: datetime,
) -> list[CellValue]:
    """Recompute the cells `changes` affect; returns the cells whose values changed.

    Additive cells (in-period and stock formulas) move by the differences between the old and
    new versions of the batch's records (`ioc.kpi.delta`) when the ingest read the old ones at
    this same moment; composite scores follow their components' stored cells; the others, and
    every cell when no such snapshot exists, are recomputed from the records."""
    communes = await _communes(session, province_code)
    today = local_date(now, tz)
    differences = Differences(
        communes=communes,
        province_code=province_code,
        now=now,
        tz=tz,
        drift_since=local_midnight(today - timedelta(days=1), tz),
    )
    by_delta: set[str] = set()
    in_sql: list[CellValue] = []
    done_in_sql: set[str] = set()
    for record_type, before in changes.snapshots.items():
        if before.judged_at != now:
            continue
        if before.kept is not None and delta_sql.supported(session, record_type):
            rows = await delta_sql.apply(
                session,
                record_type,
                kept=before.kept,
                instance_id=before.instance_id,
                external_ids=before.external_ids,
                province_code=province_code,
                now=now,
                tz=tz,
            )
            in_sql += _cell_values(rows, now)
            done_in_sql |= delta_sql.composites_done(record_type)
            by_delta.add(record_type)
            continue
        after = await snapshot(
            session,
            record_type,
            instance_id=before.instance_id,
            external_ids=before.external_ids,
            at=now,
        )
        differences.add(before, after)
        by_delta.add(record_type)
    wanted: Wanted = defaultdict(set)
    for record_type, facts in changes.facts.items():
        kpis = [
            k
            for k in CATALOG
            if k.record_type == record_type
            and not (
                record_type in by_delta and (by_difference(k) or isinstance(k.formula, Composite))
            )
        ]
        for fact in facts:
            unit = fact["unit_code"]
            if unit not in communes:
                continue
            for kpi in kpis:
                for period in periods_of(affected_days(kpi, fact, today)):
                    wanted[kpi.id].add((unit, period))
    changed = await _add_differences(session, differences, now=now, tz=tz)
    changed += await recompute_cells(session, wanted, province_code=province_code, tz=tz, now=now)
    changed += in_sql
    changed += await _composites_of(session, changed, now=now, skip=done_in_sql)
    return changed


def _cell_values(rows: Iterable[tuple[Any, ...]], now: datetime) -> list[CellValue]:
    """Changed cells as stored: (kpi, unit, period kind, period start, numerator, denominator)."""
    periods: dict[tuple[str, date], Period] = {}
    values = []
    for kpi, unit, kind, start, numerator, denominator in rows:
        period = periods.get((kind, start))
        if period is None:
            period = periods[(kind, start)] = Period(KINDS[kind], start)
        values.append(CellValue(KPIS[kpi], unit, period, numerator, denominator, now))
    return values


async def _add_differences(
    session: AsyncSession, differences: Differences, *, now: datetime, tz: ZoneInfo
) -> list[CellValue]:
    """Store the differences, with the day cells to recount recounted from the records."""
    recount: dict[str, set[tuple[str, Period]]] = defaultdict(set)
    for kpi_id, unit, day in differences.recount:
        recount[kpi_id].add((unit, Period(PeriodKind.DAY, day)))
    for kpi_id, wanted in recount.items():
        # Whatever the pairs added to these day cells is replaced by a count from the records.
        kpi = KPIS[kpi_id]
        for unit, period in wanted:
            differences.days.pop((kpi_id, unit, period.start), None)
        computed = await compute(
            session, kpi, {u for u, _ in wanted}, {p for _, p in wanted}, now=now, tz=tz
        )
        stored = await _stored(session, [CellValue(kpi, u, p, 0.0, None, now) for u, p in wanted])
        for unit, period in wanted:
            numerator, denominator = computed.get((unit, period), _zero(kpi))
            before_n, before_d = stored.get((unit, period), _zero(kpi))
            difference = [
                numerator - before_n,
                None if denominator is None else denominator - (before_d or 0.0),
            ]
            differences.days[(kpi_id, unit, period.start)] = difference
    rows = await add_to_cells(session, differences.cells(), now=now)
    return _cell_values(rows, now)


async def _rebuild_composite(session: AsyncSession, kpi: KpiDefinition, *, now: datetime) -> None:
    """Every cell of a composite KPI from its components' stored cells, read pivoted (one row
    per cell) and combined here, as an incremental recompute combines them."""
    formula = kpi.formula
    assert isinstance(formula, Composite)
    cells = KpiValue.__table__.c
    sides = []
    for name in formula.components:
        sides += [
            func.max(case((cells.kpi == name, cells.numerator))),
            func.max(case((cells.kpi == name, cells.denominator))),
        ]
    query = (
        select(cells.unit_code, cells.period_kind, cells.period_start, *sides)
        .where(cells.kpi.in_(formula.components))
        .group_by(cells.unit_code, cells.period_kind, cells.period_start)
    )
    components = [KPIS[name] for name in formula.components]
    rows = []
    connection = await session.connection()
    for unit, kind, start, *values in (await connection.execute(query)).all():
        rates = {
            component.id: component.value(values[2 * i] or 0.0, values[2 * i + 1])
            for i, component in enumerate(components)
            if values[2 * i] is not None
        }
        points = formula.combine(rates)
        if points is None:
            continue
        rows.append(
            {
                "kpi": kpi.id,
                "unit_code": unit,
                "period_kind": kind,
                "period_start": start,
                "numerator": points,
                "denominator": None,
                "value": points,
                "computed_at": now,
            }
        )
    await upsert(session, KpiValue, rows, keys=("kpi", "unit_code", "period_kind", "period_start"))


async def _composites_of(
    session: AsyncSession, changed: list[CellValue], *, now: datetime, skip: set[str]
) -> list[CellValue]:
    """Composite scores of the cells whose components changed, from the stored components
    (except the composites `skip`, already recombined)."""
    found: list[CellValue] = []
    for kpi in CATALOG:
        formula = kpi.formula
        if not isinstance(formula, Composite) or kpi.id in skip:
            continue
        cells = {(c.unit_code, c.period) for c in changed if c.kpi.id in formula.components}
        if cells:
            found += await _store_changed(
                session, await _composite_values(session, kpi, cells, now=now)
            )
    return found


async def _composite_values(
    session: AsyncSession, kpi: KpiDefinition, cells: set[tuple[str, Period]], *, now: datetime
) -> list[CellValue]:
    """A composite KPI's cells combined from its components' stored cells."""
    formula = kpi.formula
    assert isinstance(formula, Composite)
    rates: dict[tuple[str, Period], dict[str, float | None]] = defaultdict(dict)
    table = KpiValue.__table__
    query = select(
        table.c.kpi,
        table.c.unit_code,
        table.c.period_kind,
        table.c.period_start,
        table.c.numerator,
        table.c.denominator,
    )
    query = _only_cells(session, query, formula.components, cells)
    connection = await session.connection()  # plain rows: no ORM machinery per row
    for name, unit, kind, start, numerator, denominator in (await connection.execute(query)).all():
        cell = (unit, Period(KINDS[kind], start))
        if cell in cells:
            rates[cell][name] = KPIS[name].value(numerator, denominator)
    values = []
    for unit, period in cells:
        points = formula.combine(rates.get((unit, period), {}))
        sums = (points, None) if points is not None else _zero(kpi)
        values.append(CellValue(kpi, unit, period, *sums, now))
    return values


async def refresh(
    session: AsyncSession,
    *,
    province_code: str,
    tz: ZoneInfo,
    now: datetime,
    last_refreshed: datetime | None = None,
    kpis: Iterable[KpiDefinition] | None = None,
) -> list[CellValue]:
    """Recompute the cells of `kpis` (by default all of `refreshed_kpis()`) that change with
    time alone, since the start of yesterday:

    - every stock, latest-record and median KPI in the running periods and in those that ended
      yesterday (a month that just ended is judged at its end, not at the last refresh) —
      those that ended yesterday only until a refresh has committed today (`last_refreshed`,
      None if unknown): judged at their end then, they are final, and records that change
      them later move them by differences like any past day's;
    - for rates with open records (on time until due), the day cells — and the periods holding
      them — of the open records whose due moment passed since the start of yesterday;
    - composite scores of stored components where those components changed (they change with
      time only through them), recombined from the stored cells as after an ingest.

    Empty cells among them are stored too, so that reads find them. After a downtime longer
    than a day, run `ioc kpi rebuild`.
    """
    communes = await _communes(session, province_code)
    running = _running_periods(now, tz, last_refreshed)
    since = local_midnight(local_date(now, tz) - timedelta(days=1), tz)
    wanted: Wanted = {}
    for kpi in refreshed_kpis() if kpis is None else kpis:
        formula = kpi.formula
        if not isinstance(formula, InPeriod):
            wanted[kpi.id] = {(unit, period) for unit in communes for period in running}
        else:
            wanted[kpi.id] = await _drifted_cells(
                session, formula, communes, since=since, now=now, tz=tz
            )
    # Empty running cells are stored too: reads find them instead of computing each again.
    changed = await recompute_cells(
        session, wanted, province_code=province_code, tz=tz, now=now, keep_empty=True
    )
    return changed + await _composites_of(session, changed, now=now, skip=set())


def _running_periods(now: datetime, tz: ZoneInfo, last_refreshed: datetime | None) -> set[Period]:
    """The periods a refresh at `now` judges: today's, and yesterday's until a refresh has
    committed today (see `refresh`)."""
    today = local_date(now, tz)
    yesterday_final = last_refreshed is not None and local_date(last_refreshed, tz) == today
    return periods_of([today] if yesterday_final else [today, today - timedelta(days=1)])


def counted_apart(kpi: KpiDefinition) -> bool:
    """Whether the refresh may count `kpi` outside the KPI lock (`count_stock`, then
    `store_stock` under it): a stock, whose cells the ingest moves by differences of counts."""
    return isinstance(kpi.formula, OpenAt)


@dataclass(frozen=True)
class StockCount:
    """A stock's running commune cells counted from the records, and as stored, both read in
    one snapshot."""

    kpi: KpiDefinition
    counted: list[CellValue]
    stored: dict[tuple[str, Period], tuple[float, float | None]]


async def count_stock(
    session: AsyncSession,
    kpi: KpiDefinition,
    *,
    province_code: str,
    tz: ZoneInfo,
    now: datetime,
    last_refreshed: datetime | None = None,
) -> StockCount:
    """What `refresh` recounts of stock `kpi`, read in the caller's snapshot (a REPEATABLE READ
    transaction on PostgreSQL, no lock held): its running cells from the records at `now`, and
    the same cells as stored."""
    communes = await _communes(session, province_code)
    running = _running_periods(now, tz, last_refreshed)
    computed = await compute(session, kpi, communes, running, now=now, tz=tz)
    counted = [
        CellValue(kpi, unit, period, *computed.get((unit, period), _zero(kpi)), now)
        for unit in sorted(communes)
        for period in running
    ]
    return StockCount(kpi, counted, await _stored(session, counted) if counted else {})


async def store_stock(
    session: AsyncSession, count: StockCount, *, province_code: str
) -> list[CellValue]:
    """Store `count` under the KPI lock: each cell as counted plus what the batches committed
    since its snapshot added to it (stored now − stored then), so that none of their
    differences is lost or counted twice; then the province's roll-up and the composites.
    Returns the cells changed."""
    if not count.counted:
        return []
    stored = await _stored(session, count.counted)
    values = []
    for cell in count.counted:
        key = (cell.unit_code, cell.period)
        added = stored.get(key, _zero(cell.kpi))[0] - count.stored.get(key, _zero(cell.kpi))[0]
        values.append(replace(cell, numerator=cell.numerator + added))
    changed = await _store_changed(session, values, keep_empty=True, stored=stored)
    await session.flush()
    now, periods = count.counted[0].computed_at, {c.period for c in count.counted}
    province = await _roll_up(session, count.kpi, periods, province_code, now=now)
    changed += await _store_changed(session, province, keep_empty=True)
    return changed + await _composites_of(session, changed, now=now, skip=set())


def refreshed_kpis() -> list[KpiDefinition]:
    """The KPIs whose cells `refresh` recomputes: those the engine computes that change with
    time alone (stocks, latest records, medians; rates over records that drift), but the
    composites of stored components, recombined as their components change."""
    return [
        kpi
        for kpi in CATALOG
        if kpi.engine_computed
        and not _follows_stored_components(kpi)
        and (not isinstance(kpi.formula, InPeriod) or kpi.formula.drifts_at is not None)
    ]


def _follows_stored_components(kpi: KpiDefinition) -> bool:
    """Whether `kpi` is a composite of stored components only (combined from their cells)."""
    formula = kpi.formula
    return isinstance(formula, Composite) and all(
        KPIS[name].engine_computed and not isinstance(KPIS[name].formula, Composite)
        for name in formula.components
    )


async def _drifted_cells(
    session: AsyncSession,
    formula: InPeriod,
    communes: set[str],
    *,
    since: datetime,
    now: datetime,
    tz: ZoneInfo,
) -> set[tuple[str, Period]]:
    """Cells holding records whose drift moment (e.g. the due time) fell in [since, now]."""
    table = STORES[formula.record_type].model
    moment = getattr(table, formula.drifts_at)
    day = getattr(table, formula.time_column)
    conditions = [table.unit_code.in_(communes), moment >= since, moment <= now, day.is_not(None)]
    stored = scan.date_column(table, formula.drifts_at)
    if stored is not None:  # the same rows, by the index on (unit, local date) when there is one
        conditions.append(stored.between(local_date(since, tz), local_date(now, tz)))
    query = select(table.unit_code, day).where(*conditions).distinct()
    cells: set[tuple[str, Period]] = set()
    for unit, found in (await session.execute(query)).all():
        cells |= {(unit, period) for period in periods_of([found])}
    return cells


async def rebuild(
    session: AsyncSession,
    *,
    province_code: str,
    tz: ZoneInfo,
    now: datetime,
    kpis: Iterable[KpiDefinition] = CATALOG,
) -> int:
    """Recompute every cell of `kpis` (all by default) from the records; returns how many cells
    are stored. On PostgreSQL in-period and stock KPIs, and composite scores with a SQL form, from
    one aggregate per local date of each record table (`ioc.kpi.scan`); on SQLite in-period KPIs
    in a few set-based statements (`ioc.kpi.bulk`); composite scores otherwise from their
    components' stored cells, the others cell by cell."""
    chosen = [k for k in kpis if k.engine_computed]  # the others' cells are their domain's
    communes = await _communes(session, province_code)
    today = local_date(now, tz)
    postgres = session.bind.dialect.name == "postgresql"
    if postgres:
        # No recompute writes a cell until this rebuild commits (readers go on): one that has
        # stored records waits, then adds its differences to cells that did not count them.
        await session.execute(text("LOCK TABLE kpi_values IN SHARE MODE"))
        # Large groupings stay in memory instead of spilling to disk (this transaction only).
        await session.execute(text(f"SET LOCAL work_mem = '{BULK_WORK_MEM}'"))
        done = [k for k in chosen if scan.supported(k, chosen)]
        by_record: dict[str, list[KpiDefinition]] = defaultdict(list)
        for kpi in done:
            by_record[kpi.record_type].append(kpi)
        for group in by_record.values():
            await scan.rebuild(session, group, communes, province_code, now=now, tz=tz, today=today)
        if done:  # every chosen KPI's cells go; the others are recomputed below
            await scan.store(session, [k.id for k in chosen])
        else:
            await _delete_cells(session, chosen)
    else:
        await _delete_cells(session, chosen)
        done = [k for k in chosen if isinstance(k.formula, InPeriod)]
        by_type: dict[str, list[KpiDefinition]] = defaultdict(list)
        for kpi in done:
            by_type[kpi.record_type].append(kpi)
        for group in by_type.values():
            await bulk.in_period(session, group, communes, now=now)
        await bulk.longer_periods(session, done, now=now, today=today)
        await bulk.province(session, done, province_code, now=now)
    wanted: Wanted = {}
    for kpi in chosen:
        if kpi in done or isinstance(kpi.formula, Composite):
            continue
        days = await _days_with_records(session, kpi, today, tz)
        wanted[kpi.id] = {(u, p) for u in communes for p in periods_of(days)}
    await recompute_cells(session, wanted, province_code=province_code, tz=tz, now=now)
    for kpi in chosen:
        if isinstance(kpi.formula, Composite) and kpi not in done:
            await _rebuild_composite(session, kpi, now=now)
    if postgres:
        # Fresh statistics, so that the next recomputes join the cells by their key.
        await session.execute(text("ANALYZE kpi_values"))
    return await session.scalar(select(func.count()).select_from(KpiValue)) or 0


async def _delete_cells(session: AsyncSession, kpis: list[KpiDefinition]) -> None:
    await session.execute(delete(KpiValue).where(KpiValue.kpi.in_([k.id for k in kpis])))


async def recompute_cells(
    session: AsyncSession,
    wanted: Wanted,
    *,
    province_code: str,
    tz: ZoneInfo,
    now: datetime,
    keep_empty: bool = False,
) -> list[CellValue]:
    """Compute and store these commune cells and their province roll-ups; returns changes
    (empty cells stored too if `keep_empty`, see `_store_changed`).

    Day cells come from the records; the month, quarter and year cells of additive in-period
    KPIs are the sums of their stored day cells (exact, and one pass instead of a scan per
    period); other periods are computed from the records at their end."""
    changed: list[CellValue] = []
    for kpi_id, cells in wanted.items():
        if not cells:
            continue
        kpi = KPIS[kpi_id]
        summed = isinstance(kpi.formula, InPeriod)
        direct = {c for c in cells if not (summed and c[1].kind is not PeriodKind.DAY)}
        computed = await compute(
            session, kpi, {u for u, _ in direct}, {p for _, p in direct}, now=now, tz=tz
        )
        values = [
            CellValue(kpi, unit, period, *computed.get((unit, period), _zero(kpi)), now)
            for unit, period in direct
        ]
        changed += await _store_changed(session, values, keep_empty=keep_empty)
        await session.flush()
        longer = cells - direct
        if longer:
            sums = await _sum_days(session, kpi, longer)
            values = [
                CellValue(kpi, unit, period, *sums.get((unit, period), _zero(kpi)), now)
                for unit, period in longer
            ]
            changed += await _store_changed(session, values, keep_empty=keep_empty)
            await session.flush()
        periods = {p for _, p in cells}
        if kpi.is_additive:
            province = await _roll_up(session, kpi, periods, province_code, now=now)
        else:
            province = await _totals(session, kpi, periods, province_code, now=now, tz=tz)
        changed += await _store_changed(session, province, keep_empty=keep_empty)
    return changed


async def _sum_days(
    session: AsyncSession, kpi: KpiDefinition, cells: set[tuple[str, Period]]
) -> dict[tuple[str, Period], tuple[float, float | None]]:
    """Month, quarter and year cells as the sums of their stored day cells."""
    units = sorted({u for u, _ in cells})
    periods = {p for _, p in cells}
    first = min(p.start for p in periods)
    last = max(p.last_day for p in periods)
    query = select(
        KpiValue.unit_code,
        KpiValue.period_start,
        KpiValue.numerator,
        KpiValue.denominator,
    ).where(
        KpiValue.kpi == kpi.id,
        KpiValue.period_kind == PeriodKind.DAY.value,
        KpiValue.unit_code.in_(units),
        KpiValue.period_start.between(first, last),
    )
    by_period: dict[tuple[str, Period], list[float | None]] = {}
    for unit, day, numerator, denominator in (await session.execute(query)).all():
        for kind in (PeriodKind.MONTH, PeriodKind.QUARTER, PeriodKind.YEAR):
            period = Period.containing(kind, day)
            if (unit, period) in cells:
                total = by_period.setdefault((unit, period), [0.0, None])
                total[0] = (total[0] or 0.0) + numerator
                if denominator is not None:
                    total[1] = (total[1] or 0.0) + denominator
    return {cell: (n or 0.0, d) for cell, (n, d) in by_period.items()}


def _zero(kpi: KpiDefinition) -> tuple[float, float | None]:
    has_denominator = kpi.is_ratio
    return 0.0, (0.0 if has_denominator else None)


async def _communes(session: AsyncSession, province_code: str) -> set[str]:
    query = select(AdminUnit.code).where(
        AdminUnit.parent_code == province_code, AdminUnit.level == COMMUNE_LEVEL
    )
    return set((await session.scalars(query)).all())


async def _days_with_records(
    session: AsyncSession, kpi: KpiDefinition, today: date, tz: ZoneInfo
) -> set[date]:
    """Days whose cells a rebuild computes: those records fall on, and for stocks every day
    from the first record (within the horizon) to today."""
    formula = kpi.formula
    if isinstance(formula, SourceLag):  # from the first source's creation
        from ioc.ingest.models import ConnectorInstance

        created = await session.scalar(select(func.min(ConnectorInstance.created_at)))
        if created is None:
            return set()
        first = max(local_date(created, tz), today - timedelta(days=STOCK_HORIZON_DAYS))
        return {first + timedelta(days=n) for n in range((today - first).days + 1)}
    table = STORES[formula.record_type].model
    if isinstance(formula, InPeriod | MedianInPeriod):
        column = getattr(table, formula.time_column)
        return {d for d in (await session.scalars(select(column).distinct())).all() if d}
    if isinstance(formula, Composite):
        days: set[date] = set()
        for name in formula.components:
            days |= await _days_with_records(session, KPIS[name], today, tz)
        return days
    first_column = formula.active_from if isinstance(formula, OpenAt) else formula.date_column
    column = getattr(table, first_column)
    first = await session.scalar(select(func.min(column)))
    if first is None:
        return set()
    first = max(first, today - timedelta(days=STOCK_HORIZON_DAYS))
    return {first + timedelta(days=n) for n in range((today - first).days + 1)}


async def _roll_up(
    session: AsyncSession,
    kpi: KpiDefinition,
    periods: set[Period],
    province_code: str,
    *,
    now: datetime,
) -> list[CellValue]:
    """Province cells as the sum of their communes' numerators and denominators."""
    keys = [(p.kind.value, p.start) for p in periods]
    sums: dict[tuple[str, date], tuple[float, float | None]] = {}
    for start in range(0, len(keys), 300):
        result = await session.execute(
            select(
                KpiValue.period_kind,
                KpiValue.period_start,
                func.sum(KpiValue.numerator),
                func.sum(KpiValue.denominator),
            )
            .where(
                KpiValue.kpi == kpi.id,
                KpiValue.unit_code != province_code,
                tuple_(KpiValue.period_kind, KpiValue.period_start).in_(keys[start : start + 300]),
            )
            .group_by(KpiValue.period_kind, KpiValue.period_start)
        )
        for kind, period_start, numerator, denominator in result.all():
            sums[(kind, period_start)] = (numerator or 0.0, denominator)
    values = []
    for period in periods:
        numerator, denominator = sums.get((period.kind.value, period.start), _zero(kpi))
        if kpi.is_ratio and denominator is None:
            denominator = 0.0
        values.append(CellValue(kpi, province_code, period, numerator, denominator, now))
    return values


async def _totals(
    session: AsyncSession,
    kpi: KpiDefinition,
    periods: set[Period],
    province_code: str,
    *,
    now: datetime,
    tz: ZoneInfo,
) -> list[CellValue]:
    """Province cells of a non-additive KPI, computed over all its communes' records at once."""
    communes = await _communes(session, province_code)
    totals = await compute(session, kpi, communes, periods, now=now, tz=tz, by=None)
    return [
        CellValue(kpi, province_code, p, *totals.get((TOTAL, p), _zero(kpi)), now) for p in periods
    ]


async def _store_changed(
    session: AsyncSession,
    values: list[CellValue],
    *,
    keep_empty: bool = False,
    stored: dict[tuple[str, Period], tuple[float, float | None]] | None = None,
) -> list[CellValue]:
    """Write the cells whose numerator or denominator differ from what is stored (`stored`, if
    the caller has just read it); returns them.

    A cell with nothing in it is not created (a missing cell reads as zero), only updated —
    unless `keep_empty`: then it is stored too (so that reads find it instead of computing
    it), but not returned, its value being the zero it read as."""
    if not values:
        return []
    if stored is None:
        stored = await _stored(session, values)
    changed = []
    written = []
    for v in values:
        before = stored.get((v.unit_code, v.period))
        if before == (v.numerator, v.denominator):
            continue
        if before is None and v.numerator == 0 and not v.denominator:
            if keep_empty:
                written.append(v)
            continue
        changed.append(v)
        written.append(v)
    await upsert(
        session,
        KpiValue,
        [
            {
                "kpi": v.kpi.id,
                "unit_code": v.unit_code,
                "period_kind": v.period.kind.value,
                "period_start": v.period.start,
                "numerator": v.numerator,
                "denominator": v.denominator,
                "value": v.value,
                "computed_at": v.computed_at,
            }
            for v in written
        ],
        keys=("kpi", "unit_code", "period_kind", "period_start"),
    )
    return changed


def _only_cells(
    session: AsyncSession, query: Any, kpis: Iterable[str], cells: Iterable[tuple[str, Period]]
) -> Any:
    """`query` over kpi_values narrowed to the cells of `kpis` at these (unit, period): on
    PostgreSQL a join with the whole primary keys as array parameters (so that a few
    thousand cells are found by key, never by sorting the table), elsewhere the units and the
    range of starts they span."""
    kpis, cells = list(kpis), list(cells)
    table = KpiValue.__table__
    if session.bind.dialect.name != "postgresql":
        starts = [p.start for _, p in cells]
        return query.where(
            table.c.kpi.in_(kpis),
            table.c.unit_code.in_(sorted({u for u, _ in cells})),
            table.c.period_start.between(min(starts), max(starts)),
        )
    keys = (
        func.unnest(
            bindparam("cell_kpis", [k for k in kpis for _ in cells], type_=ARRAY(String)),
            bindparam("cell_units", [u for _ in kpis for u, _ in cells], type_=ARRAY(String)),
            bindparam(
                "cell_kinds", [p.kind.value for _ in kpis for _, p in cells], type_=ARRAY(String)
            ),
            bindparam("cell_starts", [p.start for _ in kpis for _, p in cells], type_=ARRAY(Date)),
        )
        .table_valued("kpi", "unit_code", "period_kind", "period_start")
        .render_derived(name="wanted")
    )
    return query.join(
        keys,
        (table.c.kpi == keys.c.kpi)
        & (table.c.unit_code == keys.c.unit_code)
        & (table.c.period_kind == keys.c.period_kind)
        & (table.c.period_start == keys.c.period_start),
    )


async def _stored(
    session: AsyncSession, values: list[CellValue]
) -> dict[tuple[str, Period], tuple[float, float | None]]:
    table = KpiValue.__table__
    query = select(
        table.c.unit_code,
        table.c.period_kind,
        table.c.period_start,
        table.c.numerator,
        table.c.denominator,
    )
    query = _only_cells(
        session, query, [values[0].kpi.id], {(v.unit_code, v.period) for v in values}
    )
    connection = await session.connection()  # plain rows: no ORM machinery per row
    return {
        (unit, Period(KINDS[kind], start)): (numerator, denominator)
        for unit, kind, start, numerator, denominator in (await connection.execute(query)).all()
    }


def to_read(
    kpi: KpiDefinition, unit_code: str, period: Period, cell: CellValue | KpiValue | None
) -> KpiRead:
    """A KPI cell as presented; a missing cell reads as zero (no records)."""
    numerator, denominator = (cell.numerator, cell.denominator) if cell else _zero(kpi)
    return KpiRead(
        kpi=kpi.id,
        unit=unit_code,
        name_vi=kpi.name_vi,
        name_en=kpi.name_en,
        domain=kpi.domain,
        unit_of_measure=kpi.unit_of_measure,
        good_direction=kpi.good_direction.value,
        warn=kpi.warn,
        critical=kpi.critical,
        period_kind=period.kind.value,
        period_start=period.start,
        value=kpi.value(numerator, denominator),
        numerator=numerator,
        denominator=denominator,
        computed_at=cell.computed_at if cell is not None else None,
    )


def headline_period(kpi: KpiDefinition, *, now: datetime, tz: ZoneInfo) -> Period:
    """The period a tile shows for `kpi` now: e.g. this month, or today."""
    return Period.containing(kpi.headline_period, local_date(now, tz))


async def cell_value(
    session: AsyncSession,
    kpi: KpiDefinition,
    unit_code: str,
    period: Period,
    *,
    now: datetime,
    tz: ZoneInfo,
) -> KpiRead:
    """One cell as stored, or computed on read when no recompute has stored it yet (a stock
    in a period that has just begun): never a zero that is not one."""
    cell = await session.get(KpiValue, (kpi.id, unit_code, period.kind.value, period.start))
    if cell is not None:
        return to_read(kpi, unit_code, period, cell)
    if stored_unless_empty(kpi):
        return CellValue(kpi, unit_code, period, *_zero(kpi), now).read()
    children = await _children(session, unit_code)
    return await _computed_cell(session, kpi, unit_code, children, period, now=now, tz=tz)


def stored_unless_empty(kpi: KpiDefinition) -> bool:
    """Whether every cell of `kpi` with something in it is stored, so that a missing one is
    empty: in-period sums are, by each ingest that counts a record in them (whatever its
    period, past or future) and by the refresh when one turns late. Stocks, medians and
    latest values are judged at a moment, and a new period's may not be stored yet."""
    return isinstance(kpi.formula, InPeriod)


async def _children(session: AsyncSession, unit_code: str) -> list[str]:
    """The codes of the units directly under `unit_code`."""
    query = select(AdminUnit.code).where(AdminUnit.parent_code == unit_code)
    return list((await session.scalars(query)).all())


async def _computed_cell(
    session: AsyncSession,
    kpi: KpiDefinition,
    unit_code: str,
    children: list[str],
    period: Period,
    *,
    now: datetime,
    tz: ZoneInfo,
) -> KpiRead:
    """A cell computed from the records (or incidents, or sources) under the unit."""
    units = children or [unit_code]
    if isinstance(kpi.formula, IncidentResponse) and children:  # those of the unit itself
        units = [*children, unit_code]
    totals = await compute(session, kpi, units, [period], now=now, tz=tz, by=None)
    sums = totals.get((TOTAL, period), _zero(kpi))
    return CellValue(kpi, unit_code, period, *sums, now).read()


async def current_value(
    session: AsyncSession, kpi: KpiDefinition, unit_code: str, *, now: datetime, tz: ZoneInfo
) -> KpiRead:
    """The headline value of one KPI for one unit."""
    period = headline_period(kpi, now=now, tz=tz)
    return await cell_value(session, kpi, unit_code, period, now=now, tz=tz)


class ComputedCells(Protocol):
    """Where `current_values` keeps the cells it computed on read, until one of their
    (kpi, unit) changes or their time is up (`ioc.kpi.reads.SeriesCache`)."""

    def computed_ticket(self, kpi_id: str, unit_code: str) -> int:
        """Take before computing; `remember_computed` refuses a cell that changed since."""
        ...

    def computed(self, kpi_id: str, unit_code: str, period: Period) -> KpiRead | None:
        """The cell computed before, if it still holds."""
        ...

    def remember_computed(
        self, kpi_id: str, unit_code: str, period: Period, read: KpiRead, ticket: int
    ) -> None:
        """Keep `read`, computed after `ticket` was taken."""
        ...


async def current_values(
    session: AsyncSession,
    unit_code: str,
    *,
    now: datetime,
    tz: ZoneInfo,
    kpis: Iterable[KpiDefinition] = CATALOG,
    computed: ComputedCells | None = None,
) -> list[KpiRead]:
    """The headline value of every catalogue KPI (or of `kpis`) for one unit.

    The stored cells come in one statement. A cell not stored yet is computed on read, as
    `cell_value` does, except where it is known empty — a KPI `stored_unless_empty`, or a unit
    holding no record of the KPI's type at all: then it reads as the empty cell computing it
    would give, without a statement per KPI. Cells computed on read are taken from, and kept
    in, `computed` when given.
    """
    wanted = [(kpi, headline_period(kpi, now=now, tz=tz)) for kpi in kpis]
    stored = await _stored_cells(session, unit_code, wanted)
    missing = {
        kpi.record_type
        for kpi, period in wanted
        if (kpi.id, period) not in stored and not stored_unless_empty(kpi)
    }
    empty = await _types_without_records(session, unit_code, missing & STORES.keys())
    children: list[str] | None = None
    values = []
    for kpi, period in wanted:
        cell = stored.get((kpi.id, period))
        if cell is not None:
            values.append(to_read(kpi, unit_code, period, cell))
        elif kpi.record_type in empty or stored_unless_empty(kpi):
            values.append(CellValue(kpi, unit_code, period, *_zero(kpi), now).read())
        elif computed is not None and (read := computed.computed(kpi.id, unit_code, period)):
            values.append(read)
        else:
            ticket = computed.computed_ticket(kpi.id, unit_code) if computed else 0
            if children is None:
                children = await _children(session, unit_code)
            read = await _computed_cell(session, kpi, unit_code, children, period, now=now, tz=tz)
            if computed is not None:
                computed.remember_computed(kpi.id, unit_code, period, read, ticket)
            values.append(read)
    return values


async def _stored_cells(
    session: AsyncSession, unit_code: str, wanted: list[tuple[KpiDefinition, Period]]
) -> dict[tuple[str, Period], KpiValue]:
    """The stored cells among `wanted` for `unit_code`, by (kpi id, period)."""
    if not wanted:
        return {}
    query = select(KpiValue).where(
        KpiValue.unit_code == unit_code,
        tuple_(KpiValue.kpi, KpiValue.period_kind, KpiValue.period_start).in_(
            [(kpi.id, period.kind.value, period.start) for kpi, period in wanted]
        ),
    )
    return {
        (cell.kpi, Period(KINDS[cell.period_kind], cell.period_start)): cell
        for cell in await session.scalars(query)
    }


async def _types_without_records(
    session: AsyncSession, unit_code: str, record_types: set[str]
) -> set[str]:
    """Those of `record_types` of which neither the unit nor its children hold any record."""
    if not record_types:
        return set()
    children = select(AdminUnit.code).where(AdminUnit.parent_code == unit_code)
    held = union_all(
        *(
            select(literal(record_type)).where(
                exists().where(
                    STORES[record_type].model.unit_code.in_(children)
                    | (STORES[record_type].model.unit_code == unit_code)
                )
            )
            for record_type in sorted(record_types)
        )
    )
    return record_types - set((await session.scalars(held)).all())


def is_headline(value: CellValue, *, now: datetime, tz: ZoneInfo) -> bool:
    """Whether a changed cell is the one tiles show now."""
    return value.period == headline_period(value.kpi, now=now, tz=tz)
