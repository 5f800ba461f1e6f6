"""Response times: MTTA and MTTR as catalogue KPIs kept up to date as incidents are
acknowledged and resolved, and the statistics behind them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.common import InvalidRule
from ioc.incidents.models import Incident
from ioc.incidents.rules import unit_names
from ioc.incidents.schemas import StatsRead, StatsRow
from ioc.kit.clock import local_date
from ioc.kit.upsert import upsert
from ioc.kpi.catalog import CATALOG, KPIS, KpiDefinition
from ioc.kpi.formulas import IncidentResponse
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.schemas import KpiRead
from ioc.kpi.service import to_read


@dataclass(frozen=True)
class ResponseKpi:
    """Mean minutes from opening to a later moment (`column`) of the incidents that reached it;
    declared in the KPI catalogue (an `IncidentResponse` formula), stored here."""

    id: str
    column: str

    @property
    def definition(self) -> KpiDefinition:
        """The catalogue's declaration (labels, unit, direction)."""
        return KPIS[self.id]


RESPONSE_KPIS = tuple(
    ResponseKpi(k.id, k.formula.moment) for k in CATALOG if isinstance(k.formula, IncidentResponse)
)
RESPONSE_KPI_IDS = {k.id: k for k in RESPONSE_KPIS}
RESPONSE_PERIOD = PeriodKind.MONTH
"""The period a response-time tile shows (the catalogue's headline period)."""


def response_read(kpi: ResponseKpi, unit: str, period: Period, cell: KpiValue | None) -> KpiRead:
    """A response-time cell as KPI tiles read it (mean minutes; none without incidents)."""
    return to_read(kpi.definition, unit, period, cell)


async def update_response_kpis(
    session: AsyncSession,
    *,
    incidents: Iterable[Incident],
    province: str,
    tz: ZoneInfo,
    now: datetime,
) -> list[KpiRead]:
    """Recompute the MTTA/MTTR cells (day, month, quarter, year) these incidents'
    acknowledgement or resolution fell in, for their units and the province, into
    `kpi_values`; returns the changed month cells (the tiles') to publish."""
    wanted: dict[tuple[str, Period], set[str]] = {}
    for incident in incidents:
        for kpi in RESPONSE_KPIS:
            moment = getattr(incident, kpi.column)
            if moment is None:
                continue
            day = local_date(moment, tz)
            for kind in PeriodKind:
                units = wanted.setdefault((kpi.id, Period.containing(kind, day)), set())
                units |= {u for u in (incident.unit_code, province) if u}
    rows = []
    published = []
    for (kpi_id, period), units in wanted.items():
        kpi = RESPONSE_KPI_IDS[kpi_id]
        column = getattr(Incident, kpi.column)
        start, end = period.bounds(tz)
        found = (
            await session.execute(
                select(Incident.unit_code, Incident.opened_at, column).where(
                    column >= start, column < end
                )
            )
        ).all()
        sums: dict[str, list[float]] = {}
        for unit, opened, reached in found:
            minutes = max((reached - opened).total_seconds() / 60, 0.0)
            for key in {unit, province}:
                if key in units:
                    total = sums.setdefault(key, [0.0, 0.0])
                    total[0] += minutes
                    total[1] += 1
        for unit in units:
            numerator, denominator = sums.get(unit, [0.0, 0.0])
            value = round(numerator / denominator, 4) if denominator else None
            rows.append(
                {
                    "kpi": kpi_id,
                    "unit_code": unit,
                    "period_kind": period.kind.value,
                    "period_start": period.start,
                    "numerator": numerator,
                    "denominator": denominator,
                    "value": value,
                    "computed_at": now,
                }
            )
            if period.kind is RESPONSE_PERIOD:
                cell = KpiValue(**rows[-1])
                published.append(response_read(kpi, unit, period, cell))
    await upsert(session, KpiValue, rows, keys=("kpi", "unit_code", "period_kind", "period_start"))
    return published


async def response_value(
    session: AsyncSession, kpi_id: str, unit: str, *, now: datetime, tz: ZoneInfo
) -> KpiRead:
    """The running month's MTTA or MTTR cell of a unit."""
    kpi = RESPONSE_KPI_IDS[kpi_id]
    period = Period.containing(RESPONSE_PERIOD, local_date(now, tz))
    cell = await session.get(KpiValue, (kpi_id, unit, period.kind.value, period.start))
    return response_read(kpi, unit, period, cell)


async def stats(
    session: AsyncSession,
    *,
    by: str,
    date_from: datetime | None,
    date_to: datetime | None,
) -> StatsRead:
    """Opened, acknowledged, resolved counts and MTTA/MTTR by unit or agency, for incidents
    opened in [date_from, date_to]."""
    if by not in ("unit", "agency"):
        raise InvalidRule(f"by must be unit or agency, not {by!r}")
    if date_from and date_to and date_from > date_to:
        raise InvalidRule("from is after to")
    key = Incident.unit_code if by == "unit" else Incident.agency_code
    query = select(key, Incident.opened_at, Incident.acknowledged_at, Incident.resolved_at)
    if date_from is not None:
        query = query.where(Incident.opened_at >= date_from)
    if date_to is not None:
        query = query.where(Incident.opened_at <= date_to)
    groups: dict[str | None, list[Any]] = {}
    for row in (await session.execute(query)).all():
        groups.setdefault(row[0], []).append(row)
    labels = await unit_names(session, [k for k in groups if k]) if by == "unit" else {}
    rows = [
        _stats_row(k, labels.get(k, k) if k else None, members) for k, members in groups.items()
    ]
    rows.sort(key=lambda r: (-(r.opened), r.key or ""))
    everything = [m for members in groups.values() for m in members]
    return StatsRead(
        by=by,
        date_from=date_from,
        date_to=date_to,
        rows=rows,
        total=_stats_row(None, None, everything),
    )


def _stats_row(key: str | None, label: str | None, members: list[Any]) -> StatsRow:
    acks = [(a - o).total_seconds() / 60 for _, o, a, _ in members if a is not None]
    fixes = [(r - o).total_seconds() / 60 for _, o, _, r in members if r is not None]
    return StatsRow(
        key=key,
        label=label,
        opened=len(members),
        acknowledged=len(acks),
        resolved=len(fixes),
        mtta_minutes=round(sum(acks) / len(acks), 2) if acks else None,
        mttr_minutes=round(sum(fixes) / len(fixes), 2) if fixes else None,
    )
