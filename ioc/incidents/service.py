"""Incidents: rules as data, evaluation, the lifecycle (open → acknowledged → resolved, quiet
auto-resolve, relapse re-open), human actions with a timeline, reads, counts and response times.

Evaluation runs inside the caller's transaction (after an ingest page, with the periodic KPI
refresh, after a poll run's health update); what changed is returned for publishing after the
commit. Every moment comes from the caller's clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Select, case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.models import (
    ACTIVE_STATUSES,
    RESOLVED,
    Incident,
    IncidentEvent,
    IncidentRecord,
    IncidentRule,
    RuleState,
)
from ioc.incidents.rules import (
    ABOVE,
    BELOW,
    CONNECTOR_HEALTH,
    KINDS,
    KPI_THRESHOLD,
    RECORD_KINDS,
    Observation,
    communes_under,
    kpi_direction,
    observe_connectors,
    observe_kpi,
    observe_records,
    unit_names,
)
from ioc.incidents.schemas import (
    CountRow,
    CountsRead,
    EventRead,
    IncidentDetail,
    IncidentItem,
    IncidentPage,
    IncidentRecordsPage,
    RuleCreate,
    RuleRead,
    RuleUpdate,
    StatsRead,
    StatsRow,
)
from ioc.ingest.service import ChangeSet
from ioc.kit.clock import local_date
from ioc.kit.upsert import upsert
from ioc.kpi.calendar import WorkingCalendar
from ioc.kpi.catalog import CATALOG, KPIS, KpiDefinition
from ioc.kpi.formulas import IncidentResponse
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.reads import records_behind
from ioc.kpi.schemas import KpiRead
from ioc.kpi.service import CellValue, to_read
from ioc.records.service import RecordQuery, query_records, units_under
from ioc.records.stores import STORES
from ioc.units.models import AdminUnit

SYSTEM = "system"
"""The actor of what the rules do by themselves."""
LIVE_TOPIC = "incidents"
MAX_LIVE_ITEMS = 200
"""Active incidents a live message carries (most severe, then most recent, first)."""


class IncidentNotFound(LookupError):
    """No incident (or rule) with this id."""


class InvalidRule(ValueError):
    """A rule that cannot be evaluated as written."""


class Conflict(ValueError):
    """An action that the incident's (or rule's) state does not allow."""


# ---------------------------------------------------------------- rules


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


def rule_read(rule: IncidentRule) -> RuleRead:
    """A rule as the API shows it."""
    effective = thresholds(rule)
    return RuleRead(
        id=rule.id,
        name=rule.name,
        kind=rule.kind,
        enabled=rule.enabled,
        kpi=rule.kpi,
        unit_code=rule.unit_code,
        per_commune=rule.per_commune,
        group_by=list(rule.group_by or []),
        params=dict(rule.params or {}),
        direction=effective.direction,
        warn=rule.warn,
        critical=rule.critical,
        recovery=rule.recovery,
        effective_warn=effective.warn,
        effective_critical=effective.critical,
        effective_recovery=effective.recovery,
        pending_evaluations=rule.pending_evaluations,
        quiet_minutes=rule.quiet_minutes,
        relapse_minutes=rule.relapse_minutes,
        is_default=rule.is_default,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


async def list_rules(session: AsyncSession) -> list[IncidentRule]:
    """Every rule, in id order."""
    return list((await session.scalars(select(IncidentRule).order_by(IncidentRule.id))).all())


async def get_rule(session: AsyncSession, rule_id: int) -> IncidentRule:
    """A rule, or `IncidentNotFound`."""
    rule = await session.get(IncidentRule, rule_id)
    if rule is None:
        raise IncidentNotFound(f"no rule {rule_id}")
    return rule


async def create_rule(session: AsyncSession, data: RuleCreate, *, now: datetime) -> IncidentRule:
    """Validate and store a new rule."""
    rule = IncidentRule(
        name=data.name,
        kind=data.kind,
        enabled=True if data.enabled is None else data.enabled,
        per_commune=False,
        group_by=[],
        params={},
        pending_evaluations=1,
        quiet_minutes=30.0,
        relapse_minutes=240.0,
        is_default=False,
        created_at=now,
        updated_at=now,
    )
    _apply_fields(rule, data.model_dump(exclude_unset=True, exclude={"name", "kind"}))
    await _validate(session, rule)
    session.add(rule)
    await session.flush()
    return rule


async def update_rule(
    session: AsyncSession, rule_id: int, data: RuleUpdate, *, now: datetime
) -> tuple[IncidentRule, list[Incident]]:
    """Change a rule; its open incidents follow the new thresholds at the next evaluation
    (disabling it resolves them: nothing would judge them any more). Returns the rule and the
    incidents it resolved."""
    rule = await get_rule(session, rule_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes:
        if changes["name"] is None:
            raise InvalidRule("name cannot be null")
        rule.name = changes.pop("name")
    _apply_fields(rule, changes)
    rule.updated_at = now
    await _validate(session, rule)
    closed = []
    if not rule.enabled:
        closed = await close_rule_incidents(session, rule, now=now, reason="rule disabled")
    await session.flush()
    return rule, closed


async def delete_rule(session: AsyncSession, rule_id: int, *, now: datetime) -> list[Incident]:
    """Delete a rule; its incidents stay, the active ones resolved (returned). Default rules are
    disabled instead."""
    rule = await get_rule(session, rule_id)
    if rule.is_default:
        raise Conflict(
            f"rule {rule.name!r} is a default rule and would come back at the next start; "
            "disable it instead (PATCH with enabled=false)"
        )
    closed = await close_rule_incidents(session, rule, now=now, reason="rule deleted")
    await session.delete(rule)
    await session.flush()
    return closed


async def close_rule_incidents(
    session: AsyncSession, rule: IncidentRule, *, now: datetime, reason: str
) -> list[Incident]:
    """Resolve a rule's active incidents (the rule no longer judges them)."""
    closing = list(
        (
            await session.scalars(
                select(Incident).where(
                    Incident.rule_id == rule.id, Incident.status.in_(ACTIVE_STATUSES)
                )
            )
        ).all()
    )
    for incident in closing:
        incident.status = RESOLVED
        incident.resolved_at, incident.resolved_by = now, SYSTEM
        incident.cleared_since = None
        incident.updated_at = now
        _event(session, incident, now, "resolved", SYSTEM, f"{reason}: {rule.name}")
    await session.execute(delete(RuleState).where(RuleState.rule_id == rule.id))
    return closing


