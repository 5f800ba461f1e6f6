"""The KPI catalogue: declarations of what is measured, how it is labelled and judged.

Adding a KPI is adding one `KpiDefinition` with a formula from `ioc.kpi.formulas`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_

from ioc.kpi import service_index
from ioc.kpi.formulas import (
    Composite,
    Formula,
    IncidentResponse,
    InPeriod,
    LatestPerEntity,
    MedianInPeriod,
    OpenAt,
    SourceLag,
    Tally,
    column,
)
from ioc.kpi.periods import PeriodKind
from ioc.sdk import CANCELLED_STATUSES

CANCELLED = [int(s) for s in CANCELLED_STATUSES]


class Direction(StrEnum):
    """Which way is good for a KPI."""

    UP = "up"
    DOWN = "down"
    BAND = "band"
    NONE = "none"


class ValueKind(StrEnum):
    """How a cell's numerator and denominator make the value shown."""

    PERCENT = "percent"  # 100 × numerator ÷ denominator
    MEDIAN = "median"  # the numerator; the denominator counts the records
    MEAN = "mean"  # numerator ÷ denominator (a sum over a count)
    MAXIMUM = "maximum"  # the numerator (the largest); the denominator counts the items
    COUNT = "count"  # the numerator


@dataclass(frozen=True)
class KpiDefinition:
    """One KPI: identity, labels, unit, thresholds, and the formula behind it."""

    id: str
    name_vi: str
    name_en: str
    domain: str
    unit_of_measure: str
    good_direction: Direction
    value_kind: ValueKind
    formula: Formula
    headline_period: PeriodKind
    warn: float | None = None
    critical: float | None = None

    @property
    def record_type(self) -> str:
        """The record type the formula reads."""
        return self.formula.record_type

    @property
    def is_additive(self) -> bool:
        """Whether a province's cell is the sum of its communes' (all but composite scores)."""
        return not isinstance(
            self.formula, Composite | MedianInPeriod | SourceLag | IncidentResponse
        )

    @property
    def engine_computed(self) -> bool:
        """Whether the engine's rebuild and refresh compute its cells (not incidents' response
        times, whose cells the incidents domain stores)."""
        return not isinstance(self.formula, IncidentResponse)

    @property
    def is_ratio(self) -> bool:
        """Whether the value divides by a denominator (a missing one means no value)."""
        return self.value_kind is not ValueKind.COUNT

    def value(self, numerator: float, denominator: float | None) -> float | None:
        """The displayed value of a cell."""
        if self.value_kind is ValueKind.COUNT:
            return numerator
        if self.value_kind in (ValueKind.MEDIAN, ValueKind.MAXIMUM):
            return numerator if denominator else None
        if not denominator:
            return None
        scale = 100.0 if self.value_kind is ValueKind.PERCENT else 1.0
        return round(scale * numerator / denominator, 4)


# ---------------------------------------------------------------- conditions


def not_cancelled(t: Any, _at: datetime) -> Any:
    """Dossiers that count at all: not refused, withdrawn or stopped."""
    return and_(t.status.not_in(CANCELLED), t.due_at.is_not(None))


def dossier_on_time(t: Any, at: datetime) -> Any:
    """Ended by the due time, or not yet due (đúng hạn): the complement of `dossier_late`."""
    return or_(and_(t.resolved_at.is_not(None), t.resolved_at <= t.due_at), t.due_at >= at)


def dossier_late(t: Any, at: datetime) -> Any:
    """Its due time has passed and it was not ended by then (trễ hạn): ended after it, or
    still open. A dossier whose due time is still ahead is never late, whatever end the
    upstream reports for it — so every late dossier is due on or before today, which lets a
    query of late dossiers read only that part of the index on the due date."""
    return and_(
        t.due_at < at,
        or_(t.resolved_at.is_(None), t.resolved_at > t.due_at),
    )


