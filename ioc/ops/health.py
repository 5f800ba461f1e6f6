"""Readiness: the database answers, its schema is at the migrations' head, the scheduler runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache

from alembic.script import ScriptDirectory
from sqlalchemy import text

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