def _apply_fields(rule: IncidentRule, changes: Mapping[str, Any]) -> None:
    for name, value in changes.items():
        if name in ("enabled", "per_commune", "pending_evaluations") and value is None:
            raise InvalidRule(f"{name} cannot be null")
        if name in ("quiet_minutes", "relapse_minutes") and value is None:
            raise InvalidRule(f"{name} cannot be null")
        if name == "group_by":
            value = list(value or [])
        if name == "params":
            value = dict(value or {})
        setattr(rule, name, value)


async def _validate(session: AsyncSession, rule: IncidentRule) -> None:
    """Refuse a rule that cannot be evaluated, saying why (mapped to 422)."""
    same_name = await session.scalar(
        select(IncidentRule.id).where(IncidentRule.name == rule.name, IncidentRule.id != rule.id)
        if rule.id is not None
        else select(IncidentRule.id).where(IncidentRule.name == rule.name)
    )
    if same_name is not None:
        raise InvalidRule(f"a rule named {rule.name!r} exists already (id {same_name})")
    if rule.kind not in KINDS:
        raise InvalidRule(f"kind must be one of {', '.join(KINDS)}, not {rule.kind!r}")
    if rule.unit_code is not None and await session.get(AdminUnit, rule.unit_code) is None:
        raise InvalidRule(f"unknown unit code {rule.unit_code!r}")
    if rule.kind == KPI_THRESHOLD:
        if rule.kpi is None:
            raise InvalidRule("a kpi_threshold rule needs 'kpi'")
        if rule.kpi not in KPIS:
            raise InvalidRule(f"unknown KPI {rule.kpi!r}; see /api/v1/kpis/catalog")
        if rule.group_by:
            raise InvalidRule("group_by applies to record rules; a KPI rule judges units")
        if rule.params:
            raise InvalidRule("kpi_threshold rules take no params")
    else:
        if rule.kpi is not None:
            raise InvalidRule(f"'kpi' applies to kpi_threshold rules, not {rule.kind}")
        if rule.per_commune:
            raise InvalidRule(
                "per_commune applies to kpi_threshold rules; record rules group by unit_code"
            )
    if rule.kind in RECORD_KINDS:
        kind = RECORD_KINDS[rule.kind]
        group = list(rule.group_by or kind.default_group)
        allowed = ("unit_code", *kind.axes)
        unknown = [g for g in group if g not in allowed]
        if unknown or "unit_code" not in group or len(set(group)) != len(group):
            raise InvalidRule(
                f"group_by of {rule.kind} must list unit_code and any of "
                f"{', '.join(kind.axes)} once each; got {group}"
            )
        rule.group_by = group
        try:
            rule.params = kind.params.model_validate(rule.params or {}).model_dump()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                for e in exc.errors()
            )
            raise InvalidRule(f"params of {rule.kind}: {problems}") from None
    if rule.kind == CONNECTOR_HEALTH and (rule.group_by or rule.params or rule.unit_code):
        raise InvalidRule("connector_health rules take no group_by, params or unit_code")
    limits = thresholds(rule)
    if limits.warn is None and limits.critical is None:
        raise InvalidRule(f"KPI {rule.kpi} has no default thresholds; set warn or critical")
    levels = [v for v in (limits.critical, limits.warn, limits.recovery) if v is not None]
    ordered = sorted(levels) if limits.direction == BELOW else sorted(levels, reverse=True)
    if levels != ordered:
        words = (
            "critical ≤ warn ≤ recovery"
            if limits.direction == BELOW
            else ("critical ≥ warn ≥ recovery")
        )
        raise InvalidRule(
            f"this rule breaches {limits.direction} its thresholds, so they must be ordered "
            f"{words}; got critical={limits.critical}, warn={limits.warn}, "
            f"recovery={limits.recovery}"
        )
    rule.direction = limits.direction


