"""The built-in onestop connector passes the integrators' contract kit against its simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.onestop.connector import OnestopConnector
from connectors.onestop.simulator import create_app
from ioc.testing import ConnectorContract
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on a Wednesday, local time
API_KEY = "onestop-contract-key"


@pytest.fixture
async def onestop_url() -> AsyncIterator[str]:
    """A simulator with a frozen clock (speed 0), a few days of history and an API key."""
    app = create_app(
        seed=11, rate_per_day=40, history_days=4, start=START, speed=0, api_key=API_KEY
    )
    async with serve_app(app) as url:
        yield url


class TestOnestopContract(ConnectorContract):
    """The onestop connector against its simulator."""

    connector_class = OnestopConnector

    @pytest.fixture
    def config(self, onestop_url: str) -> dict[str, Any]:
        return {"base_url": onestop_url, "page_size": 40, "api_key": API_KEY}

    @pytest.fixture
    def auth_failing_config(self, onestop_url: str) -> dict[str, Any]:
        return {"base_url": onestop_url, "api_key": "not-the-key"}
