"""A one-stop-shop simulator on a real port, with helpers to steer its faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select

from connectors.onestop.simulator import Simulator
from connectors.onestop.simulator import create_app as create_simulator
from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance
from tests.support.factories import make_instance
from tests.support.servers import serve_app

START = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)
"""10:00 local time on Tuesday 10 November 2026."""


@dataclass
class Upstream:
    url: str
    simulator: Simulator

    async def set_faults(self, **faults: object) -> None:
        async with httpx.AsyncClient() as http:
            (await http.post(f"{self.url}/_sim/faults", json=faults)).raise_for_status()

    def visible(self) -> int:
        return len(self.simulator.dossiers_as_of(self.simulator.now()))


async def count(ctx: AppContext, model: type) -> int:
    """Rows of a table."""
    async with ctx.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def running_upstream() -> AsyncIterator[Upstream]:
    """A small, frozen-clock simulator served over HTTP."""
    app = create_simulator(seed=5, rate_per_day=40, history_days=10, start=START, speed=0)
    async with serve_app(app) as url:
        yield Upstream(url, app.state.simulator)


async def instance_for(ctx: AppContext, upstream: Upstream, **config: object) -> int:
    """An onestop instance reading `upstream`, 50 dossiers a page."""
    return await make_instance(ctx, config={"base_url": upstream.url, "page_size": 50, **config})


async def load(ctx: AppContext, instance_id: int) -> ConnectorInstance:
    """The instance as stored now."""
    async with ctx.sessionmaker() as session:
        instance = await session.get(ConnectorInstance, instance_id)
        assert instance is not None
        return instance
