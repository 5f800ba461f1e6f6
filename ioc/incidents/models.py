"""Incident rules, incidents, their timelines, evidence records and the rules' pending state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from ioc.db import Base, JsonType
from ioc.kit.types import UTCDateTime

ACTIVE_STATUSES = ("open", "acknowledged")
RESOLVED = "resolved"


class IncidentRule(Base):
    """A rule as data: what it watches, where, its thresholds and its lifecycle timings."""

    __tablename__ = "incident_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    kpi: Mapped[str | None] = mapped_column(String(80))
    unit_code: Mapped[str | None] = mapped_column(String(10))
    per_commune: Mapped[bool] = mapped_column(Boolean, default=False)
    group_by: Mapped[list[str]] = mapped_column(JsonType, default=list)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    direction: Mapped[str | None] = mapped_column(String(10))
    warn: Mapped[float | None] = mapped_column(Float)
    critical: Mapped[float | None] = mapped_column(Float)
    recovery: Mapped[float | None] = mapped_column(Float)
    pending_evaluations: Mapped[int] = mapped_column(Integer, default=1)
    quiet_minutes: Mapped[float] = mapped_column(Float, default=30.0)
    relapse_minutes: Mapped[float] = mapped_column(Float, default=240.0)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Incident(Base):
    """One problem on one subject (rule + unit, field, facility, connector…), open until it
    is resolved; at most one active incident per dedup key."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(400), index=True)
    rule_id: Mapped[int | None] = mapped_column(
        ForeignKey("incident_rules.id", ondelete="SET NULL"), index=True
    )
    rule_kind: Mapped[str] = mapped_column(String(40))
    domain: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(String(500))
    title_en: Mapped[str] = mapped_column(String(500))
    severity: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), index=True)
    unit_code: Mapped[str | None] = mapped_column(String(10), index=True)
    unit_name: Mapped[str | None] = mapped_column(String(200))
    agency_code: Mapped[str | None] = mapped_column(String(200), index=True)
    subject: Mapped[dict[str, Any]] = mapped_column(default=dict)
    kpi: Mapped[str | None] = mapped_column(String(80))
    value: Mapped[float | None] = mapped_column(Float)
    peak_value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    breach_count: Mapped[int] = mapped_column(Integer, default=1)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    assignee: Mapped[str | None] = mapped_column(String(200))
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # One active incident per dedup key, even with several replicas evaluating.
        Index(
            "uq_incidents_active_dedup_key",
            "dedup_key",
            unique=True,
            sqlite_where=text("status != 'resolved'"),
            postgresql_where=text("status != 'resolved'"),
        ),
    )


class IncidentEvent(Base):
    """One entry of an incident's timeline: what happened, who did it, when."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(30))
    actor: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IncidentRecord(Base):
    """A record behind an incident (evidence), as of the last breaching evaluation."""

    __tablename__ = "incident_records"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    record_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class RuleState(Base):
    """Consecutive breaching evaluations of a subject not yet (re)opened as an incident."""

    __tablename__ = "incident_rule_states"

    rule_id: Mapped[int] = mapped_column(
        ForeignKey("incident_rules.id", ondelete="CASCADE"), primary_key=True
    )
    dedup_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    breaches: Mapped[int] = mapped_column(Integer, default=0)
    last_value: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