def default_rules() -> list[dict[str, Any]]:
    """The rules a new deployment starts with: every catalogue KPI with thresholds (judged for
    the province, thresholds from the catalogue) and one rule of each record kind."""
    rules: list[dict[str, Any]] = [
        {"name": f"kpi:{kpi.id}", "kind": KPI_THRESHOLD, "kpi": kpi.id, "pending_evaluations": 2}
        for kpi in CATALOG
        if kpi.warn is not None or kpi.critical is not None
    ]
    rules += [
        {
            "name": "dossiers-overdue-by-field",
            "kind": "dossier_overdue",
            "params": {"working_days": 2},
            "warn": 4.0,
            "critical": 19.0,
        },
        {
            "name": "dossiers-late-without-apology",
            "kind": "dossier_late_without_apology",
            "warn": 4.0,
            "critical": 19.0,
        },
        {"name": "feedback-overdue", "kind": "feedback_overdue", "warn": 4.0, "critical": 19.0},
        {
            "name": "emergency-waits",
            "kind": "er_wait",
            "params": {"limit_minutes": 60},
            "warn": 2.0,
            "critical": 9.0,
        },
        {"name": "bed-occupancy", "kind": "bed_occupancy", "recovery": 80.0},
        {"name": "connectors", "kind": CONNECTOR_HEALTH},
    ]
    return rules


async def seed_default_rules(session: AsyncSession, *, now: datetime) -> int:
    """Store the default rules not stored yet (an edited default keeps its edits)."""
    existing = set((await session.scalars(select(IncidentRule.name))).all())
    added = 0
    for spec in default_rules():
        if spec["name"] in existing:
            continue
        rule = await create_rule(session, RuleCreate(**spec), now=now)
        rule.is_default = True
        added += 1
    await session.flush()
    return added


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Evaluation:
    """The moment and settings an evaluation judges with."""

    now: datetime
    real_now: datetime
    """Operational time, for connector staleness (poll times are real time)."""
    tz: ZoneInfo
    calendar: WorkingCalendar
    province: str


@dataclass
class IncidentChanges:
    """What an evaluation or an action changed, to publish after the commit."""

    incidents: list[IncidentItem] = field(default_factory=list)
    active: list[IncidentItem] = field(default_factory=list)
    response_cells: list[KpiRead] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.incidents or self.response_cells)


def dedup_key(rule_id: int, subject: Mapping[str, str]) -> str:
    """One active incident per rule and subject."""
    return f"rule:{rule_id}|" + "|".join(f"{k}={subject[k]}" for k in sorted(subject))


async def evaluate_after_ingest(
    session: AsyncSession, *, changes: ChangeSet, cells: Sequence[CellValue], env: Evaluation
) -> IncidentChanges:
    """Judge what one ingest touched: record rules in the communes of the changed records,
    KPI rules on the changed headline cells."""
    changed_units: dict[str, set[str]] = {
        record_type: {f["unit_code"] for f in facts}
        for record_type, facts in changes.facts.items()
        if facts
    }
    cell_units: dict[str, set[str]] = {}
    for cell in cells:
        cell_units.setdefault(cell.kpi.id, set()).add(cell.unit_code)
    touched: list[Incident] = []
    for rule in await _enabled_rules(session):
        if rule.kind == KPI_THRESHOLD and rule.kpi in cell_units:
            touched += await _evaluate_rule(session, rule, env, units=cell_units[rule.kpi])
        elif rule.kind in RECORD_KINDS:
            record_type = RECORD_KINDS[rule.kind].definition.record_type
            if record_type in changed_units:
                touched += await _evaluate_rule(
                    session, rule, env, units=changed_units[record_type]
                )
    return await _finish(session, touched, env)


async def evaluate_all(session: AsyncSession, *, env: Evaluation) -> IncidentChanges:
    """Judge every enabled rule everywhere (the periodic pass: time alone clears and breaches)."""
    touched: list[Incident] = []
    for rule in await _enabled_rules(session):
        touched += await _evaluate_rule(session, rule, env, units=None)
    return await _finish(session, touched, env)


async def evaluate_connectors(
    session: AsyncSession, *, instance_ids: set[int] | None, env: Evaluation
) -> IncidentChanges:
    """Judge the connector rules for these instances (after their health changed)."""
    touched: list[Incident] = []
    for rule in await _enabled_rules(session):
        if rule.kind == CONNECTOR_HEALTH:
            touched += await _evaluate_rule(session, rule, env, instance_ids=instance_ids)
    return await _finish(session, touched, env)


async def _enabled_rules(session: AsyncSession) -> list[IncidentRule]:
    query = select(IncidentRule).where(IncidentRule.enabled).order_by(IncidentRule.id)
    return list((await session.scalars(query)).all())


