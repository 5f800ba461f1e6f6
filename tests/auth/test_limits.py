"""Limits: request bodies, page sizes and each token's request rate."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ioc.auth.limits import RateLimiter, retry_after_header
from ioc.auth.permissions import Role
from ioc.config import Settings
from tests.auth.conftest import MakeToken, bearer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small limits: bodies up to 2 KiB; two requests at once, then one a minute."""
    return settings.model_copy(
        update={"max_body_bytes": 2048, "rate_limit_burst": 2, "rate_limit_per_minute": 1}
    )


@pytest.fixture
async def integrator(make_token: MakeToken) -> dict[str, str]:
    return bearer(await make_token(Role.INTEGRATOR))


async def test_a_body_over_the_limit_is_refused_with_413_before_the_app_reads_it(
    http: httpx.AsyncClient, integrator: dict[str, str]
) -> None:
    body = {"name": "big", "kind": "onestop", "config": {"base_url": "x" * 4000}}
    response = await http.post("/api/v1/connectors", json=body, headers=integrator)
    assert response.status_code == 413
    assert response.json()["detail"] == ("request body larger than 2048 bytes (IOC_MAX_BODY_BYTES)")


async def test_a_chunked_body_over_the_limit_is_refused_with_413(
    http: httpx.AsyncClient, integrator: dict[str, str]
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"ids": ['
        for _ in range(400):
            yield b"1234567, "
        yield b"1]}"

    response = await http.post(
        "/api/v1/rejected/reingest",
        content=chunks(),
        headers=integrator | {"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "larger than 2048 bytes" in response.json()["detail"]


async def test_a_page_larger_than_the_cap_is_refused_with_422(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    leader = bearer(await make_token(Role.LEADER))
    response = await http.get("/api/v1/records/dossier?limit=501", headers=leader)
    assert response.status_code == 422
    assert "500" in response.text


async def test_a_token_past_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    busy, calm = bearer(await make_token(Role.VIEWER)), bearer(await make_token(Role.VIEWER))
    statuses = [(await http.get("/healthz", headers=busy)).status_code]  # ungated: not counted
    statuses += [(await http.get("/api/v1/units", headers=busy)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200, 429]
    refused = await http.get("/api/v1/units", headers=busy)
    assert refused.status_code == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60  # one request a minute
    assert "rate limit exceeded" in refused.json()["detail"]
    assert (await http.get("/api/v1/units", headers=calm)).status_code == 200


async def test_a_series_read_answered_before_routing_spends_the_budget_once(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    viewer = bearer(await make_token(Role.VIEWER))
    url = "/api/v1/kpis/onestop.on_time_rate/series?period=day"
    statuses = [(await http.get(url, headers=viewer)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert "rate limit exceeded" in (await http.get(url, headers=viewer)).json()["detail"]


def test_the_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.take("t"), limiter.take("t")] == [None, None]
    assert limiter.take("t") == pytest.approx(1.0)
    now[0] = 0.5
    assert limiter.take("t") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.take("t") is None
    now[0] = 100.0  # a long pause refills to the burst, not beyond
    assert [limiter.take("t") is None for _ in range(3)] == [True, True, False]


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]
