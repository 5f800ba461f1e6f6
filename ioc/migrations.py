"""Runs the Alembic migrations from code (`ioc migrate`, tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from alembic import command

SOURCE_ROOT = Path(__file__).resolve().parent.parent

MIGRATION_LOCK = 7420001
"""PostgreSQL advisory lock key held while migrating and while a replica seeds the database at
start: replicas started together take turns (alembic/env.py takes it too, per transaction)."""


def migrations_root() -> Path:
    """Where `alembic.ini` and `alembic/` are: the working directory, else the source tree."""
    for root in (Path.cwd(), SOURCE_ROOT):
        if (root / "alembic.ini").is_file() and (root / "alembic" / "env.py").is_file():
            return root
    raise FileNotFoundError(
        "alembic.ini and alembic/ not found; run from the project directory (or /app in Docker)"
    )


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url`, with the project's migration scripts."""
    root = migrations_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`; on PostgreSQL under a session advisory lock, so
    several replicas running `ioc migrate` at once upgrade one after the other."""
    config = alembic_config(database_url)
    if not database_url.startswith("postgresql"):
        command.upgrade(config, revision)
        return
    asyncio.run(_upgrade_locked(config, database_url, revision))


async def _upgrade_locked(config: Config, database_url: str, revision: str) -> None:
    from ioc.db import create_engine  # the engine module imports the models' base: keep it late

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            await connection.commit()
            try:

                def run(sync_connection: Connection) -> None:
                    config.attributes["connection"] = sync_connection
                    command.upgrade(config, revision)

                await connection.run_sync(run)
                await connection.commit()
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK}
                )
                await connection.commit()
    finally:
        await engine.dispose()


def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the database to `revision`."""
    command.downgrade(alembic_config(database_url), revision)
