"""Fixtures for record reads: a way to store canonical records the way ingest does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from ioc.context import AppContext
from ioc.ingest.service import ingest_batch
from ioc.sdk import Batch, Dossier, Record
from ioc.units.service import COMMUNE_LEVEL, unit_codes
from tests.support.factories import make_dossier, make_instance

NOW = datetime(2026, 4, 20, 3, 0, tzinfo=UTC)

Store = Callable[[Sequence[Record]], Awaitable[None]]


@pytest.fixture
async def store(ctx: AppContext) -> Store:
    """Stores records through `ingest_batch`, as a connector's poll would."""
    instance_id = await make_instance(ctx)

    async def _store(records: Sequence[Record]) -> None:
        async with ctx.sessionmaker() as session, session.begin():
            known = await unit_codes(session, level=COMMUNE_LEVEL)
            result = await ingest_batch(
                session,
                instance_id=instance_id,
                batch=Batch(records=list(records)),
                known_units=known,
                tz=ctx.settings.tz,
                now=NOW,
            )
        assert result.rejected == 0

    return _store


def dossier_due(day: date, **overrides: Any) -> Dossier:
    """A dossier due at 10:00 local on `day`, received five days before; override anything."""
    due = datetime.combine(day, time(3, 0), tzinfo=UTC)  # 10:00 in Asia/Ho_Chi_Minh
    received = due - timedelta(days=5)
    values: dict[str, Any] = {"received_at": received, "due_at": due, "source_updated_at": received}
    values.update(overrides)
    return make_dossier(**values)
