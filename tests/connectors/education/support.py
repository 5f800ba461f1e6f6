"""Helpers of the education connector tests: a running simulator and poll loops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.education.connector import EducationConnector
from connectors.education.simulator import Simulator, create_app
from ioc.sdk import Batch
from ioc.testing import poll_to_exhaustion
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local


@dataclass
class Upstream:
    """A simulator on a local port, a client for its control routes, and connector factories."""

    simulator: Simulator
    url: str
    control: httpx.AsyncClient

    def api(self, **config: Any) -> EducationConnector:
        """A connector reading the JSON API."""
        return EducationConnector(
            EducationConnector.Config(source="api", base_url=self.url, **config)
        )

    def exports(self, **config: Any) -> EducationConnector:
        """A connector reading the CSV exports listed at /exports/."""
        return EducationConnector(
            EducationConnector.Config(source="csv", csv_url=f"{self.url}/exports", **config)
        )

    async def faults(self, **knobs: Any) -> None:
        """Turn the simulator's fault knobs."""
        (await self.control.post("/_sim/faults", json=knobs)).raise_for_status()

    async def advance(self, seconds: float) -> None:
        """Move the simulated clock forward."""
        (await self.control.post("/_sim/advance", json={"seconds": seconds})).raise_for_status()


@asynccontextmanager
async def upstream(**overrides: Any) -> AsyncIterator[Upstream]:
    """A simulator with a frozen clock on Wednesday 19 November 2025, from Friday 14th on."""
    options: dict[str, Any] = {"seed": 3, "history_days": 5, "start": START, "speed": 0}
    app = create_app(**(options | overrides))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as control:
        yield Upstream(app.state.simulator, url, control)


async def poll_to_the_end(connector: EducationConnector, cursor: dict[str, Any]) -> list[Batch]:
    """Every page from `cursor` until the upstream says there is no more (the kit's walk),
    closing the connector afterwards."""
    try:
        return (await poll_to_exhaustion(connector, cursor)).pages
    finally:
        await connector.aclose()
