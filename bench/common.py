"""Shared helpers of the benchmarks: a fresh PostgreSQL database, percentiles, JSON output."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from ioc.config import Settings

ADMIN_DSN = os.environ.get("IOC_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results"


@contextmanager
def fresh_postgres() -> Iterator[tuple[str, str]]:
    """A new empty database for one run; yields (SQLAlchemy URL, asyncpg DSN), then drops it."""
    name = f"ioc_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield database_urls(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def postgres_copy_of(template: str) -> Iterator[tuple[str, str]]:
    """A new database copied from `template` (`CREATE DATABASE … TEMPLATE`, a file copy: seconds
    where loading takes minutes); yields (SQLAlchemy URL, asyncpg DSN), then drops the copy."""
    name = f"{template}_copy_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield database_urls(name)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_urls(name: str) -> tuple[str, str]:
    """(SQLAlchemy URL, asyncpg DSN) of database `name` on the benchmark server."""
    base = ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}", f"{base}/{name}"


def create_database(name: str) -> tuple[str, str]:
    """Create database `name` (kept: the caller drops it); returns its (URL, DSN)."""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return database_urls(name)


async def database_exists(name: str) -> bool:
    """Whether database `name` exists on the benchmark server."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile (0–100) of `values`, by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def machine() -> dict[str, Any]:
    """Facts about where the figures were measured."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process of this machine so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Print and save the figures as bench/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return path


def live_bench_settings(database_url: str) -> Settings:
    """The IOC's settings for a WebSocket benchmark: no scheduler, no tokens (bench/auth.py
    measures what they cost) and no heartbeat inside the measured window (at the default 20 s,
    5,000 clients add 250 pings and 250 pongs a second)."""
    from ioc.config import Settings

    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        ws_ping_seconds=600,
        ws_idle_seconds=1200,
        environment="development",
        auth_disabled=True,
    )
