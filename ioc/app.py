"""The FastAPI application factories and their lifespan (engine, hub, scheduler).

`create_app` is the API (REST, WebSocket, wall display), with the scheduler unless
`IOC_SCHEDULER_ENABLED=false`; `create_worker_app` is the worker role (`ioc worker`): the
scheduler — polling, KPI recompute, incident rules — with only health and metrics routes, its
live updates reaching the API processes' clients through the PostgreSQL fan-out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from ioc.auth import api as auth_api
from ioc.auth.deps import require
from ioc.auth.limits import BodySizeLimit
from ioc.auth.permissions import Permission
from ioc.config import Settings
from ioc.context import AppContext, build_context
from ioc.db import asyncpg_dsn
from ioc.incidents import api as incidents_api
from ioc.incidents.ruleset import seed_default_rules
from ioc.ingest import api as connectors_api
from ioc.ingest.instances import read_seed_file, upsert_instance
from ioc.ingest.registry import ConnectorRegistry
from ioc.kit.clock import Clock, utcnow
from ioc.kpi import api as kpi_api
from ioc.kpi.current_front import CurrentValuesFront
from ioc.kpi.series_front import SeriesReadFront
from ioc.layouts import api as layouts_api
from ioc.layouts.service import ensure_default_layout
from ioc.live import api as live_api
from ioc.live.fanout import PgFanout
from ioc.migrations import MIGRATION_LOCK
from ioc.ops import api as ops_api
from ioc.ops.health import postgres_maintenance_warnings
from ioc.ops.loop_lag import watch_loop_lag
from ioc.ops.metrics import Metrics
from ioc.ops.middleware import RequestObservability
from ioc.records import api as records_api
from ioc.scheduler.service import start_scheduler
from ioc.system import api as system_api
from ioc.units import api as units_api
from ioc.units.service import province_code_str, sync_units

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
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings, clock=clock, registry=registry, metrics=metrics)
        if settings.open_access:
            log.warning(
                "OPEN ACCESS (%s): every request is let in without a token, with every role. "
                "Never expose this service to a network.",
                "demo" if settings.demo else "IOC_AUTH_DISABLED",
            )
        await _prepare_database(ctx)
        app.state.ctx = ctx
        await _start_live(ctx)
        ctx.scheduler = await start_scheduler(ctx) if settings.scheduler_enabled else None
        lag_watch = asyncio.create_task(watch_loop_lag(metrics.loop_lag))
        try:
            yield
        finally:
            lag_watch.cancel()
            if ctx.scheduler is not None and ctx.scheduler.running:
                ctx.scheduler.shutdown(wait=False)
            await _stop_live(ctx)
            if ctx.direct_reads is not None:
                await ctx.direct_reads.close()
            await ctx.engine.dispose()

    app = FastAPI(
        title="IOC backend",
        summary="Intelligent operations center for a Vietnamese province",
        version="0.1.0",
        lifespan=lifespan,
    )
    # Access: a router is gated where it is included (reads), mutations on their routes.
    # A new router needs one `dependencies=` here; tests/auth/test_routes.py fails without it.
    read = [require(Permission.READ)]
    app.include_router(units_api.router, dependencies=read)
    app.include_router(kpi_api.router, dependencies=read)
    app.include_router(records_api.router, dependencies=[require(Permission.RECORDS)])
    app.include_router(connectors_api.router, dependencies=read)
    app.include_router(incidents_api.router, dependencies=read)  # actions gated on their routes
    app.include_router(incidents_api.rules_router, dependencies=read)
    app.include_router(layouts_api.router, dependencies=read)  # edits gated on their routes
    app.include_router(auth_api.router, dependencies=[require(Permission.ADMIN)])
    app.include_router(live_api.router)  # /ws authenticates its handshake (accept_websocket)
    app.include_router(system_api.router)  # /healthz stays open; the rest gated on its routes
    app.include_router(ops_api.router)  # /readyz open for probes; /metrics needs a viewer token
    app.add_middleware(SeriesReadFront)  # the wall's hot read, before routing (see its module)
    app.add_middleware(CurrentValuesFront)  # the other one
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestObservability, metrics=metrics)
    app.state.metrics = metrics  # reachable before the lifespan builds the context

    @app.get("/", include_in_schema=False)
    async def wall_display() -> FileResponse:
        """The wall display."""
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


def create_worker_app(
    settings: Settings | None = None,
    *,
    clock: Clock = utcnow,
    registry: ConnectorRegistry | None = None,
) -> FastAPI:
    """The worker role: scheduler (polling, KPI recompute, incident rules) always on, no API but
    `/healthz`, `/readyz` and `/metrics`. Needs PostgreSQL: its live updates reach the API
    processes' WebSocket clients through LISTEN/NOTIFY."""
    settings = (settings or Settings()).model_copy(update={"scheduler_enabled": True})
    if not settings.is_postgres:
        raise WorkerNeedsPostgres(
            "the worker role needs PostgreSQL (IOC_DATABASE_URL=postgresql+asyncpg://…): on "
            "SQLite its live updates could not reach the API's clients; run `ioc serve` alone"
        )
    # The API's lifespan (context, seeds, hub and fan-out, scheduler) without its routes.
    api = create_app(settings, clock=clock, registry=registry)
    app = FastAPI(
        title="IOC worker",
        summary="Polling, KPI recompute and incident rules; health and metrics only",
        version="0.1.0",
        lifespan=api.router.lifespan_context,
    )
    app.state.metrics = api.state.metrics
    app.add_api_route("/healthz", system_api.healthz, tags=["system"])
    app.include_router(ops_api.router)  # /readyz open for probes; /metrics needs a viewer token
    return app


