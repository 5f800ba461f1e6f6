"""Canonical records as stored: one table per record type.

Every table is unique on (connector instance, external id) and keeps the source's update time,
so re-delivered or out-of-order versions never replace a newer one. The `*_date` columns are the
local (Asia/Ho_Chi_Minh) calendar days of the matching timestamps, kept so that period queries
are the same plain comparisons on every database.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from ioc.db import Base
from ioc.kit.types import UTCDateTime


class RecordColumns:
    """Columns and constraints every canonical record table has."""

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        ForeignKey("connector_instances.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(128))
    unit_code: Mapped[str] = mapped_column(String(10))
    original_unit_code: Mapped[str | None] = mapped_column(String(10))
    source_updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        name = cls.__tablename__
        return (
            UniqueConstraint("instance_id", "external_id", name=f"uq_{name}_instance_external"),
            *cls.extra_indexes(),
        )

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        """Indexes beyond the uniqueness of (instance, external id)."""
        return ()


class DossierRow(RecordColumns, Base):
    """A one-stop-shop dossier (hồ sơ TTHC)."""

    __tablename__ = "dossiers"

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
    fee: Mapped[float] = mapped_column(Float, default=0.0)
    paid_online: Mapped[bool] = mapped_column(Boolean, default=False)
    digitised: Mapped[bool] = mapped_column(Boolean, default=False)
    reused_national_data: Mapped[bool] = mapped_column(Boolean, default=False)
    electronic_result: Mapped[bool] = mapped_column(Boolean, default=False)
    synced_to_portal: Mapped[bool] = mapped_column(Boolean, default=False)
    apology_issued: Mapped[bool] = mapped_column(Boolean, default=False)
    supplements: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    resolution_working_days: Mapped[float | None] = mapped_column(
        Float, doc="Working days from receipt to the end of processing (None while open)"
    )
    due_soon_from: Mapped[datetime | None] = mapped_column(
        UTCDateTime, doc="From this moment the dossier is due within one working day"
    )

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        return (
            Index("ix_dossiers_unit_due_date", "unit_code", "due_date"),
            Index("ix_dossiers_unit_received_date", "unit_code", "received_date"),
            Index("ix_dossiers_received_date_id", "received_date", "id"),  # newest first
        )


class FeedbackRow(RecordColumns, Base):
    """A citizen feedback report (phản ánh kiến nghị), an Open311 service request."""

    __tablename__ = "feedback_reports"

    service_code: Mapped[str] = mapped_column(String(64))
    service_name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))
    status_notes: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    agency: Mapped[str] = mapped_column(String(200), index=True)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requested_date: Mapped[date] = mapped_column(Date)
    expected_date: Mapped[date | None] = mapped_column(Date)
    closed_date: Mapped[date | None] = mapped_column(Date)
    close_hours: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str] = mapped_column(Text)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    reporter_name: Mapped[str | None] = mapped_column(String(200))
    reporter_phone: Mapped[str | None] = mapped_column(String(50))

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        return (
            Index("ix_feedback_reports_unit_requested_date", "unit_code", "requested_date"),
            Index("ix_feedback_reports_requested_date_id", "requested_date", "id"),
        )


class EncounterRow(RecordColumns, Base):
    """A hospital encounter (FHIR Encounter)."""

    __tablename__ = "encounters"

    version_id: Mapped[str] = mapped_column(String(64))
    facility_code: Mapped[str] = mapped_column(String(64), index=True)
    facility_name: Mapped[str] = mapped_column(String(200))
    encounter_class: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    stay_days: Mapped[float | None] = mapped_column(Float, doc="end − start, in days")
    wait_minutes: Mapped[float | None] = mapped_column(Float)
    discharge_disposition: Mapped[str | None] = mapped_column(String(64))
    referred_out: Mapped[bool] = mapped_column(Boolean, default=False)

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        return (Index("ix_encounters_unit_start_date", "unit_code", "start_date"),)


class BedCensusRow(RecordColumns, Base):
    """Beds of one facility at one moment."""

    __tablename__ = "bed_censuses"

    facility_code: Mapped[str] = mapped_column(String(64))
    facility_name: Mapped[str] = mapped_column(String(200))
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime)
    measured_date: Mapped[date] = mapped_column(Date)
    beds_total: Mapped[int] = mapped_column(Integer)
    beds_occupied: Mapped[int] = mapped_column(Integer)
    beds_closed: Mapped[int] = mapped_column(Integer)

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        return (Index("ix_bed_censuses_facility_measured_at", "facility_code", "measured_at"),)


class SchoolDayRow(RecordColumns, Base):
    """One school's enrolment and attendance on one day."""

    __tablename__ = "school_days"

    school_code: Mapped[str] = mapped_column(String(64), index=True)
    school_name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(20))
    day: Mapped[date] = mapped_column(Date)
    enrolled: Mapped[int] = mapped_column(Integer)
    present: Mapped[int] = mapped_column(Integer)
    teachers: Mapped[int] = mapped_column(Integer)
    classes: Mapped[int] = mapped_column(Integer)

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        return (Index("ix_school_days_unit_day", "unit_code", "day"),)


class ObservationRow(RecordColumns, Base):
    """A ready-made metric value for a unit and period."""

    __tablename__ = "observations"

    metric: Mapped[str] = mapped_column(String(80))
    period_kind: Mapped[str] = mapped_column(String(10))
    period_start: Mapped[date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Float)
    numerator: Mapped[float | None] = mapped_column(Float)
    denominator: Mapped[float | None] = mapped_column(Float)

    @classmethod
    def extra_indexes(cls) -> tuple[Index, ...]:
        return (Index("ix_observations_metric_unit_period", "metric", "unit_code", "period_start"),)
