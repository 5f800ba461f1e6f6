"""The objects the app's lifespan owns, handed to routes, jobs and the live hub."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ioc.auth.authenticator import Authenticator
from ioc.auth.secrets import SecretBox
from ioc.config import Settings
from ioc.db import DirectReads, create_engine, create_read_sessionmaker, create_sessionmaker
from ioc.ingest.registry import ConnectorRegistry
from ioc.kit.clock import Clock, utcnow
from ioc.kpi import service_index
from ioc.kpi.reads import SeriesCache
from ioc.live.hub import Hub
from ioc.ops.metrics import Metrics
from ioc.records.totals import TotalsCache

if TYPE_CHECKING:
    from ioc.layouts.live import LayoutFeed
    from ioc.live.fanout import PgFanout


@dataclass
class AppContext:
    """Engine, sessions, connector registry, live hub and clock of one running service."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ConnectorRegistry
    read_sessionmaker: async_sessionmaker[AsyncSession]
    """Sessions of read-only requests: each statement on its own (`create_read_sessionmaker`)."""
    hub: Hub | None = None
    scheduler: AsyncIOScheduler | None = None
    clock: Clock = utcnow
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serialises write transactions on SQLite, which allows one writer at a time."""
    kpi_cache: SeriesCache = field(default_factory=SeriesCache)
    """Serialized KPI series, dropped as their cells change (see `ioc.kpi.publish`)."""
    record_totals: TotalsCache = field(default_factory=TotalsCache)
    """Large totals of record listings, counted at most every few seconds."""
    kpi_refreshed_at: datetime | None = None
    """The moment of this process's last committed time-driven KPI refresh (None: none yet)."""
    auth: Authenticator | None = None
    """Turns bearer credentials into principals; owns the token cache and rate limits."""
    metrics: Metrics = field(default_factory=Metrics)
    """This service's Prometheus metrics (its own registry)."""
    layout_feed: LayoutFeed | None = None
    """Serves the `layout:<id>` topics."""
    fanout: PgFanout | None = None
    """On PostgreSQL, shares published updates with the other replicas (started by the app)."""
    direct_reads: DirectReads | None = None
    """On PostgreSQL, the hot reads' own connections (KPI series); closed with the engine."""


def build_context(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    registry: ConnectorRegistry | None = None,
    metrics: Metrics | None = None,
) -> AppContext:
    """Engine, sessions, registry and a live hub wired together; dispose `ctx.engine` after."""
    # Topics read the context: import late.
    from ioc.layouts.live import LayoutFeed
    from ioc.live.topics import register_core_topics

    service_index.use_weights(settings.service_index)  # a deployment constant, set at start
    pool = (
        {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
        }
        if settings.is_postgres
        else {}
    )
    engine = create_engine(settings.database_url, **pool)
    ctx = AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        registry=registry or ConnectorRegistry(),
        read_sessionmaker=create_read_sessionmaker(engine),
        clock=clock,
        metrics=metrics or Metrics(),
        kpi_cache=SeriesCache(computed_ttl_seconds=settings.kpi_refresh_seconds),
    )
    if settings.is_postgres:
        ctx.direct_reads = DirectReads(settings.database_url, max_size=settings.db_pool_size)
    ctx.hub = Hub(
        max_topics_per_client=settings.ws_max_topics,
        history=settings.ws_history,
    )
    register_core_topics(ctx)
    ctx.layout_feed = LayoutFeed(ctx, refresh_seconds=settings.layout_refresh_seconds)
    ctx.layout_feed.install()
    ctx.auth = Authenticator(settings, ctx.sessionmaker)
    if settings.secrets_key is not None:
        ctx.registry.secret_box = SecretBox(settings.secrets_key.get_secret_value())
    return ctx
