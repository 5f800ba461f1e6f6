"""The PostgreSQL rebuild: its SQL helpers (the 766 score, local dates) and how it stores."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import Date, bindparam, select, text

from ioc.context import AppContext
from ioc.db import asyncpg_dsn
from ioc.ingest.service import ingest_batch
from ioc.kit.clock import local_date
from ioc.kit.types import UTCDateTime
from ioc.kpi import scan, service_index
from ioc.kpi.catalog import CATALOG
from ioc.kpi.models import KpiValue
from ioc.kpi.scan import _Clock, date_column
from ioc.kpi.service import rebuild
from ioc.records.stores import STORES
from ioc.sdk import Batch
from ioc.units.service import unit_codes
from tests.kpi.strategies import TZ
from tests.kpi.support import NOW
from tests.support.factories import BIEN_HOA, count_cell, make_dossier, make_instance

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
DOSSIER_KPIS = [k for k in CATALOG if k.record_type == "dossier"]


@ON_POSTGRES
async def test_the_service_index_in_sql_equals_the_python_score(ctx: AppContext) -> None:
    names = service_index.COMPONENTS
    rng = random.Random(11)
    cases = [{name: None for name in names}, {name: 100.0 for name in names}]
    for _ in range(150):
        cases.append(
            {
                name: rng.choice([None, 0.0, 50.0, 12.5, 62.5, round(rng.uniform(0, 100), 4)])
                for name in names
            }
        )
    rows = ", ".join(
        "(" + ", ".join(f"{v!r}::float8" if v is not None else "NULL::float8" for v in case) + ")"
        for case in (tuple(c[name] for name in names) for c in cases)
    )
    columns = [f"r{i}" for i in range(len(names))]
    score = service_index.score_sql(dict(zip(names, columns, strict=True)))
    query = text(f"SELECT {score} FROM (VALUES {rows}) AS t({', '.join(columns)})")
    async with ctx.sessionmaker() as session:
        scores = (await session.execute(query)).scalars().all()
    assert [service_index.score(case) for case in cases] == scores
    assert scores[0] is None and scores[1] == 100.0


@ON_POSTGRES
async def test_local_dates_by_arithmetic_match_the_zone(ctx: AppContext) -> None:
    clock = _Clock.around(TZ, date(2026, 11, 25))
    midnight = datetime(2026, 3, 1, 17, tzinfo=UTC)  # local midnight of 2 March
    moments = [
        midnight,
        midnight + timedelta(microseconds=1),
        midnight - timedelta(microseconds=1),
        datetime(1960, 1, 1, 16, 30, tzinfo=UTC),  # before the zone's offset was +07
        *(
            midnight + timedelta(seconds=random.Random(3).randint(-(10**8), 10**8))
            for _ in range(50)
        ),
    ]
    async with ctx.sessionmaker() as session:
        for moment in moments:
            value = bindparam(None, moment, type_=UTCDateTime())
            at, before = (
                await session.execute(
                    select(clock.day_of(value, before=False), clock.day_of(value, before=True))
                )
            ).one()
            assert at == local_date(moment, TZ)
            assert before == local_date(moment - timedelta(microseconds=1), TZ)


def test_stored_local_dates_are_the_local_dates_of_their_moments() -> None:
    # The rebuild reads `X_date` as the local date of `X_at` (`scan.date_column`).
    paired = {
        (store, column.name)
        for store in STORES.values()
        for column in store.model.__table__.columns
        if date_column(store.model, column.name) is not None
    }
    assert ("dossier", "resolved_at") in {(s.record_class.record_type, n) for s, n in paired}
    for store, name in paired:
        assert isinstance(date_column(store.model, name).type, Date), (store, name)
    midnight = datetime(2026, 3, 1, 17, tzinfo=UTC)  # local midnight of 2 March
    dossier = make_dossier(
        received_at=midnight - timedelta(microseconds=1),
        due_at=midnight,
        resolved_at=midnight + timedelta(hours=30),
    )
    row = STORES["dossier"].to_row(dossier, instance_id=1, tz=TZ, now=midnight)
    for name in ("received_at", "due_at", "resolved_at"):
        stored = date_column(STORES["dossier"].model, name)
        assert row[stored.key] == local_date(row[name], TZ)


def _cell(kpi: str, unit: str, day: date, numerator: float) -> KpiValue:
    return count_cell(kpi, unit, day, numerator, at=NOW)


async def _table_state(ctx: AppContext) -> tuple[list, list]:
    """kpi_values' key constraint and storage options, as PostgreSQL holds them."""
    async with ctx.sessionmaker() as session:
        key = (
            await session.execute(
                text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = 'kpi_values'::regclass ORDER BY conname"
                )
            )
        ).all()
        options = (
            await session.execute(
                text("SELECT reloptions FROM pg_class WHERE oid = 'kpi_values'::regclass")
            )
        ).all()
    return key, options


