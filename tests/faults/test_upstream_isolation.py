"""Upstreams that are down, slow, answer garbage or throttle: each fault stays with its own
connector while the scheduler keeps polling a healthy source to completion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ioc.app import create_app
from ioc.context import AppContext
from ioc.ingest.models import ConnectorInstance
from ioc.records.models import DossierRow
from ioc.testing import unused_local_url
from tests.faults.conftest import eventually
from tests.support.servers import serve_app
from tests.support.upstream import Upstream, count


async def misbehave(request: Request) -> Response:
    """One fault per path prefix: slow, HTML instead of JSON, JSON of the wrong shape, 429."""
    fault = request.path_params["fault"]
    if fault == "slow":  # answers nothing until the client gives up
        for _ in range(600):
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(0.05)
    if fault == "html":
        return PlainTextResponse("<html><body>502 Bad Gateway</body></html>", status_code=200)
    if fault == "shape":
        return JSONResponse({"data": "not a list", "next": 42})
    if fault == "throttle":
        return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "1"})
    return PlainTextResponse("unknown fault", status_code=404)


@pytest.fixture
async def faulty_url() -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/{fault}/{rest:path}", misbehave)])
    async with serve_app(app) as url:
        yield url


async def test_faulty_upstreams_stay_isolated_while_a_healthy_one_is_polled_to_completion(
    ctx: AppContext, upstream: Upstream, faulty_url: str, tmp_path: Path
) -> None:
    sources = {
        "healthy": (upstream.url, 30),
        "down": (unused_local_url(), 30),
        "slow": (f"{faulty_url}/slow", 0.5),
        "html": (f"{faulty_url}/html", 30),
        "shape": (f"{faulty_url}/shape", 30),
        "throttled": (f"{faulty_url}/throttle", 30),
    }
    seed = tmp_path / "connectors.toml"
    seed.write_text(
        "".join(
            f'[[connector]]\nname = "{name}"\nkind = "onestop"\ninterval_seconds = 1\n'
            f"timeout_seconds = {timeout}\nmax_backoff_seconds = 1\n"
            f'[connector.config]\nbase_url = "{url}"\npage_size = 100\n'
            for name, (url, timeout) in sources.items()
        )
    )
    settings = ctx.settings.model_copy(update={"scheduler_enabled": True, "connectors_file": seed})
    async with serve_app(create_app(settings)):
        await eventually(lambda: _stored_is(ctx, upstream.visible()))
        async with httpx.AsyncClient() as http:  # a day of new dossiers at the healthy source
            await http.post(f"{upstream.url}/_sim/advance", json={"seconds": 86400})
        await eventually(lambda: _stored_is(ctx, upstream.visible()))
        await eventually(lambda: _all_tried(ctx, set(sources) - {"healthy"}))
    async with ctx.sessionmaker() as session:
        instances = {i.name: i for i in (await session.scalars(select(ConnectorInstance))).all()}
        rows = await session.scalar(select(func.count(func.distinct(DossierRow.external_id))))
    assert rows == await count(ctx, DossierRow) == upstream.visible()
    assert {name: i.health for name, i in instances.items()} == {
        "healthy": "ok",
        "down": "failing",
        "slow": "failing",
        "html": "failing",
        "shape": "failing",
        "throttled": "degraded",
    }
    assert "no answer within 0.5s" in (instances["slow"].last_error or "")
    assert "invalid JSON" in (instances["html"].last_error or "")
    assert "429" in (instances["throttled"].last_error or "")
    assert all(i.cursor == {} for name, i in instances.items() if name != "healthy")


async def _stored_is(ctx: AppContext, expected: int) -> bool:
    return await count(ctx, DossierRow) == expected


async def _all_tried(ctx: AppContext, names: set[str]) -> bool:
    async with ctx.sessionmaker() as session:
        failed = (
            await session.scalars(
                select(ConnectorInstance.name).where(ConnectorInstance.consecutive_failures > 0)
            )
        ).all()
    return names <= set(failed)