async def _evaluate_rule(
    session: AsyncSession,
    rule: IncidentRule,
    env: Evaluation,
    *,
    units: set[str] | None = None,
    instance_ids: set[int] | None = None,
) -> list[Incident]:
    """Observe a rule's subjects (within `units` when given) and apply the lifecycle."""
    base = rule.unit_code or env.province
    if rule.kind == KPI_THRESHOLD:
        kpi = KPIS.get(rule.kpi or "")
        if kpi is None:
            return []
        scope = await communes_under(session, base) if rule.per_commune else [base]
        if units is not None:
            scope = [u for u in scope if u in units]
        if not scope:
            return []
        words = ("dưới", "below") if thresholds(rule).direction == BELOW else ("vượt", "above")
        observations = await observe_kpi(
            session, kpi=kpi, units=scope, now=env.now, tz=env.tz, op_words=words
        )
        covered = set(scope)
        return await apply_observations(
            session,
            rule,
            observations,
            now=env.now,
            covers=lambda subject: subject.get("unit_code") in covered,
            missing_value=None,
        )
    if rule.kind in RECORD_KINDS:
        kind = RECORD_KINDS[rule.kind]
        communes = await communes_under(session, base)
        if units is not None:
            communes = [c for c in communes if c in units]
        if not communes:
            return []
        observations = await observe_records(
            session,
            kind=kind,
            params=rule.params or {},
            group_by=list(rule.group_by or kind.default_group),
            communes=communes,
            now=env.now,
            tz=env.tz,
            calendar=env.calendar,
        )
        covered = set(communes)
        return await apply_observations(
            session,
            rule,
            observations,
            now=env.now,
            covers=lambda subject: subject.get("unit_code") in covered,
            missing_value=None if kind.occupancy else 0.0,
        )
    observations = await observe_connectors(
        session, instance_ids=instance_ids, real_now=env.real_now, province=env.province
    )
    names = {o.subject["connector"] for o in observations}
    return await apply_observations(
        session,
        rule,
        observations,
        now=env.now,
        covers=(lambda s: True)
        if instance_ids is None
        else (lambda s: s.get("connector") in names),
        missing_value=0.0,
    )


async def apply_observations(
    session: AsyncSession,
    rule: IncidentRule,
    observations: Sequence[Observation],
    *,
    now: datetime,
    covers: Callable[[Mapping[str, str]], bool],
    missing_value: float | None,
) -> list[Incident]:
    """The lifecycle: breaches open (after the pending count), update, escalate or re-open
    incidents; clear values start the quiet period and auto-resolve after it. Subjects with an
    active incident or a pending count that the evaluation covered but did not see take
    `missing_value` (none of their records match any more)."""
    limits = thresholds(rule)
    seen = {dedup_key(rule.id, o.subject): o for o in observations}
    active = {
        i.dedup_key: i
        for i in await session.scalars(
            select(Incident).where(
                Incident.rule_id == rule.id, Incident.status.in_(ACTIVE_STATUSES)
            )
        )
    }
    states = {
        s.dedup_key: s
        for s in await session.scalars(select(RuleState).where(RuleState.rule_id == rule.id))
    }
    for key, incident in active.items():
        if key not in seen and covers(incident.subject):
            seen[key] = _unseen(incident, missing_value)
    for key, state in list(states.items()):
        if key not in seen and _covers_key(key, covers):
            await session.delete(state)
            del states[key]
    touched: list[Incident] = []
    to_open: dict[str, tuple[Observation, str]] = {}
    evidence: list[tuple[Incident, Observation]] = []
    for key, observation in seen.items():
        severity = limits.severity(observation.value)
        incident = active.get(key)
        if incident is not None:
            digest = incident.evidence.get("records_digest")
            if _follow(session, incident, observation, severity, limits, rule, now=now):
                touched.append(incident)
            moved = digest != incident.evidence.get("records_digest")
            if severity is not None and observation.record_ids is not None and moved:
                evidence.append((incident, observation))
            continue
        state = states.get(key)
        if severity is None:
            if state is not None:
                await session.delete(state)
            continue
        breaches = (state.breaches if state is not None else 0) + 1
        if breaches >= rule.pending_evaluations:
            if state is not None:
                await session.delete(state)
            to_open[key] = (observation, severity)
            continue
        if state is None:
            state = RuleState(rule_id=rule.id, dedup_key=key, updated_at=now)
            session.add(state)
        state.breaches = breaches
        state.last_value = observation.value
        state.updated_at = now
    if to_open:
        opened = await _open_or_reopen(session, rule, to_open, limits, now=now)
        touched += opened
        evidence += [
            (incident, observation)
            for incident, (observation, _) in zip(opened, to_open.values(), strict=True)
            if observation.record_ids is not None
        ]
    await _replace_records(session, evidence)
    await session.flush()
    return touched


