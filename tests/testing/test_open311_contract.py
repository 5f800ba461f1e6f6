"""The built-in open311 connector passes the contract kit against its simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.open311.connector import Open311Connector
from connectors.open311.simulator import create_app
from ioc.testing import ConnectorContract
from tests.support.servers import serve_app

API_KEY = "open311-contract-key"
JURISDICTION = "dongnai.gov.vn"


@pytest.fixture
async def open311_url() -> AsyncIterator[str]:
    """A GeoReport v2 server with a frozen clock started at the real time (the connector's
    windows are computed from the real clock)."""
    app = create_app(seed=5, speed=0, history_days=5, api_key=API_KEY)
    async with serve_app(app) as url:
        yield url


class TestOpen311Contract(ConnectorContract):
    """GeoReport v2, read in chunks of open and closed requests."""

    connector_class = Open311Connector
    # GeoReport v2 has no "updated since" filter: each cycle re-reads the open requests and
    # recent chunks, and a chunk may hold no request although more chunks follow.
    rereads_unchanged_versions = True
    empty_pages_while_more = True

    @pytest.fixture
    def config(self, open311_url: str) -> dict[str, Any]:
        return {"base_url": open311_url, "jurisdiction_id": JURISDICTION, "api_key": API_KEY}

    @pytest.fixture
    def auth_failing_config(self, open311_url: str) -> dict[str, Any]:
        return {"base_url": open311_url, "jurisdiction_id": JURISDICTION, "api_key": "wrong"}
