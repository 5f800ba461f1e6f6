"""Open access (the demo): every request passes without a token, and the start says so."""

from __future__ import annotations

import logging

import httpx
import pytest

from ioc.config import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"environment": "demo", "auth_disabled": None})


async def test_the_demo_lets_every_request_in_and_warns_at_start(
    caplog: pytest.LogCaptureFixture, http: httpx.AsyncClient
) -> None:
    assert (await http.get("/api/v1/records/feedback")).status_code == 200
    assert (await http.get("/api/v1/audit")).status_code == 200
    assert (await http.get("/api/v1/system")).json()["demo"] is True
    warnings = [r for r in caplog.get_records("setup") if r.levelno == logging.WARNING]
    assert any("OPEN ACCESS (demo)" in r.getMessage() for r in warnings)
