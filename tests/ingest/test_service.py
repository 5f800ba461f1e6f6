"""Ingest: idempotent upserts, newest version wins, rejects kept with their reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from ioc.context import AppContext
from ioc.ingest.models import RejectedRecord
from ioc.ingest.service import IngestResult, ingest_batch
from ioc.kit.clock import local_date
from ioc.kit.upsert import COPY_THRESHOLD
from ioc.kpi.models import KpiValue
from ioc.kpi.service import recompute
from ioc.records.models import DossierRow
from ioc.sdk import Batch, DossierStatus, Rejected
from ioc.units.service import COMMUNE_LEVEL, unit_codes
from tests.support.factories import BIEN_HOA, make_dossier, make_instance

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


async def ingest(ctx: AppContext, instance_id: int, batch: Batch) -> IngestResult:
    async with ctx.sessionmaker() as session, session.begin():
        known = await unit_codes(session, level=COMMUNE_LEVEL)
        return await ingest_batch(
            session,
            instance_id=instance_id,
            batch=batch,
            known_units=known,
            tz=ctx.settings.tz,
            now=NOW,
        )


async def stored_dossiers(ctx: AppContext) -> list[DossierRow]:
    async with ctx.sessionmaker() as session:
        return list((await session.scalars(select(DossierRow).order_by(DossierRow.id))).all())


async def test_same_page_ingested_twice_stores_each_dossier_once(ctx: AppContext) -> None:
    instance = await make_instance(ctx)
    batch = Batch(records=[make_dossier(), make_dossier(), make_dossier()])
    await ingest(ctx, instance, batch)
    await ingest(ctx, instance, batch)
    rows = await stored_dossiers(ctx)
    assert sorted(r.external_id for r in rows) == sorted(d.external_id for d in batch.records)


async def test_newer_version_replaces_older_and_older_never_regresses(ctx: AppContext) -> None:
    instance = await make_instance(ctx)
    old = make_dossier(external_id="H-1")
    resolved = old.received_at + timedelta(days=2)
    new = old.model_copy(
        update={
            "status": DossierStatus.PROCESSED,
            "resolved_at": resolved,
            "source_updated_at": resolved,
        }
    )
    await ingest(ctx, instance, Batch(records=[new]))
    await ingest(ctx, instance, Batch(records=[old]))  # out of order: the older version
    (row,) = await stored_dossiers(ctx)
    assert row.status == DossierStatus.PROCESSED
    assert row.resolved_at == resolved


async def test_local_dates_are_derived_in_the_provinces_time_zone(ctx: AppContext) -> None:
    instance = await make_instance(ctx)
    # 2026-11-30 18:30 UTC is 2026-12-01 01:30 in Asia/Ho_Chi_Minh.
    received = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    await ingest(
        ctx,
        instance,
        Batch(
            records=[
                make_dossier(received_at=received, due_at=received, source_updated_at=received)
            ]
        ),
    )
    (row,) = await stored_dossiers(ctx)
    assert row.received_at == received
    assert str(row.received_date) == "2026-12-01"


async def test_unknown_unit_is_rejected_with_reason_while_the_rest_is_stored(
    ctx: AppContext,
) -> None:
    instance = await make_instance(ctx)
    good = make_dossier()
    stray = make_dossier(unit_code="99999")
    mapped_earlier = Rejected(
        external_id=None, reason="missing dossier id (MaHoSo)", payload={"MaTTHC": "1.0"}
    )
    result = await ingest(ctx, instance, Batch(records=[good, stray], rejected=[mapped_earlier]))
    assert (result.stored, result.rejected) == (1, 2)
    assert [r.external_id for r in await stored_dossiers(ctx)] == [good.external_id]
    async with ctx.sessionmaker() as session:
        rejects = (await session.scalars(select(RejectedRecord).order_by(RejectedRecord.id))).all()
        assert await session.scalar(select(func.count()).select_from(RejectedRecord)) == 2
    by_id = {r.external_id: r for r in rejects}
    assert "unknown unit code '99999'" in by_id[stray.external_id].reason
    assert by_id[stray.external_id].stage == "validation"
    assert by_id[stray.external_id].payload["unit_code"] == "99999"
    assert by_id[None].reason == "missing dossier id (MaHoSo)"
    assert (by_id[None].stage, by_id[None].payload) == ("mapping", {"MaTTHC": "1.0"})


class _RolledBack(Exception):
    pass


async def test_a_large_page_first_in_its_transaction_commits_and_rolls_back_with_it(
    ctx: AppContext,
) -> None:
    # Large pages go to PostgreSQL through COPY and a copy of the old versions, sent straight
    # on the driver: they must belong to the caller's transaction even as its first statement.
    instance = await make_instance(ctx)
    async with ctx.sessionmaker() as session:
        known = await unit_codes(session, level=COMMUNE_LEVEL)
    received = NOW - timedelta(days=3)
    opened = [
        make_dossier(received_at=received, due_at=received + timedelta(days=10), resolved_at=None)
        for _ in range(COPY_THRESHOLD)
    ]
    resolved = [
        d.model_copy(
            update={
                "status": DossierStatus.PROCESSED,
                "resolved_at": NOW - timedelta(hours=1),
                "source_updated_at": NOW - timedelta(hours=1),
            }
        )
        for d in opened
    ]

    async def store(records: list, *, commit: bool) -> None:
        async with ctx.sessionmaker() as session, session.begin():
            result = await ingest_batch(
                session,
                instance_id=instance,
                batch=Batch(records=records),
                known_units=known,
                tz=ctx.settings.tz,
                now=NOW,
            )
            await recompute(
                session, changes=result.changes, province_code="75", tz=ctx.settings.tz, now=NOW
            )
            if not commit:
                raise _RolledBack

    async def backlog_today() -> float | None:
        async with ctx.sessionmaker() as session:
            cell = await session.get(
                KpiValue,
                ("onestop.backlog", BIEN_HOA, "day", local_date(NOW, ctx.settings.tz)),
            )
        return cell.numerator if cell is not None else None

    with pytest.raises(_RolledBack):
        await store(opened, commit=False)
    assert await stored_dossiers(ctx) == []
    await store(opened, commit=True)
    assert len(await stored_dossiers(ctx)) == COPY_THRESHOLD
    assert await backlog_today() == COPY_THRESHOLD
    await store(resolved, commit=True)  # the differences are taken from the old versions
    assert all(r.resolved_at is not None for r in await stored_dossiers(ctx))
    assert await backlog_today() in (None, 0.0)
