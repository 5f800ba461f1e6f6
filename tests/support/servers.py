"""Run an ASGI app on a real local port for the length of a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def serve_app(
    app: Any, *, startup_timeout: float = 10.0, **options: Any
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 and a free port (`options`: more of uvicorn's
    settings, e.g. `ws`); yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="auto",
        timeout_graceful_shutdown=2,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(startup_timeout):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped the server from starting
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            server.force_exit = True
            await task
