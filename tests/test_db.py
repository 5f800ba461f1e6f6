"""PostgreSQL connections, the engine's and the hot reads' own: no pre-ping, yet no request meets a
connection the server closed; duplicate keys become the caller's error."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.db import DirectReads, asyncpg_dsn, create_engine, unique_or
from ioc.layouts.models import WallLayout

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def test_the_asyncpg_dsn_keeps_host_user_database_and_options() -> None:
    dsn = asyncpg_dsn("postgresql+asyncpg://ioc:secret@db.example:6432/ioc?ssl=require")
    assert dsn == "postgresql://ioc:secret@db.example:6432/ioc?ssl=require"


@ON_POSTGRES
async def test_a_read_that_meets_a_terminated_connection_is_retried_on_a_new_one(
    database_url: str,
) -> None:
    reads = DirectReads(database_url, max_size=1)
    try:
        [first] = await reads.fetch("SELECT pg_backend_pid() AS pid")
        killer = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", first["pid"])
        finally:
            await killer.close()
        [second] = await reads.fetch("SELECT pg_backend_pid() AS pid, $1::int AS n", 7)
    finally:
        await reads.close()
    assert second["n"] == 7
    assert second["pid"] != first["pid"]


@ON_POSTGRES
async def test_one_connection_serves_read_after_read(
    database_url: str,
) -> None:
    reads = DirectReads(database_url, max_size=1)
    try:
        [first] = await reads.fetch("SELECT pg_backend_pid() AS pid")
        [second] = await reads.fetch("SELECT pg_backend_pid() AS pid")
    finally:
        await reads.close()
    assert second["pid"] == first["pid"]  # one connection, reused: no reconnect per read


class Taken(Exception):
    """The caller's own error for a key in use."""


async def test_a_duplicate_key_becomes_the_callers_error_and_other_violations_stay(
    ctx: AppContext,
) -> None:
    row = {"id": "hall", "name_vi": "Sảnh", "name_en": "Hall", "unit_code": "75", "columns": 4}
    now = datetime(2026, 11, 20, tzinfo=UTC)
    row |= {"rows": 3, "tiles": [], "is_default": False, "created_at": now, "updated_at": now}
    async with ctx.sessionmaker() as session:
        await session.execute(insert(WallLayout), [row])
        with pytest.raises(Taken), unique_or(Taken()):
            async with session.begin_nested():
                await session.execute(insert(WallLayout), [row])
        with pytest.raises(IntegrityError), unique_or(Taken()):  # a missing name is no duplicate
            async with session.begin_nested():
                await session.execute(insert(WallLayout), [row | {"id": "lobby", "name_vi": None}])


@ON_POSTGRES
async def test_a_pooled_connection_whose_backend_was_terminated_is_replaced_at_checkout(
    database_url: str,
) -> None:
    """No pre-ping round trip, yet a request never gets a connection the server closed."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            first = await connection.scalar(text("SELECT pg_backend_pid()"))
        killer = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await killer.close()
        await asyncio.sleep(0.2)  # the pooled connection's loop reads the EOF
        async with engine.connect() as connection:
            second = await connection.scalar(text("SELECT pg_backend_pid()"))
            assert (await connection.scalar(text("SELECT 7"))) == 7
    finally:
        await engine.dispose()
    assert second != first


@ON_POSTGRES
async def test_a_live_pooled_connection_is_handed_out_without_a_ping(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    sent: list[str] = []
    try:
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            driver.add_query_logger(lambda record: sent.append(record.query))
        async with engine.connect() as connection:
            assert (await connection.scalar(text("SELECT 7"))) == 7
    finally:
        await engine.dispose()
    # the request's own transaction only (a pre-ping adds a BEGIN and a ROLLBACK of its own)
    assert sent == ["BEGIN;", "ROLLBACK;"]


@ON_POSTGRES
async def test_a_read_session_commits_each_statement_on_its_own(ctx: AppContext) -> None:
    """No BEGIN and COMMIT around a read-only request's statements: each is a transaction of
    its own (its own `now()`), where a request's ordinary session holds one for all."""

    async def two_nows(session: AsyncSession) -> tuple[datetime, datetime]:
        first = await session.scalar(text("SELECT now()"))
        await asyncio.sleep(0.01)
        return first, await session.scalar(text("SELECT now()"))

    async with ctx.read_sessionmaker() as session:
        first, second = await two_nows(session)
    async with ctx.sessionmaker() as session:
        begun, still = await two_nows(session)
    assert first < second
    assert begun == still
