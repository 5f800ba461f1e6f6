"""Incident and rule payloads for REST and the `incidents` live topic."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ioc.records.schemas import Page

Kind = Literal[
    "kpi_threshold",
    "dossier_overdue",
    "dossier_late_without_apology",
    "feedback_overdue",
    "er_wait",
    "bed_occupancy",
    "connector_health",
]


class RuleFields(BaseModel):
    """What every rule write may set (all optional on update)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    kpi: str | None = Field(default=None, description="KPI id (kpi_threshold rules)")
    unit_code: str | None = Field(
        default=None, description="Where the rule looks: a unit code; the province by default"
    )
    per_commune: bool | None = Field(
        default=None, description="kpi_threshold: judge each commune below the unit separately"
    )
    group_by: list[str] | None = Field(
        default=None,
        description="Record rules: subject columns (unit_code and axes such as field_code)",
    )
    params: dict[str, Any] | None = Field(
        default=None, description="Kind parameters, e.g. {'working_days': 2}"
    )
    warn: float | None = Field(default=None, description="Warn when beyond this (strictly)")
    critical: float | None = Field(default=None, description="Critical when beyond this")
    recovery: float | None = Field(
        default=None, description="Clear only once back beyond this level (hysteresis)"
    )
    pending_evaluations: int | None = Field(
        default=None, ge=1, le=1000, description="Consecutive breaching evaluations to open"
    )
    quiet_minutes: float | None = Field(
        default=None, ge=0, le=7 * 24 * 60, description="Cleared this long: auto-resolve"
    )
    relapse_minutes: float | None = Field(
        default=None,
        ge=0,
        le=30 * 24 * 60,
        description="A breach this soon after resolution re-opens",
    )


class RuleCreate(RuleFields):
    """A new rule."""

    name: str = Field(min_length=1, max_length=120)
    kind: Kind


class RuleUpdate(RuleFields):
    """Changes to a rule; fields left out keep their value, `null` clears an optional one."""

    name: str | None = Field(default=None, min_length=1, max_length=120)


class RuleRead(BaseModel):
    """A rule with its effective thresholds (the catalogue's when it sets none)."""

    id: int
    name: str
    kind: str
    enabled: bool
    kpi: str | None
    unit_code: str | None
    per_commune: bool
    group_by: list[str]
    params: dict[str, Any]
    direction: str
    warn: float | None
    critical: float | None
    recovery: float | None
    effective_warn: float | None
    effective_critical: float | None
    effective_recovery: float | None
    pending_evaluations: int
    quiet_minutes: float
    relapse_minutes: float
    is_default: bool
    created_at: datetime
    updated_at: datetime


class IncidentItem(BaseModel):
    """An incident as the list, the wall's ticker and the live topic show it."""

    id: int
    title: str
    title_en: str
    severity: Literal["warn", "critical"]
    status: Literal["open", "acknowledged", "resolved"]
    domain: str
    unit_code: str | None
    unit_name: str | None
    agency_code: str | None
    kpi: str | None
    rule_id: int | None
    rule_kind: str
    value: float | None
    peak_value: float | None
    threshold: float | None
    breach_count: int
    reopen_count: int
    assignee: str | None
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None


class EventRead(BaseModel):
    """One entry of the timeline."""

    at: datetime
    kind: str
    actor: str
    message: str
    data: dict[str, Any]


class IncidentDetail(IncidentItem):
    """An incident with its subject, evidence and timeline."""

    dedup_key: str
    subject: dict[str, Any]
    acknowledged_by: str | None
    resolved_by: str | None
    cleared_since: datetime | None
    evidence: dict[str, Any] = Field(
        description="KPI cells and/or record type, count and `query`: the drill-down URL that "
        "lists the records (exactly, when `query_exact`); `records_url` pages through them"
    )
    timeline: list[EventRead]


class IncidentPage(BaseModel):
    """One page of incidents and how many match in all."""

    items: list[IncidentItem]
    total: int
    limit: int
    offset: int


class IncidentRecordsPage(Page):
    """One page of the records behind an incident."""

    incident_id: int
    record_type: str | None


class Actor(BaseModel):
    """Who does something: the caller's token or user, or in open mode the name given here."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Who acts, in open mode only (demo, development); with a token or an "
        "OpenID Connect user the timeline records that identity and this field is ignored",
    )


class AcknowledgeRequest(Actor):
    """Acknowledge an open incident."""

    note: str | None = Field(default=None, max_length=4000)


class AssignRequest(Actor):
    """Assign an incident to a person or an agency."""

    assignee: str = Field(min_length=1, max_length=200)
    agency_code: str | None = Field(
        default=None, max_length=200, description="The agency now responsible, if any"
    )


class NoteRequest(Actor):
    """Add a note to the timeline."""

    text: str = Field(min_length=1, max_length=4000)


class ResolveRequest(Actor):
    """Resolve an incident by hand."""

    note: str | None = Field(default=None, max_length=4000)


class CountRow(BaseModel):
    """Incidents of one unit by severity."""

    unit_code: str | None
    unit_name: str | None
    warn: int
    critical: int
    total: int


class CountsRead(BaseModel):
    """Incidents by unit and severity."""

    statuses: list[str]
    warn: int
    critical: int
    total: int
    units: list[CountRow]


class StatsRow(BaseModel):
    """Response times of one unit or agency."""

    key: str | None
    label: str | None
    opened: int
    acknowledged: int
    resolved: int
    mtta_minutes: float | None = Field(description="Mean minutes from opening to acknowledgement")
    mttr_minutes: float | None = Field(description="Mean minutes from opening to resolution")


class StatsRead(BaseModel):
    """Mean time to acknowledge and to resolve, by unit or agency, over a time range."""

    by: str
    date_from: datetime | None
    date_to: datetime | None
    rows: list[StatsRow]
    total: StatsRow


class EvaluationRead(BaseModel):
    """What an evaluation run changed."""

    changed: int
    open: int
