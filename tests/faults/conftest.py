"""Fixtures of the fault tests: a fresh PostgreSQL database and helpers to count what is stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from ioc.migrations import upgrade
from tests.support.databases import empty_database, require_backend
from tests.support.upstream import Upstream, running_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A small one-stop-shop simulator with a frozen clock, on a real port."""
    async for served in running_upstream():
        yield served


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own (faults must not touch others' data)."""
    require_backend("postgresql")
    with empty_database("postgresql", tmp_path) as url:
        upgrade(url)
        yield url


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 30.0) -> None:
    """Wait until `check()` holds, polling every 0.1 s; fail after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def seed_file(directory: Path, *entries: tuple[str, str]) -> Path:
    """A connectors TOML file with one onestop instance per (name, base_url), polled every
    second, 50 dossiers a page."""
    path = directory / "connectors.toml"
    path.write_text(
        "".join(
            f'[[connector]]\nname = "{name}"\nkind = "onestop"\ninterval_seconds = 1\n'
            f"max_backoff_seconds = 2\n"
            f'[connector.config]\nbase_url = "{url}"\npage_size = 50\n'
            for name, url in entries
        )
    )
    return path
