"""Canonical records as stored: one table per record type."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ioc.db import Base
from ioc.kit.types import UTCDateTime


class DossierRow(Base):
    """A one-stop-shop dossier (hồ sơ TTHC), unique per (connector instance, external id).

    The `*_date` columns are the local (Asia/Ho_Chi_Minh) calendar days of the matching
    timestamps, kept so that period queries are the same plain comparisons on every database.
    """

    __tablename__ = "dossiers"
    __table_args__ = (
        UniqueConstraint("instance_id", "external_id", name="uq_dossiers_instance_external"),
        Index("ix_dossiers_unit_due_date", "unit_code", "due_date"),
        Index("ix_dossiers_unit_received_date", "unit_code", "received_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("connector_instances.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(128))
    unit_code: Mapped[str] = mapped_column(String(10))
    original_unit_code: Mapped[str | None] = mapped_column(String(10))
    procedure_code: Mapped[str] = mapped_column(String(64))
    procedure_name: Mapped[str] = mapped_column(String(500))
    field_code: Mapped[str] = mapped_column(String(64), index=True)
    field_name: Mapped[str] = mapped_column(String(200))
    agency_code: Mapped[str] = mapped_column(String(64), index=True)
    agency_name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(10))
    status: Mapped[int] = mapped_column(SmallInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date | None] = mapped_column(Date)
    resolved_date: Mapped[date | None] = mapped_column(Date)
    paid_online: Mapped[bool] = mapped_column(Boolean, default=False)
    synced_to_portal: Mapped[bool] = mapped_column(Boolean, default=False)
    apology_issued: Mapped[bool] = mapped_column(Boolean, default=False)
    source_updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime)
