"""Fresh, migrated test databases on SQLite and on the machine's real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

POSTGRES_ADMIN_DSN = os.environ.get(
    "IOC_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("IOC_REQUIRE_POSTGRES") == "1"
BACKENDS = ("sqlite", "postgresql")


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""

    async def probe() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_DSN} is unreachable: {exc}"
    return None


def require_backend(backend: str) -> None:
    """Skip (or, with IOC_REQUIRE_POSTGRES=1, fail) when PostgreSQL is not reachable."""
    if backend != "postgresql":
        return
    reason = postgres_unavailable()
    if reason is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(reason + " (IOC_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(reason)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def empty_database(backend: str, directory: Path) -> Iterator[str]:
    """An empty database of `backend`, dropped afterwards; yields its SQLAlchemy URL."""
    if backend == "sqlite":
        path = directory / f"ioc-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"ioc_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
