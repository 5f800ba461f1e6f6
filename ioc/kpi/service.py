"""The KPI engine: recomputes exactly the cells a change touched, rolls communes up to the
province by summing numerators and denominators, and reads current values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.ingest.service import ChangeSet, DossierFacts, select_dossier_facts
from ioc.kit.clock import local_date
from ioc.kit.upsert import upsert
from ioc.kpi.catalog import CATALOG, KpiDefinition
from ioc.kpi.measures import MEASURES, DossierTimes, affected_periods
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.schemas import KpiRead
from ioc.records.models import DossierRow
from ioc.sdk import CANCELLED_STATUSES
from ioc.units.models import AdminUnit

Cell = tuple[str, str, Period]
"""(kpi id, unit code, period)"""


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
    """Recompute the cells `changes` affect; returns the cells whose values changed."""
    cells = affected_cells(changes.dossiers, today=local_date(now, tz))
    if not cells:
        return []
    commune_values = await _compute_commune_cells(session, cells, tz=tz, now=now)
    changed = await _store_changed(session, commune_values)
    await session.flush()
    province_values = await _roll_up(
        session, {(kpi, period) for kpi, _, period in cells}, province_code, now=now
    )
    changed += await _store_changed(session, province_values)
    return changed


def affected_cells(facts: Iterable[DossierFacts], *, today: date) -> set[Cell]:
    """Every (kpi, commune, period) whose value may differ after these dossier versions."""
    cells: set[Cell] = set()
    for fact in facts:
        for kpi in CATALOG:
            for period in affected_periods(kpi.measure, fact, today):
                cells.add((kpi.id, fact.unit_code, period))
    return cells


async def open_dossier_facts(session: AsyncSession) -> list[DossierFacts]:
    """Facts of every open dossier: their values drift as time passes."""
    result = await session.execute(
        select_dossier_facts().where(
            DossierRow.resolved_at.is_(None),
            DossierRow.status.not_in([int(s) for s in CANCELLED_STATUSES]),
        )
    )
    return [DossierFacts(*row) for row in result.all()]


async def _compute_commune_cells(
    session: AsyncSession, cells: set[Cell], *, tz: ZoneInfo, now: datetime
) -> list[CellValue]:
    units = sorted({unit for _, unit, _ in cells})
    bounds = {period: period.bounds(tz) for _, _, period in cells}
    window_start = min(start for start, _ in bounds.values())
    window_end = max(end for _, end in bounds.values())
    by_unit = await _load_dossier_times(session, units, window_start, window_end)
    kpis = {k.id: k for k in CATALOG}
    values: list[CellValue] = []
    for kpi_id, unit, period in sorted(cells, key=lambda c: (c[0], c[1], c[2])):
        kpi = kpis[kpi_id]
        start, end = bounds[period]
        numerator, denominator = MEASURES[kpi.measure](
            by_unit.get(unit, ()), start=start, end=end, now=now
        )
        values.append(CellValue(kpi, unit, period, numerator, denominator, now))
    return values


async def _load_dossier_times(
    session: AsyncSession, units: list[str], window_start: datetime, window_end: datetime
) -> dict[str, list[DossierTimes]]:
    """Dossiers of `units` that can count in any period inside the window."""
    query = select(
        DossierRow.unit_code, DossierRow.received_at, DossierRow.due_at, DossierRow.resolved_at
    ).where(
        DossierRow.unit_code.in_(units),
        DossierRow.status.not_in([int(s) for s in CANCELLED_STATUSES]),
        DossierRow.due_at.is_not(None),
        DossierRow.due_at < window_end,
        or_(
            DossierRow.due_at >= window_start,
            DossierRow.resolved_at.is_(None),
            DossierRow.resolved_at > window_start,
        ),
    )
    by_unit: dict[str, list[DossierTimes]] = defaultdict(list)
    for row in (await session.execute(query)).all():
        by_unit[row.unit_code].append(DossierTimes(*row))
    return by_unit


async def _roll_up(
    session: AsyncSession,
    kpi_periods: set[tuple[str, Period]],
    province_code: str,
    *,
    now: datetime,
) -> list[CellValue]:
    """Province cells as the sum of their communes' numerators and denominators."""
    kpis = {k.id: k for k in CATALOG}
    keys = [(kpi, period.kind.value, period.start) for kpi, period in kpi_periods]
    sums: dict[tuple[str, str, date], tuple[float, float | None]] = {}
    for start in range(0, len(keys), 300):
        chunk = keys[start : start + 300]
        result = await session.execute(
            select(
                KpiValue.kpi,
                KpiValue.period_kind,
                KpiValue.period_start,
                func.sum(KpiValue.numerator),
                func.sum(KpiValue.denominator),
            )
            .where(
                KpiValue.unit_code != province_code,
                tuple_(KpiValue.kpi, KpiValue.period_kind, KpiValue.period_start).in_(chunk),
            )
            .group_by(KpiValue.kpi, KpiValue.period_kind, KpiValue.period_start)
        )
        for kpi, kind, period_start, numerator, denominator in result.all():
            sums[(kpi, kind, period_start)] = (numerator or 0.0, denominator)
    values = []
    for kpi_id, period in kpi_periods:
        numerator, denominator = sums.get((kpi_id, period.kind.value, period.start), (0.0, None))
        if kpis[kpi_id].is_ratio and denominator is None:
            denominator = 0.0
        values.append(CellValue(kpis[kpi_id], province_code, period, numerator, denominator, now))
    return values


