"""How each canonical record type becomes a row: its table and its derived local-date columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from functools import cache, lru_cache
from typing import Any, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from ioc.kit.clock import local_date, local_midnight
from ioc.kpi.calendar import WorkingCalendar
from ioc.records.models import (
    BedCensusRow,
    DossierRow,
    EncounterRow,
    FeedbackRow,
    ObservationRow,
    RecordColumns,
    SchoolDayRow,
)
from ioc.sdk import BedCensus, Dossier, Encounter, FeedbackReport, Observation, Record, SchoolDay

Derive = Callable[[Any, ZoneInfo, WorkingCalendar], dict[str, Any]]
"""(record, local time zone, working-day calendar) → derived columns."""

DEFAULT_CALENDAR = WorkingCalendar()
"""Vietnamese public holidays, no make-up Saturdays: for callers without settings."""


@dataclass(frozen=True)
class RecordStore:
    """Where a record type is stored and which local dates it derives."""

    record_class: type[Record]
    model: type[RecordColumns]
    derive: Derive

    def to_row(
        self,
        record: Record,
        *,
        instance_id: int,
        tz: ZoneInfo,
        now: datetime,
        calendar: WorkingCalendar | None = None,
    ) -> dict[str, Any]:
        """The row of a record: its fields, derived local dates, instance and ingest time."""
        row = dict(record.__dict__)  # pydantic keeps validated field values here
        enums, nested = _conversions(type(record))
        for name in enums:
            if row[name] is not None:
                row[name] = row[name].value
        for name in nested:
            row[name] = [item.model_dump(mode="json") for item in row[name]]
        row.update(self.derive(record, tz, calendar or DEFAULT_CALENDAR))
        row["instance_id"] = instance_id
        row["ingested_at"] = now
        return row


@cache
def _conversions(record_class: type[Record]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Fields stored as their enum's value, and tuples of models stored as JSON lists."""
    enums, nested = [], []
    for name, field in record_class.model_fields.items():
        types = (field.annotation, *get_args(field.annotation))
        if any(isinstance(t, type) and issubclass(t, Enum) for t in types):
            enums.append(name)
        elif any(isinstance(t, type) and issubclass(t, BaseModel) for t in types):
            nested.append(name)
    return tuple(enums), tuple(nested)


def _day(moment: datetime | None, tz: ZoneInfo) -> date | None:
    return local_date(moment, tz) if moment is not None else None


def _hours(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() / 3600, 4)


DUE_SOON_WORKING_DAYS = 1
"""A dossier is due soon (sắp đến hạn) when due by the end of the next working day."""


def due_soon_from(due: datetime | None, tz: ZoneInfo, calendar: WorkingCalendar) -> datetime | None:
    """The first local midnight from which `due` falls within DUE_SOON_WORKING_DAYS."""
    if due is None:
        return None
    return _due_soon_from_day(local_date(due, tz), tz, calendar)


@lru_cache(maxsize=4096)
def _due_soon_from_day(due_day: date, tz: ZoneInfo, calendar: WorkingCalendar) -> datetime:
    """`due_soon_from` of a local due day: remembered, as a page's dossiers share few due days
    (a calendar's days never change once it is made)."""
    first = due_day
    while calendar.add_working_days(first - timedelta(days=1), DUE_SOON_WORKING_DAYS) >= due_day:
        first -= timedelta(days=1)
    return local_midnight(first, tz)


def _dossier(d: Dossier, tz: ZoneInfo, calendar: WorkingCalendar) -> dict[str, Any]:
    return {
        "due_soon_from": due_soon_from(d.due_at, tz, calendar),
        "received_date": _day(d.received_at, tz),
        "due_date": _day(d.due_at, tz),
        "resolved_date": _day(d.resolved_at, tz),
        "resolution_working_days": (
            round(calendar.working_days_between(d.received_at, d.resolved_at), 4)
            if d.resolved_at is not None
            else None
        ),
    }


def _feedback(f: FeedbackReport, tz: ZoneInfo, _calendar: WorkingCalendar) -> dict[str, Any]:
    return {
        "requested_date": _day(f.requested_at, tz),
        "expected_date": _day(f.expected_at, tz),
        "closed_date": _day(f.closed_at, tz),
        "close_hours": _hours(f.requested_at, f.closed_at),
    }


def _encounter(e: Encounter, tz: ZoneInfo, _calendar: WorkingCalendar) -> dict[str, Any]:
    hours = _hours(e.start_at, e.end_at)
    return {
        "start_date": _day(e.start_at, tz),
        "end_date": _day(e.end_at, tz),
        "stay_days": round(hours / 24, 4) if hours is not None else None,
    }


STORES: dict[str, RecordStore] = {
    store.record_class.record_type: store
    for store in (
        RecordStore(Dossier, DossierRow, _dossier),
        RecordStore(FeedbackReport, FeedbackRow, _feedback),
        RecordStore(Encounter, EncounterRow, _encounter),
        RecordStore(
            BedCensus,
            BedCensusRow,
            lambda b, tz, _calendar: {"measured_date": _day(b.measured_at, tz)},
        ),
        RecordStore(SchoolDay, SchoolDayRow, lambda s, tz, _calendar: {}),
        RecordStore(Observation, ObservationRow, lambda o, tz, _calendar: {}),
    )
}
"""Every storable record type by its `record_type` name."""
