"""Fixtures for access tests: the app with tokens enforced, and tokens of any roles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from ioc.app import create_app
from ioc.auth.permissions import Role
from ioc.auth.schemas import TokenCreate
from ioc.auth.service import create_token
from ioc.config import Settings
from ioc.context import AppContext

MakeToken = Callable[..., Awaitable[str]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with access control enforced, as in production."""
    return settings.model_copy(update={"auth_disabled": False})


@pytest.fixture
def make_token(ctx: AppContext) -> MakeToken:
    """Stores a token with the given roles (and expiry); returns its secret value."""

    async def _make(*roles: Role | str, name: str = "test", expires_at: datetime | None = None):
        data = TokenCreate(name=name, roles=list(roles), expires_at=expires_at)
        async with ctx.sessionmaker() as session, session.begin():
            created = await create_token(session, data, created_by="test", now=datetime.now(UTC))
        return created.secret

    return _make


@pytest.fixture
async def app(ctx: AppContext) -> AsyncIterator[FastAPI]:
    """The service, started, with access control enforced."""
    service = create_app(ctx.settings, registry=ctx.registry)
    async with service.router.lifespan_context(service):
        yield service


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the service, without credentials."""
    transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    """The header carrying a token."""
    return {"Authorization": f"Bearer {token}"}
