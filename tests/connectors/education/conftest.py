"""Fixtures of the education connector tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.connectors.education.support import Upstream, upstream


@pytest.fixture
async def source() -> AsyncIterator[Upstream]:
    """The default simulator: frozen on Wednesday 19 November 2025, history from Friday 14th."""
    async with upstream() as running:
        yield running
