"""Two transactions racing for one unique key: the loser has already looked and found the key
free when the winner commits it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext

Step = Callable[[AsyncSession], Awaitable[Any]]


async def lose_the_race(ctx: AppContext, *, take: Step, attempt: Step) -> BaseException | None:
    """Run `take` and leave it uncommitted; run `attempt` in another session until it writes
    (its own check has passed: the key was not committed), then commit `take`. Returns what
    `attempt` raised, or None."""
    writing = asyncio.Event()

    def notice_write(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            writing.set()

    async with ctx.sessionmaker() as winner, ctx.sessionmaker() as loser:
        await take(winner)
        await winner.flush()  # the key is taken, not yet committed: the loser cannot see it
        event.listen(ctx.engine.sync_engine, "before_cursor_execute", notice_write)
        try:
            attempting = asyncio.create_task(attempt(loser))
            await asyncio.wait_for(writing.wait(), 10)
        finally:
            event.remove(ctx.engine.sync_engine, "before_cursor_execute", notice_write)
        await asyncio.sleep(0.2)  # the loser's write now waits for the winner's lock
        await winner.commit()
        try:
            await asyncio.wait_for(attempting, 30)
        except Exception as exc:
            return exc
        finally:
            await loser.rollback()
    return None
