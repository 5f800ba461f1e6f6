"""The KPI routes' service, its clock stopped at `NOW` (the root conftest's `http` calls it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from ioc.app import create_app
from ioc.context import AppContext
from tests.kpi.support import NOW


@pytest.fixture
async def app(ctx: AppContext) -> AsyncIterator[FastAPI]:
    """The service with its clock stopped at `NOW`."""
    service = create_app(ctx.settings, clock=lambda: NOW)
    async with service.router.lifespan_context(service):
        yield service
