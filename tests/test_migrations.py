"""Migrations: an empty database upgrades to the models' schema and downgrades cleanly."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ioc.db import create_engine
from ioc.migrations import MIGRATION_LOCK, downgrade, upgrade
from ioc.models import Base
from tests.support.databases import BACKENDS, empty_database, require_backend


def schema_state(url: str) -> tuple[set[str], list]:
    """The tables present and the differences between the database and the ORM models."""

    async def read() -> tuple[set[str], list]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: (
                        set(inspect(sync).get_table_names()),
                        compare_metadata(MigrationContext.configure(sync), Base.metadata),
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrations_upgrade_an_empty_database_and_downgrade_cleanly(
    backend: str, tmp_path: Path
) -> None:
    require_backend(backend)
    with empty_database(backend, tmp_path) as url:
        upgrade(url)
        tables, differences = schema_state(url)
        assert {"admin_units", "connector_instances", "poll_runs", "rejected_records"} <= tables
        assert {"dossiers", "kpi_values", "alembic_version"} <= tables
        assert differences == [], "the migrations must build exactly what the models declare"
        downgrade(url)
        tables, _ = schema_state(url)
        assert tables <= {"alembic_version"}
        upgrade(url)  # and up again
        assert "dossiers" in schema_state(url)[0]


def test_replicas_upgrading_an_empty_postgres_database_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    require_backend("postgresql")
    with empty_database("postgresql", tmp_path) as url:
        with ThreadPoolExecutor(3) as pool:
            results = [f.exception() for f in [pool.submit(upgrade, url) for _ in range(3)]]
        assert results == [None, None, None]
        tables, differences = schema_state(url)
        assert "dossiers" in tables and differences == []


def test_an_upgrade_waits_while_another_replica_holds_the_migration_lock(
    tmp_path: Path,
) -> None:
    require_backend("postgresql")
    with empty_database("postgresql", tmp_path) as url:

        async def hold_lock_then_release(started: threading.Event) -> set[str]:
            connection = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
                started.set()
                await asyncio.sleep(1.0)  # the other replica is migrating
                tables = {
                    r["tablename"]
                    for r in await connection.fetch(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    )
                }
                await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
                return tables
            finally:
                await connection.close()

        started = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(asyncio.run, hold_lock_then_release(started))
            assert started.wait(10)
            upgrade(url)  # blocks until the holder releases the lock
            tables_while_held = holder.result()
        assert tables_while_held == set(), "the upgrade ran while another held the lock"
        assert "dossiers" in schema_state(url)[0]
