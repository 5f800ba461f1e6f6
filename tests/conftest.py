"""Fixtures: every database test runs on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete

from ioc.config import Settings
from ioc.context import AppContext, build_context
from ioc.migrations import upgrade
from ioc.models import (
    ApiToken,
    AuditEntry,
    ConnectorInstance,
    DossierRow,
    Incident,
    IncidentRule,
    KpiValue,
    PollRun,
    RejectedRecord,
    WallLayout,
)
from ioc.units.service import sync_units
from tests.support.databases import BACKENDS, empty_database, require_backend
from tests.support.settings import OPEN_ACCESS

PROVINCE = 75


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database per backend, shared by the session's tests (data reset per test)."""
    require_backend(request.param)
    directory: Path = tmp_path_factory.mktemp(request.param)
    with empty_database(request.param, directory) as url:
        upgrade(url)
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at the test database, with the scheduler off unless a test wants it.

    Access control is off here (development, IOC_AUTH_DISABLED) so that tests of other domains
    stay about their domain; tests/auth/ turns it on (its `secured` fixture) and checks every
    route's gate, so routes stay covered.
    """
    return Settings(
        database_url=database_url,
        province=PROVINCE,
        scheduler_enabled=False,
        **OPEN_ACCESS,
    )


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[AppContext]:
    """A service context on a clean database holding only the province's units."""
    context = build_context(settings)
    async with context.sessionmaker() as session, session.begin():
        # Incidents cascade to their events and records, rules to their pending states.
        for model in (
            Incident,
            IncidentRule,
            KpiValue,
            DossierRow,
            RejectedRecord,
            PollRun,
            ConnectorInstance,
            ApiToken,
            AuditEntry,
            WallLayout,
        ):
            await session.execute(delete(model))
        await sync_units(session, PROVINCE)
    try:
        yield context
    finally:
        await context.engine.dispose()


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling the test's `app` fixture in process (each folder starts its own app)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
        yield client
