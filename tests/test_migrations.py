"""Migrations: an empty database upgrades to the models' schema and downgrades cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from ioc.db import create_engine
from ioc.migrations import downgrade, upgrade
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
