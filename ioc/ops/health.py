"""Readiness: the database answers, its schema is at the migrations' head, the scheduler runs;
and what the database server's settings leave undone that the IOC relies on (logged at start)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.migrations import alembic_config

DATABASE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Check:
    """One readiness check: whether it passed and what was found."""

    ok: bool
    detail: str


@cache
def migration_heads() -> frozenset[str]:
    """The head revisions of the migration scripts this code ships with."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


async def check_database(ctx: AppContext) -> tuple[Check, Check]:
    """Whether the database answers, and whether its schema revision is the scripts' head."""
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS), ctx.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            try:
                current = set(
                    (await connection.execute(text("SELECT version_num FROM alembic_version")))
                    .scalars()
                    .all()
                )
            except Exception:  # no alembic_version table: never migrated
                current = set()
    except TimeoutError:
        unreachable = Check(False, f"no answer within {DATABASE_TIMEOUT_SECONDS:g}s")
        return unreachable, Check(False, "unknown: the database is unreachable")
    except Exception as exc:  # any driver error means "not reachable" to a load balancer
        unreachable = Check(False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        return unreachable, Check(False, "unknown: the database is unreachable")
    heads = migration_heads()
    if current == heads:
        return Check(True, "reachable"), Check(True, f"at {', '.join(sorted(heads))}")
    found = ", ".join(sorted(current)) or "none (not migrated)"
    return Check(True, "reachable"), Check(
        False, f"schema at {found}, code expects {', '.join(sorted(heads))}: run `ioc migrate`"
    )


def check_scheduler(ctx: AppContext) -> Check:
    """Whether the scheduler runs (or is disabled on purpose)."""
    if not ctx.settings.scheduler_enabled:
        return Check(True, "disabled (IOC_SCHEDULER_ENABLED=false)")
    if ctx.scheduler is not None and ctx.scheduler.running:
        return Check(True, "running")
    return Check(False, "enabled but not running")


async def readiness(ctx: AppContext) -> dict[str, Check]:
    """Every readiness check by name."""
    database, migrations = await check_database(ctx)
    return {"database": database, "migrations": migrations, "scheduler": check_scheduler(ctx)}


MAINTENANCE_SETTINGS = ("autovacuum", "track_counts")
"""PostgreSQL settings (both on by default) without which no table is vacuumed or analysed."""


def maintenance_warnings(settings: Mapping[str, str]) -> list[str]:
    """What PostgreSQL's `settings` (name → value) leave undone: with autovacuum or the
    statistics it reads switched off, the planner's statistics go stale as the records grow
    and the dead versions of updated records pile up (bench/README.md, the soak of 7 December)."""
    off = [name for name in MAINTENANCE_SETTINGS if settings.get(name) == "off"]
    if not off:
        return []
    return [
        f"PostgreSQL runs with {' and '.join(f'{name} = off' for name in off)}: no table is "
        "vacuumed or analysed, so plans go stale and updated records' dead versions pile up as "
        "the data grows; turn it on (PostgreSQL's default) or run VACUUM ANALYZE on a schedule"
    ]


async def postgres_maintenance_warnings(session: AsyncSession) -> list[str]:
    """`maintenance_warnings` of the connected PostgreSQL server."""
    rows = await session.execute(
        text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
        {"names": list(MAINTENANCE_SETTINGS)},
    )
    return maintenance_warnings({name: setting for name, setting in rows})