def _covers_key(key: str, covers: Callable[[Mapping[str, str]], bool]) -> bool:
    _, _, rest = key.partition("|")
    subject = dict(part.split("=", 1) for part in rest.split("|") if "=" in part)
    return covers(subject)


def _unseen(incident: Incident, value: float | None) -> Observation:
    """An active incident's subject that the evaluation found nothing for."""
    return Observation(
        subject=dict(incident.subject),
        value=value,
        title=incident.title,
        title_en=incident.title_en,
        domain=incident.domain,
        unit_code=incident.unit_code,
        unit_name=incident.unit_name,
        agency_code=incident.agency_code,
        kpi=incident.kpi,
        evidence=dict(incident.evidence),
    )


def _follow(
    session: AsyncSession,
    incident: Incident,
    observation: Observation,
    severity: str | None,
    limits: Thresholds,
    rule: IncidentRule,
    *,
    now: datetime,
) -> bool:
    """Update an active incident from a new observation; True if anything shown changed (a
    repeated breach of the same value only counts and stamps, and is not published)."""
    before = _shown(incident)
    _update(session, incident, observation, severity, limits, rule, now=now)
    return _shown(incident) != before


def _shown(incident: Incident) -> tuple[Any, ...]:
    """What a screen shows of an incident, beside its counters."""
    return (
        incident.status,
        incident.severity,
        incident.value,
        incident.cleared_since is None,
        incident.title,
    )


def _update(
    session: AsyncSession,
    incident: Incident,
    observation: Observation,
    severity: str | None,
    limits: Thresholds,
    rule: IncidentRule,
    *,
    now: datetime,
) -> None:
    if severity is not None:
        incident.value = observation.value
        incident.peak_value = limits.worse(incident.peak_value, observation.value)
        incident.breach_count += 1
        incident.last_seen_at = now
        incident.evidence = _evidence(incident, observation)
        incident.title, incident.title_en = observation.title, observation.title_en
        incident.updated_at = now
        if incident.cleared_since is not None:
            incident.cleared_since = None
            _event(session, incident, now, "condition_returned", SYSTEM, _value_words(observation))
        if severity == "critical" and incident.severity == "warn":
            incident.severity = "critical"
            incident.threshold = limits.crossed("critical")
            _event(
                session,
                incident,
                now,
                "escalated",
                SYSTEM,
                f"escalated to critical: {_value_words(observation)}",
                {"value": observation.value},
            )
        return
    if observation.value is None:
        return  # no data: neither a breach nor a recovery
    incident.value = observation.value
    incident.updated_at = now
    if not limits.recovered(observation.value):
        incident.cleared_since = None  # between the threshold and the recovery level
        return
    if incident.cleared_since is None:
        incident.cleared_since = now
        _event(session, incident, now, "cleared", SYSTEM, _value_words(observation))
    if now - incident.cleared_since >= timedelta(minutes=rule.quiet_minutes):
        incident.status = RESOLVED
        incident.resolved_at = now
        incident.resolved_by = SYSTEM
        incident.cleared_since = None
        _event(
            session,
            incident,
            now,
            "resolved",
            SYSTEM,
            f"resolved automatically after {rule.quiet_minutes:g} quiet minutes",
        )


async def _open_or_reopen(
    session: AsyncSession,
    rule: IncidentRule,
    to_open: dict[str, tuple[Observation, str]],
    limits: Thresholds,
    *,
    now: datetime,
) -> list[Incident]:
    """Re-open a subject's incident resolved within the relapse window, else open a new one."""
    since = now - timedelta(minutes=rule.relapse_minutes)
    recent: dict[str, Incident] = {}
    for incident in await session.scalars(
        select(Incident)
        .where(
            Incident.dedup_key.in_(list(to_open)),
            Incident.status == RESOLVED,
            Incident.resolved_at >= since,
        )
        .order_by(Incident.resolved_at)
    ):
        recent[incident.dedup_key] = incident  # the latest resolution wins
    opened: list[Incident] = []
    created: list[tuple[Incident, Observation, str]] = []
    for key, (observation, severity) in to_open.items():
        incident = recent.get(key)
        if incident is not None:
            incident.status = "open"
            incident.reopen_count += 1
            incident.resolved_at = incident.resolved_by = None
            incident.acknowledged_at = incident.acknowledged_by = None
            incident.cleared_since = None
            incident.severity = severity
            incident.threshold = limits.crossed(severity)
            incident.value = observation.value
            incident.peak_value = limits.worse(incident.peak_value, observation.value)
            incident.breach_count += 1
            incident.last_seen_at = incident.updated_at = now
            incident.evidence = _evidence(incident, observation)
            _event(
                session, incident, now, "reopened", SYSTEM, f"relapse: {_value_words(observation)}"
            )
        else:
            incident = Incident(
                dedup_key=key,
                rule_id=rule.id,
                rule_kind=rule.kind,
                domain=observation.domain,
                title=observation.title,
                title_en=observation.title_en,
                severity=severity,
                status="open",
                unit_code=observation.unit_code,
                unit_name=observation.unit_name,
                agency_code=observation.agency_code,
                subject=observation.subject,
                kpi=observation.kpi,
                value=observation.value,
                peak_value=observation.value,
                threshold=limits.crossed(severity),
                breach_count=1,
                reopen_count=0,
                opened_at=now,
                last_seen_at=now,
                evidence={},
                updated_at=now,
            )
            session.add(incident)
            created.append((incident, observation, severity))
        opened.append(incident)
    if created:
        await session.flush()  # one round trip gives every new incident its id
    for incident, observation, severity in created:
        incident.evidence = _evidence(incident, observation)
        _event(
            session,
            incident,
            now,
            "opened",
            SYSTEM,
            f"{severity}: {_value_words(observation)} (rule {rule.name})",
            {"value": observation.value, "threshold": incident.threshold},
        )
    return opened


