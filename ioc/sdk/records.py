"""Canonical records: what every connector maps its upstream data to."""

from __future__ import annotations

from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    """Fields every canonical record has."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_type: ClassVar[str]

    external_id: str = Field(min_length=1, max_length=128)
    unit_code: str = Field(min_length=2, max_length=10, description="Commune or province code")
    original_unit_code: str | None = Field(
        default=None, description="The code as the source sent it, when it was mapped (pre-2025)"
    )
    source_updated_at: datetime

    _moments: ClassVar[tuple[str, ...]] = ("source_updated_at",)
    """The fields that may hold a datetime (found for each subclass as it is defined)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._moments = tuple(
            name for name, field in cls.model_fields.items() if _may_hold_datetime(field.annotation)
        )

    @model_validator(mode="after")
    def _datetimes_are_aware(self) -> Record:
        # One check per record over its datetime fields: a validator per field ("*") cost a
        # third of building a dossier.
        for name in self._moments:
            value = getattr(self, name)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{name}: timestamp has no UTC offset")
        return self


def _may_hold_datetime(annotation: Any) -> bool:
    """Whether a field's type is datetime, or a union with it (`datetime | None`)."""
    return annotation is datetime or datetime in get_args(annotation)


# ---------------------------------------------------------------- dossiers (một cửa)


class Channel(StrEnum):
    """How a dossier was submitted (KenhThucHien 1/2/3)."""

    DIRECT = "direct"
    ONLINE = "online"
    POSTAL = "postal"


class DossierStatus(IntEnum):
    """TrangThaiHoSo as synced to the national public service portal."""

    REGISTERED = 1
    RECEIVED = 2
    NOT_ACCEPTED = 3
    PROCESSING = 4
    SUPPLEMENT_REQUESTED = 5
    AWAITING_PAYMENT = 6
    WITHDRAWN = 7
    STOPPED = 8
    PROCESSED = 9
    RETURNED = 10

    @property
    def is_cancelled(self) -> bool:
        """Not accepted, withdrawn or stopped: counted neither on time nor late."""
        return self in CANCELLED_STATUSES


CANCELLED_STATUSES = frozenset(
    {DossierStatus.NOT_ACCEPTED, DossierStatus.WITHDRAWN, DossierStatus.STOPPED}
)


