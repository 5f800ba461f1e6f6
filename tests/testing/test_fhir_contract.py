"""The built-in fhir connector passes the contract kit against its simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.fhir.connector import FhirConnector
from connectors.fhir.simulator import create_app
from ioc.testing import ConnectorContract
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on a Wednesday, local time
API_KEY = "fhir-contract-key"


@pytest.fixture
async def fhir_url() -> AsyncIterator[str]:
    """A FHIR server with a frozen clock, one day of history and a fiftieth of the traffic."""
    app = create_app(seed=5, speed=0, start=START, history_days=1, scale=0.02, api_key=API_KEY)
    async with serve_app(app) as url:
        yield url


class TestFhirContract(ConnectorContract):
    """Encounters incrementally, then a bed census snapshot at the end of each sequence."""

    connector_class = FhirConnector
    # The census is re-read after every sequence of pages: with a frozen clock, a walk from the
    # final cursor brings the same snapshot again, stamped at the latest time already delivered.
    redelivers_at_watermark = True

    @pytest.fixture
    def config(self, fhir_url: str) -> dict[str, Any]:
        return {"base_url": fhir_url, "page_size": 100, "api_key": API_KEY}

    @pytest.fixture
    def auth_failing_config(self, fhir_url: str) -> dict[str, Any]:
        return {"base_url": fhir_url, "api_key": "wrong"}
