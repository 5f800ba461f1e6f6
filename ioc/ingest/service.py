"""Ingest: validate, upsert canonical rows idempotently, keep rejects, report what changed.

The caller owns the transaction: ingest, KPI recompute and the cursor advance commit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from ioc.ingest.models import MAPPING_STAGE, VALIDATION_STAGE, RejectedRecord
from ioc.kit.upsert import upsert
from ioc.kpi import delta_sql
from ioc.kpi.calendar import WorkingCalendar
from ioc.kpi.catalog import fact_columns
from ioc.kpi.delta import Snapshot, snapshot
from ioc.records.stores import STORES
from ioc.sdk import Batch, Dossier, Record

Facts = dict[str, Any]
"""Of one version of a record: its unit and the local dates the KPI formulas read."""


@dataclass
class ChangeSet:
    """What an ingest changed: the facts of the old and new versions of every touched record,
    by record type."""

    facts: dict[str, list[Facts]] = field(default_factory=dict)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    """The stored versions before the batch, by record type (see `ioc.kpi.delta`)."""

    def add(self, record_type: str, facts: Iterable[Facts]) -> None:
        """Add facts of one record type."""
        self.facts.setdefault(record_type, []).extend(facts)

    def __bool__(self) -> bool:
        return any(self.facts.values())


@dataclass
class IngestResult:
    """Counts of one batch and the changes it made."""

    stored: int
    rejected: int
    changes: ChangeSet


async def ingest_batch(
    session: AsyncSession,
    *,
    instance_id: int,
    batch: Batch,
    known_units: set[str],
    tz: ZoneInfo,
    now: datetime,
    record_type: str = Dossier.record_type,
    calendar: WorkingCalendar | None = None,
    kpi_now: datetime | None = None,
) -> IngestResult:
    """Store a batch's valid records and its rejects; nothing is committed here.

    `record_type` labels the rejects that never became records (those the connector could
    not map); `now` stamps the rows (operational time); `kpi_now` is the moment the KPI
    recompute will judge at (the context's clock; `now` by default).
    """
    accepted, rejected = validate_records(batch.records, known_units)
    changes = ChangeSet()
    stored = 0
    for type_name, records in _by_type(accepted).items():
        store = STORES[type_name]
        latest = _latest_versions(records)
        columns = ["unit_code", *fact_columns(type_name)]
        if len(columns) > 1:
            # The stored versions: the KPI service pairs them with the new ones to add only the
            # differences to the cells (on PostgreSQL from a copy the database keeps, in Python
            # from the snapshot otherwise).
            external_ids = [r.external_id for r in latest]
            at = kpi_now or now
            if delta_sql.supported(session, type_name):
                before = Snapshot(type_name, instance_id, at, external_ids, names=())
                before.kept, old_facts = await delta_sql.keep_versions(
                    session,
                    type_name,
                    instance_id=instance_id,
                    external_ids=external_ids,
                    facts=columns,
                )
            else:
                before = await snapshot(
                    session, type_name, instance_id=instance_id, external_ids=external_ids, at=at
                )
                old_facts = before.facts()
            changes.snapshots[type_name] = before
            changes.add(type_name, old_facts)
        rows = [
            store.to_row(r, instance_id=instance_id, tz=tz, now=now, calendar=calendar)
            for r in latest
        ]
        model = store.model
        await upsert(
            session,
            model,
            rows,
            keys=("instance_id", "external_id"),
            update_where=lambda excluded, model=model: (
                model.source_updated_at <= excluded.source_updated_at
            ),
        )
        if len(columns) > 1:
            changes.add(type_name, ({c: row[c] for c in columns} for row in rows))
        stored += len(latest)
    session.add_all(
        RejectedRecord(
            instance_id=instance_id,
            record_type=record_type,
            stage=MAPPING_STAGE,
            external_id=r.external_id,
            reason=r.reason,
            payload=r.payload,
            rejected_at=now,
        )
        for r in batch.rejected
    )
    session.add_all(
        RejectedRecord(
            instance_id=instance_id,
            record_type=record.record_type,
            stage=VALIDATION_STAGE,
            external_id=record.external_id,
            reason=reason,
            payload=record.model_dump(mode="json"),
            rejected_at=now,
        )
        for record, reason in rejected
    )
    await session.flush()
    return IngestResult(
        stored=stored, rejected=len(rejected) + len(batch.rejected), changes=changes
    )


def validate_records(
    records: Iterable[Record], known_units: set[str]
) -> tuple[list[Record], list[tuple[Record, str]]]:
    """Records the IOC can store, and the others with the reason."""
    accepted: list[Record] = []
    rejected: list[tuple[Record, str]] = []
    for record in records:
        if record.record_type not in STORES:
            rejected.append((record, f"record type {record.record_type!r} is not stored"))
        elif record.unit_code not in known_units:
            reason = f"unknown unit code {record.unit_code!r}: not a unit of this province"
            rejected.append((record, reason))
        else:
            accepted.append(record)
    return accepted, rejected


def _by_type(records: Iterable[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = {}
    for record in records:
        grouped.setdefault(record.record_type, []).append(record)
    return grouped


def _latest_versions(records: Sequence[Record]) -> list[Record]:
    """One version per external id: a page that repeats a record keeps its newest version."""
    latest: dict[str, Record] = {}
    for record in records:
        seen = latest.get(record.external_id)
        if seen is None or seen.source_updated_at <= record.source_updated_at:
            latest[record.external_id] = record
    return list(latest.values())
