"""Fixtures of the operations tests: the app over ASGI with its lifespan running."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from fastapi import FastAPI

from ioc.app import create_app
from ioc.context import AppContext
from ioc.ops.logs import JsonFormatter


@pytest.fixture
async def app(ctx: AppContext) -> AsyncIterator[FastAPI]:
    """The service on the test database, lifespan started."""
    application = create_app(ctx.settings)
    async with application.router.lifespan_context(application):
        yield application


class JsonLines:
    """Log lines as the JSON formatter writes them, parsed back."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def entries(self, logger: str | None = None) -> list[dict]:
        """Every line so far, optionally of one logger."""
        lines = [orjson.loads(line) for line in self.stream.getvalue().splitlines() if line]
        return [e for e in lines if logger is None or e["logger"] == logger]


@pytest.fixture
def json_logs() -> Iterator[JsonLines]:
    """Capture every log line through the JSON formatter (formatted when written, as in prod)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield JsonLines(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