def feedback_on_time(t: Any, at: datetime) -> Any:
    """Closed by the expected time, or open and not yet due; no SLA counts as on time."""
    return or_(
        t.expected_at.is_(None),
        and_(t.closed_at.is_not(None), t.closed_at <= t.expected_at),
        and_(t.closed_at.is_(None), t.expected_at >= at),
    )


def _is(name: str, value: Any) -> Any:
    return lambda t, _at: getattr(t, name) == value


def _all(*conditions: Any) -> Any:
    return lambda t, at: and_(*(c(t, at) for c in conditions))


def _true(name: str) -> Any:
    return lambda t, _at: getattr(t, name).is_(True)


INPATIENT_DISCHARGED = _all(_is("encounter_class", "IMP"), _is("status", "finished"))

# ---------------------------------------------------------------- the catalogue

CATALOG: tuple[KpiDefinition, ...] = (
    KpiDefinition(
        id="onestop.on_time_rate",
        name_vi="Tỷ lệ hồ sơ đúng hạn",
        name_en="On-time dossier rate",
        domain="onestop",
        unit_of_measure="%",
        good_direction=Direction.UP,
        value_kind=ValueKind.PERCENT,
        formula=InPeriod(
            "dossier",
            "due_date",
            numerator=Tally(dossier_on_time),
            denominator=Tally(),
            where=not_cancelled,
            drifts_at="due_at",
        ),
        headline_period=PeriodKind.MONTH,
        warn=95.0,
        critical=90.0,
    ),
    KpiDefinition(
        id="onestop.overdue_open",
        name_vi="Hồ sơ đang quá hạn",
        name_en="Open overdue dossiers",
        domain="onestop",
        unit_of_measure="count",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.COUNT,
        formula=OpenAt(
            "dossier",
            opened="received_at",
            closed="resolved_at",
            active_from="due_date",
            active_to="resolved_date",
            where=not_cancelled,
            after="due_at",
        ),
        headline_period=PeriodKind.DAY,
        warn=0.0,
    ),
    KpiDefinition(
        id="onestop.due_soon",
        name_vi="Hồ sơ sắp đến hạn",
        name_en="Dossiers due soon",
        domain="onestop",
        unit_of_measure="count",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.COUNT,
        formula=OpenAt(
            "dossier",
            opened="received_at",
            closed="resolved_at",
            active_from="received_date",
            active_to="due_date",
            where=not_cancelled,
            # due by the end of the next working day (see records.stores.due_soon_from)
            window=("due_soon_from", "due_at"),
        ),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="onestop.backlog",
        name_vi="Hồ sơ tồn",
        name_en="Dossier backlog",
        domain="onestop",
        unit_of_measure="count",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.COUNT,
        formula=OpenAt(
            "dossier",
            opened="received_at",
            closed="resolved_at",
            active_from="received_date",
            active_to="resolved_date",
            where=not_cancelled,
        ),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="onestop.apology_rate",
        name_vi="Tỷ lệ trễ hạn có phiếu xin lỗi",
        name_en="Late dossiers with an apology slip",
        domain="onestop",
        unit_of_measure="%",
        good_direction=Direction.UP,
        value_kind=ValueKind.PERCENT,
        formula=InPeriod(
            "dossier",
            "due_date",
            numerator=Tally(_all(dossier_late, _true("apology_issued"))),
            denominator=Tally(dossier_late),
            where=not_cancelled,
            drifts_at="due_at",
        ),
        headline_period=PeriodKind.MONTH,
        warn=100.0,
    ),
    KpiDefinition(
        id="onestop.mean_resolution_days",
        name_vi="Thời gian giải quyết trung bình",
        name_en="Mean resolution time",
        domain="onestop",
        unit_of_measure="working days",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MEAN,
        formula=InPeriod(
            "dossier",
            "resolved_date",
            numerator=Tally(value=column("resolution_working_days")),
            denominator=Tally(),
            where=lambda t, _at: and_(
                t.status.not_in(CANCELLED), t.resolution_working_days.is_not(None)
            ),
        ),
        headline_period=PeriodKind.MONTH,
    ),
    *(
        KpiDefinition(
            id=f"onestop.{name}",
            name_vi=name_vi,
            name_en=name_en,
            domain="onestop",
            unit_of_measure="%",
            good_direction=Direction.UP,
            value_kind=ValueKind.PERCENT,
            formula=InPeriod(
                "dossier",
                "received_date",
                numerator=Tally(numerator),
                denominator=Tally(denominator) if denominator else Tally(),
            ),
            headline_period=PeriodKind.MONTH,
            warn=warn,
        )
        for name, name_vi, name_en, numerator, denominator, warn in (
            (
                "online_rate",
                "Tỷ lệ hồ sơ trực tuyến",
                "Online submission rate",
                _is("channel", "online"),
                None,
                50.0,
            ),
            (
                "online_payment_rate",
                "Tỷ lệ thanh toán trực tuyến",
                "Online payment rate",
                _all(lambda t, _at: t.fee > 0, _true("paid_online")),
                lambda t, _at: t.fee > 0,
                80.0,
            ),
            (
                "digitised_rate",
                "Tỷ lệ số hóa hồ sơ",
                "Digitised dossiers",
                _true("digitised"),
                None,
                80.0,
            ),
            (
                "electronic_result_rate",
                "Tỷ lệ trả kết quả điện tử",
                "Electronic results",
                _true("electronic_result"),
                None,
                None,
            ),
            (
                "data_reuse_rate",
                "Tỷ lệ tái sử dụng dữ liệu",
                "Data reused from the national store",
                _true("reused_national_data"),
                None,
                80.0,
            ),
            (
                "portal_sync_rate",
                "Tỷ lệ đồng bộ DVC quốc gia",
                "Synced to the national portal",
                _true("synced_to_portal"),
                None,
                100.0,
            ),
        )
    ),
    KpiDefinition(
        id="onestop.service_index",
        name_vi="Điểm Bộ chỉ số 766 (ước tính)",
        name_en="Decision 766 service index (estimate)",
        domain="onestop",
        unit_of_measure="points",
        good_direction=Direction.UP,
        value_kind=ValueKind.COUNT,
        formula=Composite(
            "dossier",
            components=service_index.COMPONENTS,
            combine=service_index.score,
            combine_sql=service_index.score_sql,
        ),
        headline_period=PeriodKind.MONTH,
    ),
    KpiDefinition(
        id="feedback.received",
        name_vi="PAKN tiếp nhận",
        name_en="Feedback reports received",
        domain="feedback",
        unit_of_measure="count",
        good_direction=Direction.NONE,
        value_kind=ValueKind.COUNT,
        formula=InPeriod("feedback", "requested_date", numerator=Tally()),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="feedback.on_time_rate",
        name_vi="Tỷ lệ PAKN xử lý đúng hạn",
        name_en="Feedback handled on time",
        domain="feedback",
        unit_of_measure="%",
        good_direction=Direction.UP,
        value_kind=ValueKind.PERCENT,
        formula=InPeriod(
            "feedback",
            "requested_date",
            numerator=Tally(feedback_on_time),
            denominator=Tally(),
            drifts_at="expected_at",
        ),
        headline_period=PeriodKind.MONTH,
        warn=90.0,
    ),
    KpiDefinition(
        id="feedback.overdue_open",
        name_vi="PAKN quá hạn",
        name_en="Overdue open feedback",
        domain="feedback",
        unit_of_measure="count",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.COUNT,
        formula=OpenAt(
            "feedback",
            opened="requested_at",
            closed="closed_at",
            active_from="expected_date",
            active_to="closed_date",
            after="expected_at",
        ),
        headline_period=PeriodKind.DAY,
        warn=0.0,
    ),
    KpiDefinition(
        id="feedback.mean_close_hours",
        name_vi="Thời gian xử lý PAKN trung bình",
        name_en="Mean feedback handling time",
        domain="feedback",
        unit_of_measure="hours",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MEAN,
        formula=InPeriod(
            "feedback",
            "closed_date",
            numerator=Tally(value=column("close_hours")),
            denominator=Tally(),
            where=lambda t, _at: t.close_hours.is_not(None),
        ),
        headline_period=PeriodKind.MONTH,
    ),
    KpiDefinition(
        id="health.bed_occupancy",
        name_vi="Công suất sử dụng giường bệnh",
        name_en="Bed occupancy",
        domain="health",
        unit_of_measure="%",
        good_direction=Direction.BAND,
        value_kind=ValueKind.PERCENT,
        formula=LatestPerEntity(
            "bed_census",
            entity="facility_code",
            time_column="measured_at",
            date_column="measured_date",
            numerator=column("beds_occupied"),
            denominator=lambda t: t.beds_total - t.beds_closed,
        ),
        headline_period=PeriodKind.DAY,
        warn=85.0,
        critical=95.0,
    ),
    KpiDefinition(
        id="health.inpatients",
        name_vi="Người bệnh nội trú hiện có",
        name_en="Inpatients now",
        domain="health",
        unit_of_measure="count",
        good_direction=Direction.NONE,
        value_kind=ValueKind.COUNT,
        formula=OpenAt(
            "encounter",
            opened="start_at",
            closed="end_at",
            active_from="start_date",
            active_to="end_date",
            where=lambda t, _at: and_(
                t.encounter_class == "IMP",
                t.status.not_in(["cancelled", "entered-in-error", "planned"]),
            ),
        ),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="health.outpatient_visits",
        name_vi="Lượt khám ngoại trú",
        name_en="Outpatient visits",
        domain="health",
        unit_of_measure="count",
        good_direction=Direction.NONE,
        value_kind=ValueKind.COUNT,
        formula=InPeriod(
            "encounter",
            "start_date",
            numerator=Tally(),
            where=lambda t, _at: and_(
                t.encounter_class == "AMB", t.status.not_in(["cancelled", "entered-in-error"])
            ),
        ),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="health.er_wait_minutes",
        name_vi="Thời gian chờ cấp cứu",
        name_en="Emergency waiting time (median)",
        domain="health",
        unit_of_measure="min",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MEDIAN,
        formula=MedianInPeriod(
            "encounter",
            "start_date",
            value="wait_minutes",
            where=lambda t, _at: and_(t.encounter_class == "EMER", t.wait_minutes.is_not(None)),
        ),
        headline_period=PeriodKind.DAY,
        warn=30.0,
        critical=60.0,
    ),
    KpiDefinition(
        id="health.alos_days",
        name_vi="Ngày điều trị trung bình",
        name_en="Average length of stay",
        domain="health",
        unit_of_measure="days",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MEAN,
        formula=InPeriod(
            "encounter",
            "end_date",
            numerator=Tally(value=column("stay_days")),
            denominator=Tally(),
            where=_all(INPATIENT_DISCHARGED, lambda t, _at: t.stay_days.is_not(None)),
        ),
        headline_period=PeriodKind.MONTH,
    ),
    KpiDefinition(
        id="health.referral_out_rate",
        name_vi="Tỷ lệ chuyển tuyến",
        name_en="Referred out",
        domain="health",
        unit_of_measure="%",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.PERCENT,
        formula=InPeriod(
            "encounter",
            "end_date",
            numerator=Tally(_true("referred_out")),
            denominator=Tally(),
            where=INPATIENT_DISCHARGED,
        ),
        headline_period=PeriodKind.MONTH,
    ),
    KpiDefinition(
        id="education.attendance_rate",
        name_vi="Tỷ lệ chuyên cần",
        name_en="Attendance rate",
        domain="education",
        unit_of_measure="%",
        good_direction=Direction.UP,
        value_kind=ValueKind.PERCENT,
        formula=InPeriod(
            "school_day",
            "day",
            numerator=Tally(value=column("present")),
            denominator=Tally(value=column("enrolled")),
        ),
        headline_period=PeriodKind.DAY,
        warn=95.0,
        critical=90.0,
    ),
    KpiDefinition(
        id="education.enrolment",
        name_vi="Số học sinh",
        name_en="Pupils enrolled",
        domain="education",
        unit_of_measure="count",
        good_direction=Direction.NONE,
        value_kind=ValueKind.COUNT,
        formula=LatestPerEntity(
            "school_day",
            entity="school_code",
            time_column="day",
            date_column="day",
            numerator=column("enrolled"),
        ),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="education.pupils_per_teacher",
        name_vi="Học sinh / giáo viên",
        name_en="Pupils per teacher",
        domain="education",
        unit_of_measure="pupils",
        good_direction=Direction.BAND,
        value_kind=ValueKind.MEAN,
        formula=LatestPerEntity(
            "school_day",
            entity="school_code",
            time_column="day",
            date_column="day",
            numerator=column("enrolled"),
            denominator=column("teachers"),
            where=lambda t, _at: t.teachers > 0,
        ),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="system.data_freshness_minutes",
        name_vi="Độ trễ dữ liệu",
        name_en="Data freshness (lag of the stalest source)",
        domain="system",
        unit_of_measure="min",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MAXIMUM,
        formula=SourceLag(),
        headline_period=PeriodKind.DAY,
    ),
    KpiDefinition(
        id="incidents.mtta_minutes",
        name_vi="Thời gian phản hồi sự cố trung bình (MTTA)",
        name_en="Mean time to acknowledge incidents (MTTA)",
        domain="incidents",
        unit_of_measure="min",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MEAN,
        formula=IncidentResponse("acknowledged_at"),
        headline_period=PeriodKind.MONTH,
    ),
    KpiDefinition(
        id="incidents.mttr_minutes",
        name_vi="Thời gian xử lý sự cố trung bình (MTTR)",
        name_en="Mean time to resolve incidents (MTTR)",
        domain="incidents",
        unit_of_measure="min",
        good_direction=Direction.DOWN,
        value_kind=ValueKind.MEAN,
        formula=IncidentResponse("resolved_at"),
        headline_period=PeriodKind.MONTH,
    ),
)

