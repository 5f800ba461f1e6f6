"""Readiness checks: an unreachable database and a schema behind the code are named."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ioc.config import Settings
from ioc.context import build_context
from ioc.migrations import upgrade
from ioc.ops.health import check_database, migration_heads


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
