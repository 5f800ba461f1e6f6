"""The stored rules: listing, creating, editing and deleting them (a deleted or disabled rule
resolves its incidents), validation, and the default rules."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.db import unique_or
from ioc.incidents.common import SYSTEM, Conflict, IncidentNotFound, InvalidRule, timeline_event
from ioc.incidents.models import ACTIVE_STATUSES, RESOLVED, Incident, IncidentRule, RuleState
from ioc.incidents.rules import (
    BELOW,
    CONNECTOR_HEALTH,
    KINDS,
    KPI_THRESHOLD,
    RECORD_KINDS,
    thresholds,
)
from ioc.incidents.schemas import RuleCreate, RuleRead, RuleUpdate
from ioc.kpi.catalog import CATALOG, KPIS
from ioc.units.models import AdminUnit


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
    with unique_or(_name_taken(rule)):
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
    with unique_or(_name_taken(rule)):  # the checks' queries flush the new name first
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
        timeline_event(session, incident, now, "resolved", SYSTEM, f"{reason}: {rule.name}")
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


def _name_taken(rule: IncidentRule, holder: int | None = None) -> InvalidRule:
    """The error for a rule named like another (`holder`, when known)."""
    held = "" if holder is None else f" (id {holder})"
    return InvalidRule(f"a rule named {rule.name!r} exists already{held}")


async def _validate(session: AsyncSession, rule: IncidentRule) -> None:
    """Refuse a rule that cannot be evaluated, saying why (mapped to 422)."""
    same_name = await session.scalar(
        select(IncidentRule.id).where(IncidentRule.name == rule.name, IncidentRule.id != rule.id)
        if rule.id is not None
        else select(IncidentRule.id).where(IncidentRule.name == rule.name)
    )
    if same_name is not None:
        raise _name_taken(rule, same_name)
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
