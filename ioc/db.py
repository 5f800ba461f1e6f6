"""Async engine, sessions and the declarative base, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import asyncpg
from sqlalchemy import JSON, MetaData, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL."""


class Base(DeclarativeBase):
    """Declarative base of every ORM model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JsonType,
        list[dict[str, Any]]: JsonType,
    }


SQLITE_CASEFOLD = "ioc_casefold"
"""Name of the case-folding SQL function every SQLite connection gets."""


def casefold(text: str | None) -> str | None:
    """Text in composed Unicode form, lower-cased, for case-insensitive comparison."""
    return None if text is None else unicodedata.normalize("NFC", text).lower()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # SQLite's lower() folds ASCII only: searches fold Vietnamese letters with this.
            dbapi_connection.create_function(SQLITE_CASEFOLD, 1, casefold, deterministic=True)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    engine = create_async_engine(url, **kwargs)
    guard_checkouts(engine)
    return engine


def guard_checkouts(engine: AsyncEngine) -> None:
    """Hand out no pooled connection whose server side is gone, without a round trip for each.

    SQLAlchemy's `pool_pre_ping` pings on every checkout — on asyncpg a BEGIN, a `;` and a
    ROLLBACK, three round trips before each request's own statements (a tenth of an API
    process's CPU in the soak, and as many statements again for PostgreSQL). When the server
    restarts or a backend is terminated it closes the socket, and asyncpg marks the connection
    closed as soon as the event loop reads the EOF: such a connection is discarded here and
    the pool opens another. A connection in use when the server goes fails its statement, as
    it would with a pre-ping; the disconnect then renews the whole pool (SQLAlchemy's own
    handling)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("the server closed the connection")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads, each statement in a transaction of its own (autocommit): no BEGIN
    and COMMIT round trips around them. At READ COMMITTED, the default, each statement of a
    transaction sees a snapshot of its own anyway."""
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a PostgreSQL session, inside the session's transaction.

    SQLAlchemy begins a transaction on its first statement, not before: a command sent straight
    on the driver first would run on its own and commit at once (a temporary table `ON COMMIT
    DELETE ROWS` would be emptied under the caller), so this begins the session's first."""
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


_UNIQUE_VIOLATIONS = {"23505", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"}
"""PostgreSQL's SQLSTATE and SQLite's error names for a duplicate key."""


@contextmanager
def unique_or(taken: Exception) -> Iterator[None]:
    """Turn a duplicate key met inside into `taken`, the error the caller's own check gives: a
    name another transaction took after the caller looked for it (two requests creating the
    same name at once) is then a clear 4xx, not a database error. Roll the session back after."""
    try:
        yield
    except IntegrityError as exc:
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "sqlite_errorname", None)
        if code not in _UNIQUE_VIOLATIONS:
            raise
        raise taken from None


def asyncpg_dsn(database_url: str) -> str:
    """A plain `postgresql://` DSN for asyncpg from the SQLAlchemy URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


_BROKEN_CONNECTION = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)
"""What a statement meets on a connection the server dropped (restarted, terminated it)."""


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Nothing to reset: direct reads are single statements outside a transaction."""


class DirectReads:
    """Hot single-statement reads straight on asyncpg (PostgreSQL only).

    SQLAlchemy wraps each statement in a transaction (a BEGIN and a ROLLBACK round trip); for a
    read served hundreds of times a second this pool does not: its connections are taken as
    they are (as the engine's, see `guard_checkouts`), a statement that
    meets a dead one (the database restarted) is retried once on a new connection, and a
    connection goes back without a reset round trip. Opened on first use; `close()` at shutdown.
    """

    def __init__(self, database_url: str, *, max_size: int) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """The rows of one prepared statement."""
        pool = self._pool or await self._open()
        async with pool.acquire() as connection:
            try:
                return await connection.fetch(sql, *args)
            except _BROKEN_CONNECTION:
                # not given back: the pool opens a new one (unless asyncpg already let it go)
                with contextlib.suppress(asyncpg.InterfaceError):
                    connection.terminate()
        async with pool.acquire() as connection:
            return await connection.fetch(sql, *args)

    async def close(self) -> None:
        """Close the pool's connections (a later read opens a new pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=0, max_size=self.max_size, reset=_keep_session
                )
            return self._pool
