"""Run an ASGI app with uvicorn in a background thread, for synchronous clients (schemathesis)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from sqlalchemy import delete

from ioc.app import create_app
from ioc.config import Settings
from ioc.context import build_context
from ioc.models import ConnectorInstance, DossierRow, KpiValue, PollRun, RejectedRecord


@contextlib.contextmanager
def serve_in_thread(app: Any, *, startup_timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 and a free port from another thread; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def _reset(settings: Settings) -> None:
    ctx = build_context(settings)
    try:
        async with ctx.sessionmaker() as session, session.begin():
            for model in (KpiValue, DossierRow, RejectedRecord, PollRun, ConnectorInstance):
                await session.execute(delete(model))
    finally:
        await ctx.engine.dispose()


@contextlib.contextmanager
def serve_service(settings: Settings) -> Iterator[str]:
    """The service on a real port in another thread; the rows it wrote are deleted after."""
    try:
        with serve_in_thread(create_app(settings)) as url:
            yield url
    finally:
        asyncio.run(_reset(settings))
