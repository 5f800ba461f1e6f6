"""The built-in education connector (JSON API route) passes the contract kit against its
simulator; its CSV route is covered by its own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.education.connector import EducationConnector
from connectors.education.simulator import create_app
from ioc.testing import ConnectorContract
from tests.support.servers import serve_app

START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on a Wednesday, local time
API_KEY = "education-contract-key"


@pytest.fixture
async def education_url() -> AsyncIterator[str]:
    """The education department's API with a frozen clock and two days of history."""
    app = create_app(seed=5, speed=0, start=START, history_days=2, api_key=API_KEY)
    async with serve_app(app) as url:
        yield url


class TestEducationContract(ConnectorContract):
    """Enrolment and daily attendance from the JSON API, by update time."""

    connector_class = EducationConnector

    @pytest.fixture
    def config(self, education_url: str) -> dict[str, Any]:
        return {"source": "api", "base_url": education_url, "page_size": 200, "api_key": API_KEY}

    @pytest.fixture
    def auth_failing_config(self, education_url: str) -> dict[str, Any]:
        return {"source": "api", "base_url": education_url, "api_key": "wrong"}
