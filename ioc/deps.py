"""Typed FastAPI dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.config import Settings
from ioc.context import AppContext


async def get_context(request: Request) -> AppContext:
    """The running service's lifespan-owned objects (async: a plain `def` dependency would run
    in a worker thread on every request)."""
    return request.app.state.ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_settings(ctx: ContextDep) -> Settings:
    """The service's settings."""
    return ctx.settings


async def get_session(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    """One session per request, committed if the handler succeeds: before the response is
    sent (`scope="function"` on `SessionDep`), so a client told 201 finds its write stored, and
    a commit that fails is the client's 5xx, not a success it was already sent."""
    async with ctx.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def get_read_session(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    """One session per read-only request, each statement committed on its own: two round trips
    to the database fewer than `get_session` (no BEGIN, no COMMIT)."""
    async with ctx.read_sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