class WorkerNeedsPostgres(ValueError):
    """`ioc worker` was asked to run on SQLite."""


def create_app_from_environment() -> FastAPI:
    """The API as each of `ioc serve --workers N`'s processes builds it: settings from the
    environment, logging configured in the process itself."""
    from ioc.ops.collector import tune_for_service
    from ioc.ops.logs import configure_logging

    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    application = create_app(settings)
    tune_for_service(application.state.metrics.gc_pause)
    return application


async def _prepare_database(ctx: AppContext) -> None:
    """Load the province's units, seed connector instances from the TOML file, if any, and
    store the default incident rules not stored yet."""
    seeds = (
        read_seed_file(ctx.settings.connectors_file, ctx.registry)
        if ctx.settings.connectors_file is not None
        else []
    )
    async with ctx.sessionmaker() as session, session.begin():
        if ctx.settings.is_postgres:  # replicas started together seed one after the other
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
            for warning in await postgres_maintenance_warnings(session):
                log.warning(warning)
        await sync_units(session, ctx.settings.province)
        for seed in seeds:
            await upsert_instance(session, seed, now=ctx.clock(), registry=ctx.registry)
        await ensure_default_layout(
            session, province_code=province_code_str(ctx.settings.province), now=utcnow()
        )
        if ctx.settings.incident_default_rules:
            await seed_default_rules(session, now=ctx.clock())


async def _start_live(ctx: AppContext) -> None:
    """Heartbeats, layout refreshes and, on PostgreSQL, the fan-out between replicas."""
    assert ctx.hub is not None and ctx.layout_feed is not None
    ctx.hub.start(
        ping_seconds=ctx.settings.ws_ping_seconds, idle_seconds=ctx.settings.ws_idle_seconds
    )
    ctx.layout_feed.start()
    if ctx.settings.is_postgres:
        ctx.fanout = PgFanout(
            ctx.hub,
            asyncpg_dsn(ctx.settings.database_url),
            wait=ctx.metrics.notify_wait,
            handling=ctx.metrics.notify_handling,
        )
        # Another process's recompute (a worker, a replica) drops the cached reads it changed,
        # or patches them with the new headline values it published.
        ctx.fanout.on_remote.append(ctx.kpi_cache.invalidate_topic)
        ctx.fanout.on_remote_update.append(ctx.kpi_cache.update_topic)
        ctx.fanout.on_remote_changed.append(ctx.kpi_cache.forget_series_of_topic)
        ctx.fanout.on_reconnect.append(ctx.kpi_cache.clear)
        await ctx.fanout.start()


async def _stop_live(ctx: AppContext) -> None:
    if ctx.fanout is not None:
        await ctx.fanout.stop()
    if ctx.layout_feed is not None:
        await ctx.layout_feed.stop()
    if ctx.hub is not None:
        await ctx.hub.stop()