def _evidence(incident: Incident, observation: Observation) -> dict[str, Any]:
    evidence = dict(observation.evidence)
    if evidence.get("record_type"):
        evidence["records_url"] = f"/api/v1/incidents/{incident.id}/records"
    if observation.record_ids is not None:
        ids = ",".join(map(str, sorted(observation.record_ids)))
        evidence["records_digest"] = hashlib.sha1(ids.encode()).hexdigest()[:16]
    return evidence


async def _replace_records(
    session: AsyncSession, changed: Sequence[tuple[Incident, Observation]]
) -> None:
    """These incidents' evidence records become those of their observations (two statements
    for them all)."""
    if not changed:
        return
    await session.execute(
        delete(IncidentRecord).where(IncidentRecord.incident_id.in_([i.id for i, _ in changed]))
    )
    rows = [
        {"incident_id": incident.id, "record_type": observation.record_type, "record_id": rid}
        for incident, observation in changed
        for rid in observation.record_ids or []
    ]
    await upsert(session, IncidentRecord, rows, keys=("incident_id", "record_type", "record_id"))


def _value_words(observation: Observation) -> str:
    return f"value {observation.value:g}" if observation.value is not None else "no value"


def _event(
    session: AsyncSession,
    incident: Incident,
    at: datetime,
    kind: str,
    actor: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        IncidentEvent(
            incident_id=incident.id, at=at, kind=kind, actor=actor, message=message, data=data or {}
        )
    )


async def _finish(
    session: AsyncSession, touched: list[Incident], env: Evaluation
) -> IncidentChanges:
    """The changed incidents, the active list and refreshed response times to publish."""
    if not touched:
        return IncidentChanges()
    unique = list({i.id: i for i in touched}.values())
    resolved = [i for i in unique if i.status == RESOLVED and i.resolved_at == env.now]
    cells = []
    if resolved:
        cells = await update_response_kpis(
            session,
            incidents=resolved,
            province=env.province,
            tz=env.tz,
            now=env.now,
        )
    return IncidentChanges(
        incidents=[item(i) for i in unique],
        active=await active_items(session),
        response_cells=cells,
    )


# ---------------------------------------------------------------- reads


def item(incident: Incident) -> IncidentItem:
    """An incident as lists and live messages show it."""
    return IncidentItem(
        id=incident.id,
        title=incident.title,
        title_en=incident.title_en,
        severity=incident.severity,  # type: ignore[arg-type]
        status=incident.status,  # type: ignore[arg-type]
        domain=incident.domain,
        unit_code=incident.unit_code,
        unit_name=incident.unit_name,
        agency_code=incident.agency_code,
        kpi=incident.kpi,
        rule_id=incident.rule_id,
        rule_kind=incident.rule_kind,
        value=incident.value,
        peak_value=incident.peak_value,
        threshold=incident.threshold,
        breach_count=incident.breach_count,
        reopen_count=incident.reopen_count,
        assignee=incident.assignee,
        opened_at=incident.opened_at,
        last_seen_at=incident.last_seen_at,
        acknowledged_at=incident.acknowledged_at,
        resolved_at=incident.resolved_at,
    )


async def active_items(session: AsyncSession, *, limit: int = MAX_LIVE_ITEMS) -> list[IncidentItem]:
    """Open and acknowledged incidents, critical first, then the most recently seen."""
    critical_first = case((Incident.severity == "critical", 0), else_=1)
    rows = await session.scalars(
        select(Incident)
        .where(Incident.status.in_(ACTIVE_STATUSES))
        .order_by(critical_first, Incident.last_seen_at.desc(), Incident.id.desc())
        .limit(limit)
    )
    return [item(i) for i in rows]


def live_message(active: Sequence[IncidentItem], changed: Sequence[IncidentItem]) -> dict[str, Any]:
    """The `incidents` topic's data: the active list (whole, so a conflated update loses
    nothing) and the incidents this message is about."""
    return {
        "items": [i.model_dump(mode="json") for i in active],
        "changed": [i.model_dump(mode="json") for i in changed],
    }


async def snapshot(session: AsyncSession) -> dict[str, Any]:
    """The `incidents` topic's current state."""
    return live_message(await active_items(session), [])