async def _store_changed(session: AsyncSession, values: list[CellValue]) -> list[CellValue]:
    """Write the cells whose numerator or denominator differ from what is stored."""
    if not values:
        return []
    stored = await _stored(session, [(v.kpi.id, v.unit_code, v.period) for v in values])
    changed = [
        v
        for v in values
        if stored.get((v.kpi.id, v.unit_code, v.period)) != (v.numerator, v.denominator)
    ]
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
            for v in changed
        ],
        keys=("kpi", "unit_code", "period_kind", "period_start"),
    )
    return changed


async def _stored(
    session: AsyncSession, cells: list[Cell]
) -> dict[Cell, tuple[float, float | None]]:
    kpis = sorted({kpi for kpi, _, _ in cells})
    units = sorted({unit for _, unit, _ in cells})
    starts = [period.start for _, _, period in cells]
    result = await session.execute(
        select(
            KpiValue.kpi,
            KpiValue.unit_code,
            KpiValue.period_kind,
            KpiValue.period_start,
            KpiValue.numerator,
            KpiValue.denominator,
        ).where(
            KpiValue.kpi.in_(kpis),
            KpiValue.unit_code.in_(units),
            and_(KpiValue.period_start >= min(starts), KpiValue.period_start <= max(starts)),
        )
    )
    return {
        (kpi, unit, Period(PeriodKind(kind), start)): (numerator, denominator)
        for kpi, unit, kind, start, numerator, denominator in result.all()
    }


def to_read(
    kpi: KpiDefinition, unit_code: str, period: Period, cell: CellValue | KpiValue | None
) -> KpiRead:
    """A KPI cell as presented; a missing cell reads as zero (no records)."""
    numerator = cell.numerator if cell is not None else 0.0
    denominator = cell.denominator if cell is not None else (0.0 if kpi.is_ratio else None)
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


async def current_value(
    session: AsyncSession, kpi: KpiDefinition, unit_code: str, *, now: datetime, tz: ZoneInfo
) -> KpiRead:
    """The headline value of one KPI for one unit.

    A period that has just begun (a new day or month) has no stored cell until the next
    recompute; it is then computed on read rather than shown as zero.
    """
    period = headline_period(kpi, now=now, tz=tz)
    cell = await session.get(KpiValue, (kpi.id, unit_code, period.kind.value, period.start))
    if cell is not None:
        return to_read(kpi, unit_code, period, cell)
    return (await _compute_unstored(session, kpi, unit_code, period, tz=tz, now=now)).read()


async def _compute_unstored(
    session: AsyncSession,
    kpi: KpiDefinition,
    unit_code: str,
    period: Period,
    *,
    tz: ZoneInfo,
    now: datetime,
) -> CellValue:
    """A cell computed from the records without storing it; a parent sums its children."""
    children = (
        await session.scalars(select(AdminUnit.code).where(AdminUnit.parent_code == unit_code))
    ).all()
    units = list(children) or [unit_code]
    values = await _compute_commune_cells(
        session, {(kpi.id, unit, period) for unit in units}, tz=tz, now=now
    )
    numerator = sum(v.numerator for v in values)
    denominators = [v.denominator for v in values if v.denominator is not None]
    denominator = sum(denominators) if kpi.is_ratio else None
    return CellValue(kpi, unit_code, period, numerator, denominator, now)


async def current_values(
    session: AsyncSession, unit_code: str, *, now: datetime, tz: ZoneInfo
) -> list[KpiRead]:
    """The headline value of every catalogue KPI for one unit."""
    return [await current_value(session, kpi, unit_code, now=now, tz=tz) for kpi in CATALOG]


def is_headline(value: CellValue, *, now: datetime, tz: ZoneInfo) -> bool:
    """Whether a changed cell is the one tiles show now."""
    return value.period == headline_period(value.kpi, now=now, tz=tz)
