"""Readiness checks: an unreachable database and a schema behind the code are named."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import text

from ioc.app import create_app
from ioc.config import Settings
from ioc.context import AppContext, build_context
from ioc.migrations import upgrade
from ioc.ops.health import check_database, maintenance_warnings, migration_heads


async def test_a_schema_behind_the_code_fails_the_migrations_check(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(upgrade, url, "0002")
    ctx = build_context(Settings(database_url=url))
    try:
        database, migrations = await check_database(ctx)
    finally:
        await ctx.engine.dispose()
    assert database.ok and not migrations.ok
    assert "schema at 0002, code expects " + min(migration_heads()) in migrations.detail
    assert "run `ioc migrate`" in migrations.detail


async def test_an_empty_database_is_reported_as_not_migrated(tmp_path: Path) -> None:
    ctx = build_context(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"))
    try:
        _, migrations = await check_database(ctx)
    finally:
        await ctx.engine.dispose()
    assert not migrations.ok and "none (not migrated)" in migrations.detail


async def test_an_unreachable_database_fails_both_database_checks() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere"  # port 9: nothing listens
    ctx = build_context(Settings(database_url=url))
    try:
        database, migrations = await check_database(ctx)
    finally:
        await ctx.engine.dispose()
    assert not database.ok and not migrations.ok
    assert "unreachable" in migrations.detail and database.detail


def test_autovacuum_or_its_statistics_switched_off_is_named_and_the_defaults_are_quiet() -> None:
    assert maintenance_warnings({"autovacuum": "on", "track_counts": "on"}) == []
    (autovacuum,) = maintenance_warnings({"autovacuum": "off", "track_counts": "on"})
    assert "autovacuum = off" in autovacuum and "track_counts" not in autovacuum
    (both,) = maintenance_warnings({"autovacuum": "off", "track_counts": "off"})
    assert "autovacuum = off and track_counts = off" in both and "VACUUM ANALYZE" in both


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_service_warns_at_start_when_its_postgresql_vacuums_nothing(
    ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    async with ctx.sessionmaker() as session:
        settings = await session.execute(text("SELECT name, setting FROM pg_settings"))
        found = {name: value for name, value in settings}
    application = create_app(ctx.settings)
    with caplog.at_level(logging.WARNING, logger="ioc.app"):
        async with application.router.lifespan_context(application):
            pass
    warned = [r.getMessage() for r in caplog.records if "vacuumed or analysed" in r.getMessage()]
    switched_off = found["autovacuum"] == "off" or found["track_counts"] == "off"
    assert len(warned) == (1 if switched_off else 0), (found["autovacuum"], warned)