def publish(hub: Any, changes: IncidentChanges) -> None:
    """Push changed incidents and response-time cells to the live hub (after the commit)."""
    if hub is None or not changes:
        return
    if changes.incidents:
        hub.publish(LIVE_TOPIC, live_message(changes.active, changes.incidents))
    for cell in changes.response_cells:
        hub.publish(f"kpi:{cell.kpi}:{cell.unit}", cell.model_dump(mode="json"))


@dataclass(frozen=True)
class IncidentFilter:
    """What a list of incidents is narrowed to."""

    status: Sequence[str] = ()
    severity: Sequence[str] = ()
    domain: Sequence[str] = ()
    unit: str | None = None
    agency: Sequence[str] = ()
    kpi: Sequence[str] = ()
    rule_id: int | None = None
    active_from: datetime | None = None
    active_to: datetime | None = None


STATUSES = ("open", "acknowledged", "resolved")
SEVERITIES = ("warn", "critical")
SORTS = {
    "opened_at": Incident.opened_at,
    "last_seen_at": Incident.last_seen_at,
    "resolved_at": Incident.resolved_at,
    "id": Incident.id,
}


def _filtered(f: IncidentFilter) -> Select[Any]:
    statuses = set(f.status)
    if "active" in statuses:
        statuses = (statuses - {"active"}) | set(ACTIVE_STATUSES)
    bad = statuses - set(STATUSES)
    if bad:
        raise InvalidRule(f"status must be active, {', '.join(STATUSES)}; not {sorted(bad)}")
    bad = set(f.severity) - set(SEVERITIES)
    if bad:
        raise InvalidRule(f"severity must be warn or critical, not {sorted(bad)}")
    if f.active_from and f.active_to and f.active_from > f.active_to:
        raise InvalidRule("from is after to")
    query = select(Incident)
    if statuses:
        query = query.where(Incident.status.in_(statuses))
    if f.severity:
        query = query.where(Incident.severity.in_(f.severity))
    if f.domain:
        query = query.where(Incident.domain.in_(f.domain))
    if f.unit is not None:
        query = query.where(Incident.unit_code.in_(units_under(f.unit)))
    if f.agency:
        query = query.where(Incident.agency_code.in_(f.agency))
    if f.kpi:
        query = query.where(Incident.kpi.in_(f.kpi))
    if f.rule_id is not None:
        query = query.where(Incident.rule_id == f.rule_id)
    if f.active_to is not None:
        query = query.where(Incident.opened_at <= f.active_to)
    if f.active_from is not None:
        query = query.where(
            or_(Incident.resolved_at.is_(None), Incident.resolved_at >= f.active_from)
        )
    return query


async def list_incidents(
    session: AsyncSession,
    f: IncidentFilter,
    *,
    sort: str = "-last_seen_at",
    limit: int,
    offset: int,
) -> IncidentPage:
    """One page of incidents matching `f`, with the total."""
    name = sort.removeprefix("-")
    if name not in SORTS:
        raise InvalidRule(f"sort must be one of {', '.join(SORTS)} (- first to descend)")
    column = SORTS[name]
    order = column.desc() if sort.startswith("-") else column.asc()
    query = _filtered(f)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(order.nulls_last(), Incident.id.desc()).limit(limit).offset(offset)
    )
    return IncidentPage(items=[item(i) for i in rows], total=total, limit=limit, offset=offset)


async def get_incident(session: AsyncSession, incident_id: int, *, lock: bool = False) -> Incident:
    """An incident, or `IncidentNotFound`."""
    incident = await session.get(Incident, incident_id, with_for_update=lock)
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return incident


async def detail(session: AsyncSession, incident: Incident) -> IncidentDetail:
    """An incident with its timeline (oldest first)."""
    events = await session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident.id)
        .order_by(IncidentEvent.at, IncidentEvent.id)
    )
    return IncidentDetail(
        **item(incident).model_dump(),
        dedup_key=incident.dedup_key,
        subject=incident.subject,
        acknowledged_by=incident.acknowledged_by,
        resolved_by=incident.resolved_by,
        cleared_since=incident.cleared_since,
        evidence=incident.evidence,
        timeline=[
            EventRead(at=e.at, kind=e.kind, actor=e.actor, message=e.message, data=e.data)
            for e in events
        ],
    )


