"""Rule kinds and what each measures per subject, with the evidence behind the measurement.

Three families:
- `kpi_threshold`: a KPI's headline cell for a unit (or for each commune below it), read from
  `kpi_values`; its evidence is the cell and the records behind it (`/api/v1/kpis/…/records`).
- record kinds (`dossier_overdue`, …): the records behind a KPI cell side (selected with the KPI
  engine's own `side_conditions`, so the drill-down link lists exactly them), narrowed by the
  rule's parameters and grouped into subjects (commune, field, agency, facility); the value is
  how many there are (or, for beds, the occupancy they add up to).
- `connector_health`: how many polling intervals a connector has been failing or stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.models import IncidentRule
from ioc.ingest.models import ConnectorInstance
from ioc.kit.clock import local_date
from ioc.kpi.calendar import WorkingCalendar
from ioc.kpi.catalog import KPIS, Direction, KpiDefinition, ValueKind
from ioc.kpi.formulas import Composite, InPeriod
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period
from ioc.kpi.reads import AXES, KPIS_PATH, side_conditions
from ioc.kpi.service import to_read
from ioc.records.stores import STORES
from ioc.units.models import AdminUnit

KPI_THRESHOLD = "kpi_threshold"
CONNECTOR_HEALTH = "connector_health"
ABOVE, BELOW = "above", "below"
MAX_EVIDENCE_RECORDS = 5000
"""Record ids kept per incident; the drill-down query still lists every one of them."""


class NoParams(BaseModel):
    """A kind without parameters."""

    model_config = ConfigDict(extra="forbid")


class OverdueParams(BaseModel):
    """Overdue by at least `working_days` whole working days (0: past due at all)."""

    model_config = ConfigDict(extra="forbid")

    working_days: int = Field(default=0, ge=0, le=120)


class WaitParams(BaseModel):
    """Emergency visits that waited longer than `limit_minutes`."""

    model_config = ConfigDict(extra="forbid")

    limit_minutes: float = Field(default=60.0, gt=0, le=24 * 60)


@dataclass(frozen=True)
class RecordKind:
    """A record rule kind: the KPI cell side whose records it watches and how it groups them."""

    name: str
    kpi: str
    side: str
    axes: tuple[str, ...]
    """Record columns a rule may group by besides the commune (`unit_code`, always)."""
    default_group: tuple[str, ...]
    title_vi: str
    title_en: str
    params: type[BaseModel]
    occupancy: bool = False
    """Value = occupied ÷ available beds of the records (else: how many records)."""
    exact_query: bool = True
    """Whether the drill-down link lists exactly the evidence (else a superset of it)."""
    due_column: str | None = None
    """The watched records' local due date, for kinds whose records are all due by now (late
    or overdue): the query reads only those due up to today (through the `(unit, due date)`
    index where there is one, not every open record or the whole month's), and an
    `OverdueParams.working_days` cutoff applies to it."""

    @property
    def definition(self) -> KpiDefinition:
        """The KPI whose cell side this kind reads."""
        return KPIS[self.kpi]


RECORD_KINDS: dict[str, RecordKind] = {
    kind.name: kind
    for kind in (
        RecordKind(
            "dossier_overdue",
            "onestop.overdue_open",
            "numerator",
            axes=("field_code", "agency_code", "procedure_code"),
            default_group=("unit_code", "field_code"),
            title_vi="Hồ sơ quá hạn",
            title_en="Overdue dossiers",
            params=OverdueParams,
            due_column="due_date",
        ),
        RecordKind(
            "dossier_late_without_apology",
            "onestop.apology_rate",
            "late",
            axes=("field_code", "agency_code", "procedure_code"),
            default_group=("unit_code", "agency_code"),
            title_vi="Hồ sơ trễ hạn chưa có phiếu xin lỗi",
            title_en="Late dossiers without an apology slip",
            params=NoParams,
            due_column="due_date",
        ),
        RecordKind(
            "feedback_overdue",
            "feedback.overdue_open",
            "numerator",
            axes=("agency",),
            default_group=("unit_code", "agency"),
            title_vi="Phản ánh kiến nghị quá hạn",
            title_en="Overdue citizen feedback",
            params=OverdueParams,
            due_column="expected_date",
        ),
        RecordKind(
            "er_wait",
            "health.er_wait_minutes",
            "denominator",
            axes=("facility_code",),
            default_group=("unit_code", "facility_code"),
            title_vi="Người bệnh cấp cứu chờ quá lâu",
            title_en="Emergency patients waiting too long",
            params=WaitParams,
            exact_query=False,  # the wait limit is not a records filter
        ),
        RecordKind(
            "bed_occupancy",
            "health.bed_occupancy",
            "numerator",
            axes=("facility_code",),
            default_group=("unit_code", "facility_code"),
            title_vi="Công suất giường bệnh vượt ngưỡng",
            title_en="Bed occupancy above the limit",
            params=NoParams,
            occupancy=True,
        ),
    )
}
KINDS = (KPI_THRESHOLD, *RECORD_KINDS, CONNECTOR_HEALTH)


def kpi_direction(kpi: KpiDefinition) -> str:
    """Which way a KPI breaches: below its thresholds when up is good, above otherwise."""
    return BELOW if kpi.good_direction is Direction.UP else ABOVE


def records_side(kpi: KpiDefinition) -> str | None:
    """The cell side whose records explain a breach: the late ones of an on-time style rate,
    else the denominator's of a ratio, the numerator's of a count; None for a score."""
    formula = kpi.formula
    if isinstance(formula, Composite):
        return None
    if (
        kpi.value_kind is ValueKind.PERCENT
        and kpi.good_direction is Direction.UP
        and isinstance(formula, InPeriod)
        and formula.numerator.where is not None
    ):
        return "late"
    return "denominator" if kpi.is_ratio else "numerator"


def cell_query(
    kpi: KpiDefinition, unit: str, period: Period, side: str, filters: Mapping[str, Any]
) -> str:
    """The drill-down URL of the records behind one side of a cell, narrowed by filters."""
    params = {
        "unit": unit,
        "period": period.kind.value,
        "start": period.start.isoformat(),
        "side": side,
        **{k: v for k, v in filters.items() if v is not None},
    }
    return f"{KPIS_PATH}/{kpi.id}/records?{urlencode(params)}"


@dataclass
class Observation:
    """What one evaluation saw of one subject of a rule."""

    subject: dict[str, str]
    value: float | None
    title: str
    title_en: str
    domain: str
    unit_code: str | None
    unit_name: str | None
    agency_code: str | None = None
    kpi: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    record_type: str | None = None
    record_ids: list[int] | None = None
    """Ids of the records behind it (record kinds); None when the evidence is a KPI cell."""


async def unit_names(session: AsyncSession, codes: Iterable[str]) -> dict[str, str]:
    """Names of these units."""
    codes = sorted(set(codes))
    if not codes:
        return {}
    rows = await session.execute(
        select(AdminUnit.code, AdminUnit.name).where(AdminUnit.code.in_(codes))
    )
    return dict(rows.all())


async def communes_under(session: AsyncSession, code: str) -> list[str]:
    """The communes a unit stands for: its children, or itself if it has none."""
    children = (
        await session.scalars(select(AdminUnit.code).where(AdminUnit.parent_code == code))
    ).all()
    return sorted(children) or [code]


def working_days_before(calendar: WorkingCalendar, day: date, count: int) -> date:
    """The `count`-th working day before `day` (`day` itself for 0)."""
    found = 0
    while found < count:
        day -= timedelta(days=1)
        if calendar.is_working_day(day):
            found += 1
    return day


# ---------------------------------------------------------------- KPI thresholds


async def observe_kpi(
    session: AsyncSession,
    *,
    kpi: KpiDefinition,
    units: list[str],
    now: datetime,
    tz: ZoneInfo,
    op_words: tuple[str, str],
) -> list[Observation]:
    """The stored headline cell of `kpi` for each unit (a missing cell reads as zero)."""
    period = Period.containing(kpi.headline_period, local_date(now, tz))
    stored = {
        cell.unit_code: cell
        for cell in await session.scalars(
            select(KpiValue).where(
                KpiValue.kpi == kpi.id,
                KpiValue.unit_code.in_(units),
                KpiValue.period_kind == period.kind.value,
                KpiValue.period_start == period.start,
            )
        )
    }
    names = await unit_names(session, units)
    side = records_side(kpi)
    observations = []
    for unit in units:
        read = to_read(kpi, unit, period, stored.get(unit))
        name = names.get(unit, unit)
        cell = {
            "kpi": kpi.id,
            "unit": unit,
            "period_kind": period.kind.value,
            "period_start": period.start.isoformat(),
            "value": read.value,
            "numerator": read.numerator,
            "denominator": read.denominator,
        }
        evidence: dict[str, Any] = {"cells": [cell], "record_type": None, "query": None}
        if side is not None:
            evidence |= {
                "record_type": kpi.record_type,
                "side": side,
                "query": cell_query(kpi, unit, period, side, {}),
                "query_exact": True,
            }
        observations.append(
            Observation(
                subject={"unit_code": unit},
                value=read.value,
                title=f"{kpi.name_vi} {op_words[0]} ngưỡng — {name}",
                title_en=f"{kpi.name_en} {op_words[1]} threshold — {name}",
                domain=kpi.domain,
                unit_code=unit,
                unit_name=name,
                kpi=kpi.id,
                evidence=evidence,
                record_type=kpi.record_type if side is not None else None,
            )
        )
    return observations


# ---------------------------------------------------------------- records


async def observe_records(
    session: AsyncSession,
    *,
    kind: RecordKind,
    params: Mapping[str, Any],
    group_by: list[str],
    communes: list[str],
    now: datetime,
    tz: ZoneInfo,
    calendar: WorkingCalendar,
) -> list[Observation]:
    """Subjects with at least one matching record among `communes`, with their records."""
    kpi = kind.definition
    table = STORES[kpi.record_type].model
    today = local_date(now, tz)
    period = Period.containing(kpi.headline_period, today)
    conditions = side_conditions(kpi, period, kind.side, now=now, tz=tz)
    link_filters: dict[str, Any] = {}
    if kind.due_column is not None:
        due = getattr(table, kind.due_column)
        working_days = params.get("working_days", 0)
        if working_days:
            cutoff = working_days_before(calendar, today, working_days)
            conditions.append(due <= cutoff)
            link_filters |= {"time_column": kind.due_column, "date_to": cutoff.isoformat()}
        else:  # implied by the side's conditions (due by now): the link omits it
            conditions.append(due <= today)
    if kind.name == "er_wait":
        conditions.append(table.wait_minutes > params.get("limit_minutes", 60.0))
    labels = AXES.get(kpi.record_type, {})
    axes = [g for g in group_by if g != "unit_code"]
    label_columns = {
        axis: next((a.label_column for a in labels.values() if a.column == axis), None)
        for axis in axes
    }
    columns = [table.id, table.unit_code, *(getattr(table, a) for a in axes)]
    columns += [getattr(table, c) for c in label_columns.values() if c is not None]
    if kind.occupancy:
        columns += [table.beds_occupied, table.beds_total, table.beds_closed]
    rows = (
        await session.execute(
            select(*columns).where(*conditions, table.unit_code.in_(communes)).order_by(table.id)
        )
    ).all()
    names = await unit_names(session, {row.unit_code for row in rows})
    grouped: dict[tuple[str, ...], list[Any]] = {}
    for row in rows:
        key = (row.unit_code, *(str(getattr(row, a)) for a in axes))
        grouped.setdefault(key, []).append(row)
    observations = []
    for key, members in grouped.items():
        unit = key[0]
        subject = {"unit_code": unit, **dict(zip(axes, key[1:], strict=True))}
        first = members[0]
        parts = [
            str(getattr(first, label_columns[a]) or getattr(first, a))
            if label_columns[a]
            else str(getattr(first, a))
            for a in axes
        ]
        unit_name = names.get(unit, unit)
        where = ", ".join([*parts, unit_name])
        if kind.occupancy:
            available = sum(r.beds_total - r.beds_closed for r in members)
            value = (
                round(100.0 * sum(r.beds_occupied for r in members) / available, 4)
                if (available > 0)
                else None
            )
        else:
            value = float(len(members))
        ids = [r.id for r in members]
        filters = {a: subject[a] for a in axes}
        evidence = {
            "record_type": kpi.record_type,
            "kpi": kpi.id,
            "side": kind.side,
            "records": len(ids),
            "truncated": len(ids) > MAX_EVIDENCE_RECORDS,
            "query": cell_query(kpi, unit, period, kind.side, filters | link_filters),
            "query_exact": kind.exact_query,
            "params": dict(params),
        }
        observations.append(
            Observation(
                subject=subject,
                value=value,
                title=f"{kind.title_vi} — {where}",
                title_en=f"{kind.title_en} — {where}",
                domain=kpi.domain,
                unit_code=unit,
                unit_name=unit_name,
                agency_code=subject.get("agency_code") or subject.get("agency"),
                kpi=kpi.id,
                evidence=evidence,
                record_type=kpi.record_type,
                record_ids=ids[:MAX_EVIDENCE_RECORDS],
            )
        )
    return observations


# ---------------------------------------------------------------- connectors


def missed_intervals(instance: ConnectorInstance, *, real_now: datetime) -> float:
    """How many polling intervals a source has been failing, or without a successful poll
    since its last one (a source still on its first run is judged by its failures alone)."""
    if not instance.enabled:
        return 0.0
    stale = 0
    if instance.last_success_at is not None:
        age = max((real_now - instance.last_success_at).total_seconds(), 0)
        stale = math.floor(age / instance.interval_seconds)
    failures = instance.consecutive_failures if instance.health == "failing" else 0
    return float(max(failures, stale))


async def observe_connectors(
    session: AsyncSession,
    *,
    instance_ids: set[int] | None,
    real_now: datetime,
    province: str,
) -> list[Observation]:
    """Each connector instance (or those given) with its missed intervals."""
    query = select(ConnectorInstance).order_by(ConnectorInstance.id)
    if instance_ids is not None:
        query = query.where(ConnectorInstance.id.in_(instance_ids))
    instances = (await session.scalars(query)).all()
    names = await unit_names(session, [province])
    observations = []
    for instance in instances:
        value = missed_intervals(instance, real_now=real_now)
        observations.append(
            Observation(
                subject={"connector": instance.name},
                value=value,
                title=f"Nguồn dữ liệu {instance.name} lỗi hoặc trễ dữ liệu",
                title_en=f"Data source {instance.name} failing or stale",
                domain="system",
                unit_code=province,
                unit_name=names.get(province, province),
                evidence={
                    "connector_id": instance.id,
                    "connector": instance.name,
                    "kind": instance.kind,
                    "health": instance.health,
                    "consecutive_failures": instance.consecutive_failures,
                    "last_success_at": _iso(instance.last_success_at),
                    "last_error": instance.last_error,
                    "last_error_at": _iso(instance.last_error_at),
                    "record_type": None,
                    "query": f"/api/v1/connectors/{instance.id}/runs",
                },
            )
        )
    return observations


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True)
class Thresholds:
    """A rule's effective thresholds and the way it breaches."""

    direction: str
    warn: float | None
    critical: float | None
    recovery: float | None

    def severity(self, value: float | None) -> str | None:
        """`critical`, `warn`, or None when `value` breaches neither."""
        if value is None:
            return None
        if self.critical is not None and self._beyond(value, self.critical):
            return "critical"
        if self.warn is not None and self._beyond(value, self.warn):
            return "warn"
        return None

    def recovered(self, value: float | None) -> bool:
        """Whether `value` is back on the good side of the recovery level."""
        if value is None or self.recovery is None:
            return False
        return value >= self.recovery if self.direction == BELOW else value <= self.recovery

    def crossed(self, severity: str) -> float | None:
        """The threshold a severity means."""
        return self.critical if severity == "critical" else self.warn

    def worse(self, a: float | None, b: float | None) -> float | None:
        """The worse of two values."""
        if a is None or b is None:
            return a if b is None else b
        return min(a, b) if self.direction == BELOW else max(a, b)

    def _beyond(self, value: float, threshold: float) -> bool:
        return value < threshold if self.direction == BELOW else value > threshold


RECORD_DEFAULT_WARN = 0.0
"""Count rules with no thresholds breach at the first matching record."""
CONNECTOR_DEFAULT_WARN, CONNECTOR_DEFAULT_CRITICAL = 2.0, 9.0


def thresholds(rule: IncidentRule) -> Thresholds:
    """The rule's thresholds, filled from the catalogue (KPI rules, beds) or the kind."""
    warn, critical = rule.warn, rule.critical
    direction = ABOVE
    default: KpiDefinition | None = None
    if rule.kind == KPI_THRESHOLD and rule.kpi in KPIS:
        default = KPIS[rule.kpi]
        direction = kpi_direction(default)
    elif rule.kind in RECORD_KINDS and RECORD_KINDS[rule.kind].occupancy:
        default = RECORD_KINDS[rule.kind].definition
    if warn is None and critical is None:
        if default is not None:
            warn, critical = default.warn, default.critical
        elif rule.kind == CONNECTOR_HEALTH:
            warn, critical = CONNECTOR_DEFAULT_WARN, CONNECTOR_DEFAULT_CRITICAL
        else:
            warn = RECORD_DEFAULT_WARN
    recovery = rule.recovery
    if recovery is None:
        recovery = warn if warn is not None else critical
    return Thresholds(direction, warn, critical, recovery)
