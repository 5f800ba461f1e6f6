"""Ingest: validate, upsert canonical rows idempotently, keep rejects, report what changed.

The caller owns the transaction: ingest, KPI recompute and the cursor advance commit together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.ingest.models import RejectedRecord
from ioc.kit.clock import local_date
from ioc.kit.upsert import upsert
from ioc.records.models import DossierRow
from ioc.sdk import Batch, Dossier, Record, Rejected

LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class DossierFacts:
    """What the KPI engine needs to know of one version of a dossier to find affected cells."""

    unit_code: str
    received_date: date
    due_date: date | None
    resolved_date: date | None


def select_dossier_facts() -> Select[tuple[str, date, date | None, date | None]]:
    """SELECT of the columns that make up `DossierFacts`, to add conditions to."""
    return select(
        DossierRow.unit_code,
        DossierRow.received_date,
        DossierRow.due_date,
        DossierRow.resolved_date,
    )


@dataclass
class ChangeSet:
    """What an ingest changed: old and new versions of every touched dossier."""

    dossiers: list[DossierFacts] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.dossiers)


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
) -> IngestResult:
    """Store a batch's valid records and its rejects; nothing is committed here.

    `record_type` labels the rejects that never became records (those the connector could
    not map).
    """
    accepted, rejected = _validate(batch.records, known_units)
    rejected.extend(batch.rejected)
    dossiers = _latest_versions(accepted)
    changes = ChangeSet()
    if dossiers:
        old = await _existing_facts(session, instance_id, [d.external_id for d in dossiers])
        changes.dossiers.extend(old)
        rows = [_dossier_row(d, instance_id=instance_id, tz=tz, now=now) for d in dossiers]
        await upsert(
            session,
            DossierRow,
            rows,
            keys=("instance_id", "external_id"),
            update_where=lambda excluded: (
                DossierRow.source_updated_at <= excluded.source_updated_at
            ),
        )
        changes.dossiers.extend(_facts(row) for row in rows)
    if rejected:
        session.add_all(
            RejectedRecord(
                instance_id=instance_id,
                record_type=record_type,
                external_id=r.external_id,
                reason=r.reason,
                payload=r.payload,
                rejected_at=now,
            )
            for r in rejected
        )
    await session.flush()
    return IngestResult(stored=len(dossiers), rejected=len(rejected), changes=changes)


def _validate(
    records: Iterable[Record], known_units: set[str]
) -> tuple[list[Dossier], list[Rejected]]:
    accepted: list[Dossier] = []
    rejected: list[Rejected] = []
    for record in records:
        reason = None
        if not isinstance(record, Dossier):
            reason = f"record type {type(record).__name__} is not stored yet"
        elif record.unit_code not in known_units:
            reason = f"unknown unit code {record.unit_code!r}: not a commune of this province"
        if reason is None:
            accepted.append(record)
        else:
            rejected.append(
                Rejected(
                    external_id=record.external_id,
                    reason=reason,
                    payload=record.model_dump(mode="json"),
                )
            )
    return accepted, rejected


def _latest_versions(dossiers: Sequence[Dossier]) -> list[Dossier]:
    """One version per external id: a page that repeats a record keeps its newest version."""
    latest: dict[str, Dossier] = {}
    for dossier in dossiers:
        seen = latest.get(dossier.external_id)
        if seen is None or seen.source_updated_at <= dossier.source_updated_at:
            latest[dossier.external_id] = dossier
    return list(latest.values())


async def _existing_facts(
    session: AsyncSession, instance_id: int, external_ids: list[str]
) -> list[DossierFacts]:
    facts: list[DossierFacts] = []
    for start in range(0, len(external_ids), LOOKUP_CHUNK):
        chunk = external_ids[start : start + LOOKUP_CHUNK]
        result = await session.execute(
            select_dossier_facts().where(
                DossierRow.instance_id == instance_id, DossierRow.external_id.in_(chunk)
            )
        )
        facts.extend(DossierFacts(*row) for row in result.all())
    return facts


def _dossier_row(
    dossier: Dossier, *, instance_id: int, tz: ZoneInfo, now: datetime
) -> dict[str, Any]:
    def day(moment: datetime | None) -> date | None:
        return local_date(moment, tz) if moment is not None else None

    return {
        "instance_id": instance_id,
        "external_id": dossier.external_id,
        "unit_code": dossier.unit_code,
        "original_unit_code": dossier.original_unit_code,
        "procedure_code": dossier.procedure_code,
        "procedure_name": dossier.procedure_name,
        "field_code": dossier.field_code,
        "field_name": dossier.field_name,
        "agency_code": dossier.agency_code,
        "agency_name": dossier.agency_name,
        "channel": dossier.channel.value,
        "status": int(dossier.status),
        "received_at": dossier.received_at,
        "due_at": dossier.due_at,
        "resolved_at": dossier.resolved_at,
        "returned_at": dossier.returned_at,
        "received_date": local_date(dossier.received_at, tz),
        "due_date": day(dossier.due_at),
        "resolved_date": day(dossier.resolved_at),
        "paid_online": dossier.paid_online,
        "synced_to_portal": dossier.synced_to_portal,
        "apology_issued": dossier.apology_issued,
        "source_updated_at": dossier.source_updated_at,
        "ingested_at": now,
    }


def _facts(row: dict[str, Any]) -> DossierFacts:
    return DossierFacts(
        unit_code=row["unit_code"],
        received_date=row["received_date"],
        due_date=row["due_date"],
        resolved_date=row["resolved_date"],
    )
