"""The FastAPI application factory and its lifespan (engine, hub, scheduler)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ioc.config import Settings
from ioc.context import AppContext, build_context
from ioc.incidents import api as incidents_api
from ioc.incidents.service import seed_default_rules
from ioc.ingest import api as connectors_api
from ioc.ingest.instances import read_seed_file, upsert_instance
from ioc.ingest.registry import ConnectorRegistry
from ioc.kit.clock import Clock, utcnow
from ioc.kpi import api as kpi_api
from ioc.live import api as live_api
from ioc.records import api as records_api
from ioc.scheduler.service import start_scheduler
from ioc.system import api as system_api
from ioc.units import api as units_api
from ioc.units.service import sync_units

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock = utcnow,
    registry: ConnectorRegistry | None = None,
) -> FastAPI:
    """Build the service; the database must already be migrated (`ioc migrate`)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings, clock=clock, registry=registry)
        await _prepare_database(ctx)
        app.state.ctx = ctx
        ctx.scheduler = await start_scheduler(ctx) if settings.scheduler_enabled else None
        try:
            yield
        finally:
            if ctx.scheduler is not None:
                ctx.scheduler.shutdown(wait=False)
            await ctx.engine.dispose()

    app = FastAPI(
        title="IOC backend",
        summary="Intelligent operations center for a Vietnamese province",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(units_api.router)
    app.include_router(kpi_api.router)
    app.include_router(records_api.router)
    app.include_router(connectors_api.router)
    app.include_router(incidents_api.router)
    app.include_router(incidents_api.rules_router)
    app.include_router(live_api.router)
    app.include_router(system_api.router)

    @app.get("/", include_in_schema=False)
    async def wall_display() -> FileResponse:
        """The wall display."""
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


async def _prepare_database(ctx: AppContext) -> None:
    """Load the province's units, seed connector instances from the TOML file, if any, and
    store the default incident rules not stored yet."""
    seeds = (
        read_seed_file(ctx.settings.connectors_file, ctx.registry)
        if ctx.settings.connectors_file is not None
        else []
    )
    async with ctx.sessionmaker() as session, session.begin():
        await sync_units(session, ctx.settings.province)
        for seed in seeds:
            await upsert_instance(session, seed, now=ctx.clock())
        if ctx.settings.incident_default_rules:
            await seed_default_rules(session, now=ctx.clock())