@ON_POSTGRES
async def test_a_rebuild_replaces_its_kpis_cells_and_keeps_the_others_the_key_and_storage(
    ctx: AppContext,
) -> None:
    instance = await make_instance(ctx)
    received = datetime(2026, 11, 16, 2, 0, tzinfo=UTC)
    async with ctx.sessionmaker() as session, session.begin():
        await ingest_batch(
            session,
            instance_id=instance,
            batch=Batch(
                records=[
                    make_dossier(
                        received_at=received, due_at=received + timedelta(days=30), resolved_at=None
                    )
                ]
            ),
            known_units=await unit_codes(session),
            tz=TZ,
            now=NOW,
        )
        stale = _cell("onestop.backlog", BIEN_HOA, date(2020, 1, 1), 7.0)
        other = _cell("feedback.received", BIEN_HOA, date(2026, 11, 16), 3.0)
        session.add_all([stale, other])
    before = await _table_state(ctx)
    # A connection that has read the table with a prepared statement, as the API's reads do.
    reader = await asyncpg.connect(asyncpg_dsn(ctx.settings.database_url))
    read = "SELECT numerator FROM kpi_values WHERE kpi = $1 AND unit_code = $2"
    try:
        assert await reader.fetchval(read, "feedback.received", BIEN_HOA) == 3.0
        async with ctx.sessionmaker() as session, session.begin():
            stored = await rebuild(session, province_code="75", tz=TZ, now=NOW, kpis=DOSSIER_KPIS)
        async with ctx.sessionmaker() as session:
            cells = {
                (c.kpi, c.unit_code, c.period_kind, c.period_start): c.numerator
                for c in (await session.execute(select(KpiValue))).scalars()
            }
        assert stored == len(cells)
        assert ("onestop.backlog", BIEN_HOA, "day", date(2020, 1, 1)) not in cells
        assert cells[("feedback.received", BIEN_HOA, "day", date(2026, 11, 16))] == 3.0
        assert cells[("onestop.backlog", BIEN_HOA, "day", local_date(NOW, TZ))] == 1.0
        assert cells[("onestop.backlog", "75", "day", local_date(NOW, TZ))] == 1.0
        assert await _table_state(ctx) == before
        assert before[1] == [(["fillfactor=80"],)]
        # the key is enforced again, and the reader's prepared statement still answers
        async with ctx.sessionmaker() as session:
            with pytest.raises(Exception, match="pk_kpi_values"):
                async with session.begin():
                    session.add(_cell("feedback.received", BIEN_HOA, date(2026, 11, 16), 1.0))
        assert await reader.fetchval(read, "feedback.received", BIEN_HOA) == 3.0
    finally:
        await reader.close()


@ON_POSTGRES
async def test_while_a_rebuild_reads_the_records_cells_can_be_read_but_not_written(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ctx.sessionmaker() as session, session.begin():
        session.add(_cell("feedback.received", BIEN_HOA, date(2026, 11, 16), 3.0))
    reading, release = asyncio.Event(), asyncio.Event()
    aggregate = scan.rebuild

    async def paused(*args: object, **kwargs: object) -> None:
        reading.set()
        await release.wait()
        await aggregate(*args, **kwargs)

    monkeypatch.setattr(scan, "rebuild", paused)

    async def rebuilding() -> None:
        async with ctx.sessionmaker() as session, session.begin():
            await rebuild(session, province_code="75", tz=TZ, now=NOW, kpis=DOSSIER_KPIS)

    task = asyncio.create_task(rebuilding())
    other = await asyncpg.connect(asyncpg_dsn(ctx.settings.database_url))
    try:
        await asyncio.wait_for(reading.wait(), 10)
        await other.execute("SET lock_timeout = '200ms'")
        read = "SELECT numerator FROM kpi_values WHERE kpi = 'feedback.received'"
        assert await other.fetchval(read) == 3.0
        with pytest.raises(asyncpg.LockNotAvailableError):
            await other.execute(
                "UPDATE kpi_values SET numerator = 4.0 WHERE kpi = 'feedback.received'"
            )
        release.set()
        await asyncio.wait_for(task, 30)
        assert await other.fetchval(read) == 3.0
    finally:
        release.set()
        await other.close()
