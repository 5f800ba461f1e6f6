"""Fixtures of the incident tests: the service on a clock the test moves, and its client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from ioc.app import create_app
from ioc.context import AppContext
from tests.incidents.support import Clock


@pytest.fixture
async def clock() -> Clock:
    """A clock standing at NOW until the test moves it."""
    return Clock()


@pytest.fixture
async def app(ctx: AppContext, clock: Clock) -> AsyncIterator[FastAPI]:
    """The service, started, on the test's clock."""
    service_app = create_app(ctx.settings, clock=clock)
    async with service_app.router.lifespan_context(service_app):
        yield service_app
