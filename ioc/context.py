"""The objects the app's lifespan owns, handed to routes, jobs and the live hub."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ioc.config import Settings
from ioc.db import create_engine, create_sessionmaker
from ioc.ingest.registry import ConnectorRegistry
from ioc.kit.clock import Clock, utcnow
from ioc.kpi import service_index
from ioc.kpi.reads import SeriesCache
from ioc.live.hub import Hub


@dataclass
class AppContext:
    """Engine, sessions, connector registry, live hub and clock of one running service."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ConnectorRegistry
    hub: Hub | None = None
    scheduler: AsyncIOScheduler | None = None
    clock: Clock = utcnow
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises write transactions on SQLite, which allows one writer at a time."""
    kpi_cache: SeriesCache = field(default_factory=SeriesCache)
    """Serialized KPI series, dropped as their cells change (see `ioc.kpi.publish`)."""


def build_context(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    registry: ConnectorRegistry | None = None,
) -> AppContext:
    """Engine, sessions, registry and a live hub wired together; dispose `ctx.engine` after."""
    from ioc.live.topics import snapshot_provider  # topics read the context: import late

    service_index.use_weights(settings.service_index)  # a deployment constant, set at start
    engine = create_engine(settings.database_url)
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        registry=registry or ConnectorRegistry(),
        clock=clock,
    )
    ctx.hub = Hub(snapshot_provider(ctx))
    return ctx
