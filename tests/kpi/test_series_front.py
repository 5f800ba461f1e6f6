"""The series read answered before routing: the same bytes as the route, and every request it
cannot judge left to the route."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI, Request

from ioc.context import AppContext
from ioc.deps import get_context
from ioc.sdk import Dossier, DossierStatus
from tests.support.factories import (
    BIEN_HOA,
    TRAN_BIEN,
    ingest_dossiers,
    make_dossier,
    make_instance,
)

SERIES = "/api/v1/kpis/onestop.on_time_rate/series"


def resolved(unit: str, *, late: bool) -> Dossier:
    """A November dossier resolved a day before or after its due moment."""
    draft = make_dossier(unit_code=unit)
    assert draft.due_at is not None
    resolved_at = draft.due_at + timedelta(days=1 if late else -1)
    return draft.model_copy(
        update={
            "status": DossierStatus.PROCESSED,
            "resolved_at": resolved_at,
            "source_updated_at": resolved_at,
        }
    )


WELL_FORMED = {
    "defaults": "",
    "a commune's days": f"?unit={BIEN_HOA}&period=day&from=2026-11-01&to=2026-11-20",
    "months of the province": "?period=month&from=2026-01-01",
    "quarters up to a day": "?period=quarter&to=2026-12-31",
}
LEFT_TO_THE_ROUTE = {
    "an unknown parameter": "?period=day&colour=red",
    "a repeated parameter": "?period=day&period=month",
    "a blank value": "?unit=",
    "a date the route parses itself": "?from=2026-11-01T00:00:00",
    "a malformed date": "?from=2026-11-1",
    "an unknown period kind": "?period=week",
    "a reversed range": "?from=2026-11-12&to=2026-11-10",
    "an unknown unit": "?unit=12345",
}


@pytest.fixture(autouse=True)
async def stored(app: FastAPI) -> None:
    """Two communes' November dossiers, stored as a poll stores them."""
    records = [resolved(BIEN_HOA, late=True), resolved(BIEN_HOA, late=False)]
    records.append(resolved(TRAN_BIEN, late=False))
    instance_id = await make_instance(app.state.ctx)
    await ingest_dossiers(app.state.ctx, records, instance_id=instance_id)
    app.state.instance_id = instance_id


@pytest.fixture
def routed(app: FastAPI) -> list[str]:
    """The paths the router resolved dependencies for (the front answered the others)."""
    seen: list[str] = []

    async def counting_context(request: Request) -> AppContext:
        seen.append(request.url.path)
        return request.app.state.ctx

    app.dependency_overrides[get_context] = counting_context
    return seen


@pytest.mark.parametrize("query", WELL_FORMED.values(), ids=WELL_FORMED.keys())
async def test_a_well_formed_read_is_answered_without_the_router(
    http: httpx.AsyncClient, routed: list[str], query: str
) -> None:
    miss, hit = await http.get(SERIES + query), await http.get(SERIES + query)
    assert (miss.status_code, miss.headers["x-cache"], hit.headers["x-cache"]) == (
        200,
        "miss",
        "hit",
    )
    assert routed == []


@pytest.mark.parametrize("query", LEFT_TO_THE_ROUTE.values(), ids=LEFT_TO_THE_ROUTE.keys())
async def test_a_read_the_front_cannot_judge_goes_to_the_route(
    http: httpx.AsyncClient, routed: list[str], query: str
) -> None:
    await http.get(SERIES + query)
    assert routed == [SERIES]


@pytest.mark.parametrize("query", WELL_FORMED.values(), ids=WELL_FORMED.keys())
async def test_the_front_answers_the_bytes_the_route_answers(
    app: FastAPI, http: httpx.AsyncClient, query: str
) -> None:
    by_front = await http.get(SERIES + query)
    app.state.ctx.kpi_cache.clear()
    by_route = await http.get(SERIES + query + ("&" if query else "?") + "route=yes")
    assert by_route.headers["x-cache"] == "miss"  # read again, not the front's cached bytes
    assert by_front.content == by_route.content
    assert by_front.headers["content-type"] == by_route.headers["content-type"]


async def test_a_recompute_reaches_the_front_s_next_answer(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    query = f"{SERIES}?unit={BIEN_HOA}&period=month&from=2026-11-01&to=2026-11-30"
    before = (await http.get(query)).json()["points"][0]
    late = resolved(BIEN_HOA, late=True)
    await ingest_dossiers(app.state.ctx, [late], instance_id=app.state.instance_id)
    after = await http.get(query)
    assert after.headers["x-cache"] == "miss"
    assert after.json()["points"][0]["denominator"] == before["denominator"] + 1


async def test_the_front_s_answers_are_timed_under_the_route_template(
    http: httpx.AsyncClient,
) -> None:
    for query in WELL_FORMED.values():
        assert (await http.get(SERIES + query)).status_code == 200
    metrics = (await http.get("/metrics")).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("ioc_http_request_duration_seconds_count")
        and 'route="/api/v1/kpis/{kpi}/series"' in line
        and 'status="200"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == len(WELL_FORMED)
