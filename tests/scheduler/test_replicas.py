"""Two app instances on one PostgreSQL database poll each source once, under an advisory lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.onestop.simulator import create_app as create_simulator
from ioc.app import create_app
from ioc.config import Settings
from ioc.context import build_context
from ioc.migrations import upgrade
from ioc.records.models import DossierRow
from ioc.scheduler.runner import poll_instance
from ioc.units.service import sync_units
from tests.support.databases import empty_database, require_backend
from tests.support.factories import make_instance
from tests.support.servers import serve_app
from tests.support.upstream import START


class InFlight:
    """ASGI middleware counting concurrent requests to the dossier list."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.now = self.peak = self.total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/v1/dossiers":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.total += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    require_backend("postgresql")
    with empty_database("postgresql", tmp_path) as url:
        upgrade(url)
        yield url


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, InFlight, Any]]:
    app = create_simulator(seed=9, rate_per_day=60, history_days=10, start=START, speed=0)
    counted = InFlight(app)
    async with serve_app(counted) as url:
        yield url, counted, app.state.simulator


async def test_concurrent_polls_of_one_source_from_two_replicas_run_one_at_a_time(
    postgres_url: str, upstream: tuple[str, InFlight, Any]
) -> None:
    url, _, simulator = upstream
    simulator.faults.slow_seconds = 0.3  # the first poll is still running when the second starts
    replicas = [build_context(Settings(database_url=postgres_url)) for _ in range(2)]
    try:
        async with replicas[0].sessionmaker() as session, session.begin():
            await sync_units(session, 75)
        instance_id = await make_instance(replicas[0], config={"base_url": url, "page_size": 100})
        outcomes = await asyncio.gather(
            *(poll_instance(ctx, instance_id, force=True) for ctx in replicas)
        )
        skipped = [o.skipped for o in outcomes]
        assert skipped.count("another replica is polling this source") == 1
        assert sum(o.ok for o in outcomes) == 1
        async with replicas[1].sessionmaker() as session:
            stored = await session.scalar(select(func.count()).select_from(DossierRow))
        assert stored == len(simulator.dossiers_as_of(simulator.now()))
    finally:
        for ctx in replicas:
            await ctx.engine.dispose()


async def test_two_app_instances_with_schedulers_store_each_dossier_once(
    postgres_url: str, upstream: tuple[str, InFlight, Any], tmp_path: Path
) -> None:
    url, counted, simulator = upstream
    seed = tmp_path / "connectors.toml"
    seed.write_text(
        '[[connector]]\nname = "shared"\nkind = "onestop"\ninterval_seconds = 1\n'
        f'[connector.config]\nbase_url = "{url}"\npage_size = 50\n'
    )
    settings = Settings(database_url=postgres_url, connectors_file=seed)
    # Both replicas' schedulers fire at once; the upstream is slow enough that they would overlap.
    simulator.faults.slow_seconds = 0.3
    expected = len(simulator.dossiers_as_of(simulator.now()))
    probe = build_context(settings)
    try:
        async with serve_app(create_app(settings)), serve_app(create_app(settings)):
            for _ in range(300):  # until everything is stored, then a few more polls
                async with probe.sessionmaker() as session:
                    stored = await session.scalar(select(func.count()).select_from(DossierRow))
                if stored == expected:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)
        async with probe.sessionmaker() as session:
            rows = (await session.execute(select(DossierRow.external_id))).scalars().all()
    finally:
        await probe.engine.dispose()
    assert len(rows) == len(set(rows)) == expected
    assert counted.peak == 1, "two replicas polled the same source at the same time"
    assert counted.total >= 2
