"""Every built-in connector, polled by the runtime from its simulator, lands in its table on both
databases, and polling again stores no duplicates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.education.simulator import create_app as education_simulator
from connectors.fhir.simulator import create_app as fhir_simulator
from connectors.open311.simulator import create_app as open311_simulator
from ioc.context import AppContext
from ioc.records.models import (
    BedCensusRow,
    EncounterRow,
    FeedbackRow,
    RecordColumns,
    SchoolDayRow,
)
from ioc.scheduler.runner import poll_instance
from tests.support.factories import make_instance
from tests.support.servers import serve_app
from tests.support.upstream import START, load


@dataclass(frozen=True)
class Source:
    kind: str
    simulator: Callable[..., Any]
    knobs: dict[str, Any]
    config: Callable[[str], dict[str, Any]]
    tables: tuple[type[RecordColumns], ...]


SOURCES = [
    Source(
        "fhir",
        fhir_simulator,
        {"history_days": 2, "scale": 0.05},
        lambda url: {"base_url": url},
        (EncounterRow, BedCensusRow),
    ),
    Source(
        "open311",
        open311_simulator,
        {"history_days": 20, "unlocated_share": 0},
        lambda url: {"base_url": url, "jurisdiction_id": "dongnai.gov.vn"},
        (FeedbackRow,),
    ),
    Source(
        "education",
        education_simulator,
        {"history_days": 3},
        lambda url: {"source": "api", "base_url": url},
        (SchoolDayRow,),
    ),
]


async def rows(ctx: AppContext, table: type[RecordColumns]) -> tuple[int, int]:
    async with ctx.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(table))
        distinct = await session.scalar(
            select(func.count()).select_from(
                select(table.instance_id, table.external_id).distinct().subquery()
            )
        )
    return total or 0, distinct or 0


async def poll_to_the_end(ctx: AppContext, instance_id: int) -> int:
    """Poll until a run ends on the source's last page; returns how many runs it took."""
    for run in range(1, 20):
        outcome = await poll_instance(ctx, instance_id, force=True)
        assert outcome.ok, outcome.error
        if outcome.pages < ctx.settings.poll_max_pages:
            return run
    raise AssertionError("the source never reached its last page")


@pytest.mark.parametrize("source", SOURCES, ids=[s.kind for s in SOURCES])
async def test_each_builtin_source_is_stored_once_in_its_table(
    ctx: AppContext, source: Source
) -> None:
    app = source.simulator(seed=4, start=START, speed=0, **source.knobs)
    ctx.clock = app.state.simulator.now  # the IOC judges "now" at the simulated time
    async with serve_app(app) as url:
        instance_id = await make_instance(ctx, kind=source.kind, config=source.config(url))
        await poll_to_the_end(ctx, instance_id)
        first = {table: await rows(ctx, table) for table in source.tables}
        await poll_to_the_end(ctx, instance_id)
        again = {table: await rows(ctx, table) for table in source.tables}
    instance = await load(ctx, instance_id)
    assert instance.health == "ok", instance.last_error
    for table in source.tables:
        total, distinct = again[table]
        assert total > 0, f"nothing stored in {table.__tablename__}"
        assert total == distinct, f"duplicates in {table.__tablename__}"
    assert first[source.tables[0]] == again[source.tables[0]]