KPIS: dict[str, KpiDefinition] = {k.id: k for k in CATALOG}

FRESHNESS_ALERT_INTERVALS = 3
"""A source is stale (the freshness alert) when its lag exceeds this many polling intervals;
per source, so it is flagged on `/api/v1/connectors` (`stale`) and in the breakdown."""


def fact_columns(record_type: str) -> list[str]:
    """The local-date columns the formulas over `record_type` read to find affected cells."""
    columns: list[str] = []
    for kpi in CATALOG:
        formula = kpi.formula
        if formula.record_type != record_type:
            continue
        if isinstance(formula, Composite | SourceLag | IncidentResponse):
            continue  # recomputed with its components; not over records
        if isinstance(formula, InPeriod | MedianInPeriod):
            names = [formula.time_column]
        elif isinstance(formula, OpenAt):
            names = [formula.active_from, *([formula.active_to] if formula.active_to else [])]
        else:
            names = [formula.date_column]
        columns.extend(n for n in names if n not in columns)
    return columns


class UnknownKpi(LookupError):
    """No KPI with this id is in the catalogue."""


def get_kpi(kpi_id: str) -> KpiDefinition:
    """The declaration of `kpi_id`, or `UnknownKpi`."""
    try:
        return KPIS[kpi_id]
    except KeyError:
        raise UnknownKpi(f"unknown KPI {kpi_id!r}; known: {', '.join(sorted(KPIS))}") from None
