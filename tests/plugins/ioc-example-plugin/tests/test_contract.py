"""The parindex connector passes the IOC connector contract, like any built-in connector."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import DOCUMENT, TOKEN
from ioc_example_plugin import ParIndexConnector

from ioc.testing import ConnectorContract


class TestParIndexContract(ConnectorContract):
    """The contract kit against the local portal."""

    connector_class = ParIndexConnector

    @pytest.fixture
    def config(self, portal_url: str) -> dict[str, Any]:
        return {"base_url": portal_url, "api_key": TOKEN, "page_size": 5}

    @pytest.fixture
    def auth_failing_config(self, portal_url: str) -> dict[str, Any]:
        return {"base_url": portal_url, "api_key": "wrong"}

    @pytest.fixture
    def sample_payloads(self) -> list[dict[str, Any]]:
        return json.loads(DOCUMENT.read_text(encoding="utf-8"))["indices"][:2]


def test_an_entry_maps_to_a_yearly_observation_of_the_province() -> None:
    connector = ParIndexConnector(ParIndexConnector.Config(base_url="http://portal.invalid"))
    entry = json.loads(DOCUMENT.read_text(encoding="utf-8"))["indices"][8]

    record = connector.parse(entry)

    assert (record.external_id, record.metric, record.unit_code) == (
        "PAR_INDEX-2024",
        "par_index",
        "75",
    )
    assert (record.period_kind.value, record.period_start.isoformat(), record.value) == (
        "year",
        "2024-01-01",
        88.3,
    )
    assert record.source_updated_at.isoformat() == "2025-05-06T02:00:00+00:00"
