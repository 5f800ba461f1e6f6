"""The request's database session: a write is committed before its response leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ioc.app import create_app
from ioc.context import AppContext
from ioc.incidents.models import IncidentRule


class SeenAtResponse:
    """Wraps the app; when the response starts, looks for the rule from another session."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app, self.ctx = app, ctx
        self.names: list[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start" and scope["type"] == "http":
                async with self.ctx.sessionmaker() as session:
                    self.names = list((await session.scalars(select(IncidentRule.name))).all())
            await send(message)

        await self.app(scope, receive, watching)


@pytest.fixture
async def watched(ctx: AppContext) -> AsyncIterator[tuple[SeenAtResponse, httpx.AsyncClient]]:
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        probe = SeenAtResponse(app, ctx)
        transport = httpx.ASGITransport(app=probe)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            yield probe, client


async def test_a_created_rule_is_stored_before_the_client_hears_201(
    watched: tuple[SeenAtResponse, httpx.AsyncClient],
) -> None:
    probe, client = watched
    body: dict[str, Any] = {"name": "late-dossiers", "kind": "dossier_overdue", "warn": 1}

    response = await client.post("/api/v1/incident-rules", json=body)

    assert response.status_code == 201, response.text
    assert probe.names is not None and "late-dossiers" in probe.names


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/records/dossier",
        "/api/v1/kpis/onestop.backlog/breakdown",
        "/api/v1/kpis/onestop.backlog/records",
        "/api/v1/connectors",
        "/api/v1/connectors/1",
    ],
)
async def test_the_busiest_reads_run_in_a_read_session(ctx: AppContext, path: str) -> None:
    """Statements committed one by one: no BEGIN and COMMIT round trips around them."""
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        service: AppContext = app.state.ctx
        opened = {"read": 0, "ordinary": 0}

        def counting(sessionmaker: Any, kind: str) -> Any:
            def open_session() -> Any:
                opened[kind] += 1
                return sessionmaker()

            return open_session

        service.read_sessionmaker = counting(service.read_sessionmaker, "read")
        service.sessionmaker = counting(service.sessionmaker, "ordinary")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as http:
            response = await http.get(path)
    assert response.status_code in (200, 404)
    assert opened == {"read": 1, "ordinary": 0}
