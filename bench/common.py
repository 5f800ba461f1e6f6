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
from typing import Any

import asyncpg

ADMIN_DSN = os.environ.get("IOC_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results"


@contextmanager
def fresh_postgres(template: str | None = None) -> Iterator[tuple[str, str]]:
    """A new empty database for one run (or a copy of the database `template`); yields
    (SQLAlchemy URL, asyncpg DSN), then drops it."""
    name = f"ioc_bench_{uuid.uuid4().hex[:10]}"
    copied = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(_admin(f'CREATE DATABASE "{name}"{copied}'))
    base = ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}", f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def save_copy(url: str, template: str) -> None:
    """Keep a copy of the database behind `url` as `template` (replacing one of that name),
    for later runs to start from with `fresh_postgres(template)`; nothing may be connected."""
    source = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    asyncio.run(_admin(f'CREATE DATABASE "{template}" TEMPLATE "{source}"'))


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


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Print and save the figures as bench/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return path