class SupplementRequest(BaseModel):
    """A request for more documents (yêu cầu bổ sung), which moves the due date."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested_at: datetime | None = None
    previous_due_at: datetime | None = Field(default=None, description="NgayHenTraTruoc")
    new_due_at: datetime | None = Field(default=None, description="NgayHenTraMoi")


class Dossier(Record):
    """An administrative-procedure dossier (hồ sơ thủ tục hành chính)."""

    record_type: ClassVar[str] = "dossier"

    procedure_code: str = Field(min_length=1, max_length=64)
    procedure_name: str = ""
    field_code: str = Field(min_length=1, max_length=64, description="lĩnh vực")
    field_name: str = ""
    agency_code: str = Field(default="", max_length=64)
    agency_name: str = ""
    channel: Channel
    status: DossierStatus
    received_at: datetime
    due_at: datetime | None = None
    resolved_at: datetime | None = Field(default=None, description="NgayKetThucXuLy")
    returned_at: datetime | None = Field(default=None, description="NgayTra")
    fee: float = Field(default=0.0, ge=0, description="Fees and charges (phí, lệ phí), VND")
    paid_online: bool = False
    digitised: bool = Field(default=False, description="DuocSoHoa")
    reused_national_data: bool = Field(default=False, description="DuocLayTuKhoDMQG")
    electronic_result: bool = False
    synced_to_portal: bool = False
    apology_issued: bool = Field(default=False, description="phiếu xin lỗi và hẹn lại")
    supplements: tuple[SupplementRequest, ...] = ()

    @model_validator(mode="after")
    def _dates_in_order(self) -> Dossier:
        if self.due_at is not None and self.due_at < self.received_at:
            raise ValueError("due date (NgayHenTra) is before the receipt date (NgayTiepNhan)")
        if self.resolved_at is not None and self.resolved_at < self.received_at:
            raise ValueError("processing ended (NgayKetThucXuLy) before it was received")
        return self

    @property
    def is_open(self) -> bool:
        """Still being handled: not ended and not cancelled."""
        return self.resolved_at is None and not self.status.is_cancelled


# ---------------------------------------------------------------- citizen feedback (PAKN)


class FeedbackStatus(StrEnum):
    """Open311 request status."""

    OPEN = "open"
    CLOSED = "closed"


class FeedbackReport(Record):
    """A citizen feedback report (phản ánh kiến nghị), an Open311 service request."""

    record_type: ClassVar[str] = "feedback"

    service_code: str = Field(min_length=1, max_length=64)
    service_name: str = ""
    category: str = Field(default="", description="Open311 service group")
    status: FeedbackStatus
    status_notes: str = ""
    description: str = ""
    agency: str = Field(default="", description="agency_responsible")
    requested_at: datetime
    expected_at: datetime | None = Field(default=None, description="expected_datetime: the SLA")
    closed_at: datetime | None = None
    address: str = ""
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    reporter_name: str | None = Field(default=None, description="Personal data: masked for viewers")
    reporter_phone: str | None = Field(default=None, description="Personal data")

    @model_validator(mode="after")
    def _times_in_order(self) -> FeedbackReport:
        if self.closed_at is not None and self.closed_at < self.requested_at:
            raise ValueError("closed before it was requested")
        if self.status is FeedbackStatus.CLOSED and self.closed_at is None:
            raise ValueError("a closed report needs its closing time")
        return self


# ---------------------------------------------------------------- health (FHIR)


class EncounterClass(StrEnum):
    """HL7 v3 ActCode encounter classes used by hospitals."""

    AMBULATORY = "AMB"
    INPATIENT = "IMP"
    EMERGENCY = "EMER"
    SHORT_STAY = "SS"
    OTHER = "OTHER"


class Encounter(Record):
    """A hospital encounter: an outpatient visit, an inpatient stay, an emergency visit."""

    record_type: ClassVar[str] = "encounter"

    version_id: str = Field(default="", description="FHIR meta.versionId")
    facility_code: str = Field(min_length=1, max_length=64)
    facility_name: str = ""
    encounter_class: EncounterClass
    status: str = Field(description="FHIR Encounter.status, e.g. in-progress, finished")
    start_at: datetime | None = None
    end_at: datetime | None = None
    wait_minutes: float | None = Field(
        default=None, ge=0, description="arrived → in-progress, from statusHistory"
    )
    discharge_disposition: str | None = None
    referred_out: bool = False

    @model_validator(mode="after")
    def _period_in_order(self) -> Encounter:
        if self.start_at and self.end_at and self.end_at < self.start_at:
            raise ValueError("period.end is before period.start")
        return self


class BedCensus(Record):
    """Beds of one facility at one moment (from FHIR bed Locations' operationalStatus)."""

    record_type: ClassVar[str] = "bed_census"

    facility_code: str = Field(min_length=1, max_length=64)
    facility_name: str = ""
    measured_at: datetime
    beds_total: int = Field(ge=0)
    beds_occupied: int = Field(ge=0)
    beds_closed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _counts_add_up(self) -> BedCensus:
        if self.beds_occupied + self.beds_closed > self.beds_total:
            raise ValueError("occupied plus closed beds exceed the total")
        return self

    @property
    def beds_available(self) -> int:
        """Beds that can be used: all but closed ones (the occupancy denominator)."""
        return self.beds_total - self.beds_closed


# ---------------------------------------------------------------- education


class SchoolLevel(StrEnum):
    """Levels of the Vietnamese school system."""

    PRESCHOOL = "preschool"
    PRIMARY = "primary"
    LOWER_SECONDARY = "lower_secondary"
    UPPER_SECONDARY = "upper_secondary"


class SchoolDay(Record):
    """One school's enrolment, attendance (chuyên cần) and teachers on one school day."""

    record_type: ClassVar[str] = "school_day"

    school_code: str = Field(min_length=1, max_length=64)
    school_name: str = ""
    level: SchoolLevel
    day: date
    enrolled: int = Field(ge=0)
    present: int = Field(ge=0)
    teachers: int = Field(default=0, ge=0)
    classes: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _present_within_enrolled(self) -> SchoolDay:
        if self.present > self.enrolled:
            raise ValueError("more pupils present than enrolled")
        return self


# ---------------------------------------------------------------- ready-made metrics


class PeriodKindName(StrEnum):
    """Calendar periods an observation can cover."""

    DAY = "day"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class Observation(Record):
    """A metric value computed elsewhere for a unit and period (e.g. PAR INDEX, SIPAS)."""

    record_type: ClassVar[str] = "observation"

    metric: str = Field(min_length=1, max_length=80)
    period_kind: PeriodKindName
    period_start: date
    value: float
    numerator: float | None = None
    denominator: float | None = None


RECORD_TYPES: dict[str, type[Record]] = {
    cls.record_type: cls
    for cls in (Dossier, FeedbackReport, Encounter, BedCensus, SchoolDay, Observation)
}
"""Every canonical record type by its `record_type` name."""
