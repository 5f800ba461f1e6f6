"""The current-values read answered before routing: the same bytes as the route, and every
request it cannot judge left to the route."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.kpi.test_series_front import resolved, routed, stored  # noqa: F401  (fixtures)
from tests.support.factories import BIEN_HOA, TRAN_BIEN, ingest_dossiers

CURRENT = "/api/v1/kpis"

WELL_FORMED = {
    "the province": "",
    "a commune": f"?unit={BIEN_HOA}",
    "some KPIs in order": "?kpi=onestop.backlog&kpi=onestop.on_time_rate",
    "a domain of a commune": f"?domain=onestop&unit={TRAN_BIEN}",
    "a domain with no KPI": "?domain=weather",
}
LEFT_TO_THE_ROUTE = {
    "an unknown parameter": "?colour=red",
    "a repeated unit": f"?unit={BIEN_HOA}&unit={TRAN_BIEN}",
    "a blank value": "?unit=",
    "an unknown KPI": "?kpi=onestop.nothing",
    "an unknown unit": "?unit=12345",
}


@pytest.mark.parametrize("query", WELL_FORMED.values(), ids=WELL_FORMED.keys())
async def test_a_well_formed_read_is_answered_without_the_router(
    http: httpx.AsyncClient,
    routed: list[str],  # noqa: F811
    query: str,
) -> None:
    miss, hit = await http.get(CURRENT + query), await http.get(CURRENT + query)
    assert (miss.status_code, miss.headers["x-cache"], hit.headers["x-cache"]) == (
        200,
        "miss",
        "hit",
    )
    assert routed == []


@pytest.mark.parametrize("query", LEFT_TO_THE_ROUTE.values(), ids=LEFT_TO_THE_ROUTE.keys())
async def test_a_read_the_front_cannot_judge_goes_to_the_route(
    http: httpx.AsyncClient,
    routed: list[str],  # noqa: F811
    query: str,
) -> None:
    await http.get(CURRENT + query)
    assert routed == [CURRENT]


@pytest.mark.parametrize("query", WELL_FORMED.values(), ids=WELL_FORMED.keys())
async def test_the_front_answers_the_bytes_the_route_answers(
    app: FastAPI, http: httpx.AsyncClient, query: str
) -> None:
    by_front = await http.get(CURRENT + query)
    app.state.ctx.kpi_cache.clear()
    by_route = await http.get(CURRENT + query + ("&" if query else "?") + "route=yes")
    assert by_route.headers["x-cache"] == "miss"  # read again, not the front's cached bytes
    # Cells computed on read carry the moment of the read: compare everything else.
    shown = [
        [{k: v for k, v in value.items() if k != "computed_at"} for value in response.json()]
        for response in (by_front, by_route)
    ]
    assert shown[0] == shown[1]
    assert by_front.headers["content-type"] == by_route.headers["content-type"]


async def test_a_recompute_reaches_the_front_s_next_answer(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    query = f"{CURRENT}?unit={BIEN_HOA}&kpi=onestop.on_time_rate"
    before = (await http.get(query)).json()[0]
    late = resolved(BIEN_HOA, late=True)
    await ingest_dossiers(app.state.ctx, [late], instance_id=app.state.instance_id)
    after = await http.get(query)
    assert after.headers["x-cache"] == "miss"
    assert after.json()[0]["denominator"] == before["denominator"] + 1


async def test_the_front_s_answers_are_timed_under_the_route_template(
    http: httpx.AsyncClient,
) -> None:
    for query in WELL_FORMED.values():
        assert (await http.get(CURRENT + query)).status_code == 200
    metrics = (await http.get("/metrics")).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("ioc_http_request_duration_seconds_count")
        and 'route="/api/v1/kpis"' in line
        and 'status="200"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == len(WELL_FORMED)