async def incident_records(
    session: AsyncSession,
    incident: Incident,
    *,
    now: datetime,
    tz: ZoneInfo,
    filters: Mapping[str, Sequence[str | int]],
    q: str | None,
    sort: str | Sequence[str],
    limit: int,
    offset: int,
) -> IncidentRecordsPage:
    """One page of the records behind an incident: the record ids its last breach found, or,
    for a KPI incident, the records behind its cell (as the evidence's query lists them)."""
    evidence = incident.evidence or {}
    record_type = evidence.get("record_type")
    if record_type is None:
        return IncidentRecordsPage(
            items=[], total=0, limit=limit, offset=offset, incident_id=incident.id, record_type=None
        )
    if incident.rule_kind in RECORD_KINDS:
        table = STORES[record_type].model
        ids = select(IncidentRecord.record_id).where(
            IncidentRecord.incident_id == incident.id, IncidentRecord.record_type == record_type
        )
        query = RecordQuery(
            record_type=record_type, filters=filters, q=q, sort=sort, limit=limit, offset=offset
        )
        page = await query_records(session, query, extra_conditions=[table.id.in_(ids)])
    else:
        cell = evidence["cells"][0]
        kpi = KPIS[cell["kpi"]]
        period = Period.parse(
            cell["period_kind"], datetime.fromisoformat(cell["period_start"]).date()
        )
        page = await records_behind(
            session,
            kpi,
            cell["unit"],
            period,
            side=evidence["side"],
            now=now,
            tz=tz,
            filters=filters,
            q=q,
            sort=sort,
            limit=limit,
            offset=offset,
        )
    return IncidentRecordsPage(
        items=page.items,
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        incident_id=incident.id,
        record_type=record_type,
    )


async def counts(session: AsyncSession, *, statuses: Sequence[str]) -> CountsRead:
    """Incidents of these statuses by unit and severity."""
    query = _filtered(IncidentFilter(status=statuses)).subquery()
    rows = (
        await session.execute(
            select(query.c.unit_code, query.c.severity, func.count()).group_by(
                query.c.unit_code, query.c.severity
            )
        )
    ).all()
    by_unit: dict[str | None, dict[str, int]] = {}
    for unit, severity, n in rows:
        by_unit.setdefault(unit, {"warn": 0, "critical": 0})[severity] = n
    names = await unit_names(session, [u for u in by_unit if u is not None])
    units = [
        CountRow(
            unit_code=unit,
            unit_name=names.get(unit) if unit is not None else None,
            warn=c["warn"],
            critical=c["critical"],
            total=c["warn"] + c["critical"],
        )
        for unit, c in by_unit.items()
    ]
    units.sort(key=lambda r: (-r.critical, -r.total, r.unit_code or ""))
    return CountsRead(
        statuses=sorted(set(statuses)),
        warn=sum(r.warn for r in units),
        critical=sum(r.critical for r in units),
        total=sum(r.total for r in units),
        units=units,
    )


# ---------------------------------------------------------------- actions


async def acknowledge(
    session: AsyncSession, incident_id: int, *, actor: str, note: str | None, now: datetime
) -> Incident:
    """open → acknowledged."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status != "open":
        raise Conflict(
            f"incident {incident_id} is {incident.status}"
            + (f" (by {incident.acknowledged_by})" if incident.status == "acknowledged" else "")
            + "; only an open incident can be acknowledged"
        )
    incident.status = "acknowledged"
    incident.acknowledged_at, incident.acknowledged_by = now, actor
    incident.updated_at = now
    _event(session, incident, now, "acknowledged", actor, note or "")
    await session.flush()
    return incident


async def assign(
    session: AsyncSession,
    incident_id: int,
    *,
    actor: str,
    assignee: str,
    agency_code: str | None,
    now: datetime,
) -> Incident:
    """Give an active incident to a person or an agency."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status == RESOLVED:
        raise Conflict(f"incident {incident_id} is resolved; re-opening happens on relapse")
    before = incident.assignee
    incident.assignee = assignee
    if agency_code is not None:
        incident.agency_code = agency_code
    incident.updated_at = now
    _event(
        session,
        incident,
        now,
        "assigned",
        actor,
        f"assigned to {assignee}" + (f" (was {before})" if before else ""),
        {"assignee": assignee, "agency_code": agency_code, "previous": before},
    )
    await session.flush()
    return incident


async def add_note(
    session: AsyncSession, incident_id: int, *, actor: str, text: str, now: datetime
) -> Incident:
    """Add a note to the timeline."""
    incident = await get_incident(session, incident_id)
    incident.updated_at = now
    _event(session, incident, now, "note", actor, text)
    await session.flush()
    return incident


async def resolve(
    session: AsyncSession, incident_id: int, *, actor: str, note: str | None, now: datetime
) -> Incident:
    """Resolve by hand; a breach within the relapse window re-opens it."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status == RESOLVED:
        raise Conflict(f"incident {incident_id} is resolved already (by {incident.resolved_by})")
    incident.status = RESOLVED
    incident.resolved_at, incident.resolved_by = now, actor
    incident.cleared_since = None
    incident.updated_at = now
    _event(session, incident, now, "resolved", actor, note or "")
    await session.flush()
    return incident


async def action_changes(
    session: AsyncSession, incident: Incident, *, province: str, tz: ZoneInfo, now: datetime
) -> IncidentChanges:
    """What to publish after a human action on `incident`."""
    cells = []
    if incident.acknowledged_at == now or incident.resolved_at == now:
        cells = await update_response_kpis(
            session, incidents=[incident], province=province, tz=tz, now=now
        )
    return IncidentChanges(
        incidents=[item(incident)], active=await active_items(session), response_cells=cells
    )


# ---------------------------------------------------------------- response times


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
