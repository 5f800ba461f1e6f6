"""Evaluation and the lifecycle: rules judged after an ingest page, periodically and after a
poll; breaches open (after the pending count), update, escalate or re-open incidents; clear
values start the quiet period and auto-resolve after it.

Evaluation runs inside the caller's transaction; what changed is returned for publishing after
the commit. Every moment comes from the caller's clock."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.common import SYSTEM, IncidentChanges, timeline_event
from ioc.incidents.models import (
    ACTIVE_STATUSES,
    RESOLVED,
    Incident,
    IncidentRecord,
    IncidentRule,
    RuleState,
)
from ioc.incidents.queries import active_items, item
from ioc.incidents.response_times import update_response_kpis
from ioc.incidents.rules import (
    BELOW,
    CONNECTOR_HEALTH,
    KPI_THRESHOLD,
    RECORD_KINDS,
    Observation,
    Thresholds,
    communes_under,
    observe_connectors,
    observe_kpi,
    observe_records,
    thresholds,
)
from ioc.ingest.service import ChangeSet
from ioc.kit.upsert import upsert
from ioc.kpi.calendar import WorkingCalendar
from ioc.kpi.catalog import KPIS
from ioc.kpi.service import CellValue


@dataclass(frozen=True)
class Evaluation:
    """The moment and settings an evaluation judges with."""

    now: datetime
    real_now: datetime
    """Operational time, for connector staleness (poll times are real time)."""
    tz: ZoneInfo
    calendar: WorkingCalendar
    province: str


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
            timeline_event(
                session, incident, now, "condition_returned", SYSTEM, _value_words(observation)
            )
        if severity == "critical" and incident.severity == "warn":
            incident.severity = "critical"
            incident.threshold = limits.crossed("critical")
            timeline_event(
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
        timeline_event(session, incident, now, "cleared", SYSTEM, _value_words(observation))
    if now - incident.cleared_since >= timedelta(minutes=rule.quiet_minutes):
        incident.status = RESOLVED
        incident.resolved_at = now
        incident.resolved_by = SYSTEM
        incident.cleared_since = None
        timeline_event(
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
            timeline_event(
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
        timeline_event(
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
