"""Connector instances, their poll runs and the records they rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ioc.db import Base
from ioc.kit.types import UTCDateTime


class ConnectorInstance(Base):
    """One configured upstream source: a connector kind, its config, cursor and health."""

    __tablename__ = "connector_instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(50), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    interval_seconds: Mapped[int] = mapped_column(Integer, default=60)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    health: Mapped[str] = mapped_column(String(20), default="ok")
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    timeout_seconds: Mapped[float] = mapped_column(Float, default=120.0)
    max_backoff_seconds: Mapped[int] = mapped_column(Integer, default=900)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PollRun(Base):
    """The outcome of one scheduled or manual poll of a connector instance."""

    __tablename__ = "poll_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("connector_instances.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(20))
    pages: Mapped[int] = mapped_column(Integer, default=0)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


MAPPING_STAGE = "mapping"
"""Rejected while mapping: the payload is the upstream's raw record."""
VALIDATION_STAGE = "validation"
"""Rejected by the ingest: the payload is the canonical record."""


class RejectedRecord(Base):
    """An upstream record that could not be used, kept with its reason and payload."""

    __tablename__ = "rejected_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("connector_instances.id", ondelete="CASCADE"), index=True
    )
    record_type: Mapped[str] = mapped_column(String(40))
    stage: Mapped[str] = mapped_column(String(20), default=MAPPING_STAGE)
    external_id: Mapped[str | None] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column()
    rejected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, index=True, doc="When a re-ingest stored it; null while pending"
    )
