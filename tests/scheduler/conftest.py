"""Fixtures of the scheduler tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.upstream import Upstream, running_upstream


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A small one-stop-shop simulator with a frozen clock, on a real port."""
    async for served in running_upstream():
        yield served
