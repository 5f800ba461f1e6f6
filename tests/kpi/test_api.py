"""The leaders' drill-down over HTTP: catalogue, series and its cache, breakdowns, the records
behind a cell, and the errors of each."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ioc.context import AppContext
from ioc.kpi.catalog import CATALOG
from ioc.kpi.models import KpiValue
from ioc.kpi.reads import SeriesCache, SeriesKey
from ioc.kpi.service import CellValue
from ioc.sdk import Dossier, DossierStatus
from tests.kpi.support import NOW
from tests.support.factories import (
    BIEN_HOA,
    TRAN_BIEN,
    ingest_dossiers,
    make_dossier,
    make_instance,
)

DUE = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)  # 17:00 local on 10 November
ON_TIME = "onestop.on_time_rate"
NOVEMBER = {"period": "month", "start": "2026-11-01"}

FIELDS = {
    "DD": ("Đất đai", "SNNMT", "Sở Nông nghiệp và Môi trường"),
    "TP": ("Tư pháp", "STP", "Sở Tư pháp"),
    "XD": ("Xây dựng", "SXD", "Sở Xây dựng"),
}


def dossier(
    external_id: str,
    unit: str = BIEN_HOA,
    *,
    resolved_after: timedelta | None,
    due: datetime = DUE,
    field: str = "DD",
    **overrides: Any,
) -> Dossier:
    """A dossier of `field` due at `due`, resolved `resolved_after` it (None: still open)."""
    field_name, agency_code, agency_name = FIELDS[field]
    received = due - timedelta(days=7)
    resolved = due + resolved_after if resolved_after is not None else None
    values: dict[str, Any] = {
        "external_id": external_id,
        "unit_code": unit,
        "field_code": field,
        "field_name": field_name,
        "agency_code": agency_code,
        "agency_name": agency_name,
        "received_at": received,
        "due_at": due,
        "resolved_at": resolved,
        "status": DossierStatus.PROCESSED if resolved else DossierStatus.PROCESSING,
        "source_updated_at": resolved or received,
    }
    return make_dossier(**(values | overrides))


NOVEMBER_DOSSIERS = [
    dossier("bh-dd-early", resolved_after=-timedelta(days=1)),
    dossier("bh-dd-late", resolved_after=timedelta(hours=1)),
    dossier("bh-dd-open-late", resolved_after=None),
    dossier("bh-tp-on-time", field="TP", resolved_after=timedelta(0)),
    dossier("tb-dd-late", TRAN_BIEN, resolved_after=timedelta(days=2)),
    dossier(
        "tb-xd-not-yet-due", TRAN_BIEN, field="XD", resolved_after=None, due=NOW + timedelta(1)
    ),
    dossier("tb-withdrawn", TRAN_BIEN, resolved_after=None, status=DossierStatus.WITHDRAWN),
    dossier("bh-october-late", resolved_after=None, due=DUE - timedelta(days=31)),
]


def is_late_in_november(d: Dossier, unit: str | None = None) -> bool:
    """An independent reading of "late dossier due in November" over the test data."""
    assert d.due_at is not None
    due_local = d.due_at + timedelta(hours=7)
    counted = d.status is not DossierStatus.WITHDRAWN and (due_local.year, due_local.month) == (
        2026,
        11,
    )
    late = d.resolved_at > d.due_at if d.resolved_at is not None else d.due_at < NOW
    return counted and late and unit in (None, d.unit_code)


@pytest.fixture
async def ingest(ctx: AppContext, app: FastAPI) -> Any:
    """Stores dossiers the way a poll does: ingest and recompute in one transaction, then
    publish the changed cells."""
    service: AppContext = app.state.ctx
    instance_id = await make_instance(ctx)

    async def _ingest(records: list[Dossier]) -> list[CellValue]:
        return await ingest_dossiers(service, records, instance_id=instance_id)

    return _ingest


async def stored_cell(ctx: AppContext, kpi: str, unit: str, kind: str, start: date) -> KpiValue:
    async with ctx.sessionmaker() as session:
        cell = await session.get(KpiValue, (kpi, unit, kind, start))
    assert cell is not None
    return cell


def external_ids(body: dict[str, Any]) -> set[str]:
    return {item["external_id"] for item in body["items"]}


# ---------------------------------------------------------------- catalogue


async def test_catalog_declares_every_kpi_with_its_formula_and_axes(
    http: httpx.AsyncClient,
) -> None:
    body = (await http.get("/api/v1/kpis/catalog")).json()
    assert [k["id"] for k in body] == [k.id for k in CATALOG]
    on_time = next(k for k in body if k["id"] == ON_TIME)
    assert {k: on_time[k] for k in ("record_type", "value_kind", "good_direction", "warn")} == {
        "record_type": "dossier",
        "value_kind": "percent",
        "good_direction": "up",
        "warn": 95.0,
    }
    assert on_time["formula_kind"] == "in_period" and "due_date" in on_time["formula"]
    assert on_time["breakdown_axes"] == ["unit", "agency", "field", "procedure"]
    assert on_time["additive"] is True


# ---------------------------------------------------------------- current values


async def test_current_values_list_the_headline_cell_of_every_kpi_in_catalogue_order(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (await http.get("/api/v1/kpis", params={"unit": BIEN_HOA})).json()
    assert [v["kpi"] for v in body] == [k.id for k in CATALOG]
    on_time = next(v for v in body if v["kpi"] == ON_TIME)
    assert (on_time["period_kind"], on_time["period_start"]) == ("month", "2026-11-01")
    assert (on_time["numerator"], on_time["denominator"]) == (2.0, 4.0)


async def test_current_values_can_be_narrowed_to_kpis_in_order_or_to_a_domain(
    http: httpx.AsyncClient,
) -> None:
    asked = ["onestop.backlog", ON_TIME]
    chosen = (await http.get("/api/v1/kpis", params={"kpi": asked})).json()
    health = (await http.get("/api/v1/kpis", params={"domain": "health"})).json()
    assert [v["kpi"] for v in chosen] == asked
    assert {v["kpi"] for v in health} == {k.id for k in CATALOG if k.domain == "health"}


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"unit": "12345"}, "unknown unit code '12345'"),
        ({"kpi": "weather.rain"}, "unknown KPI 'weather.rain'; known: "),
    ],
    ids=["unit", "kpi"],
)
async def test_current_values_of_an_unknown_unit_or_kpi_are_a_404(
    http: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await http.get("/api/v1/kpis", params=params)
    assert response.status_code == 404
    assert response.json()["detail"].startswith(detail)


async def test_current_values_stay_cached_until_a_cell_of_their_unit_changes(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest([dossier("first", resolved_after=timedelta(0))])
    first = await http.get("/api/v1/kpis", params={"unit": BIEN_HOA})
    elsewhere = await http.get("/api/v1/kpis", params={"unit": TRAN_BIEN})
    again = await http.get("/api/v1/kpis", params={"unit": BIEN_HOA})
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    await ingest([dossier("second", resolved_after=timedelta(hours=1))])
    after = await http.get("/api/v1/kpis", params={"unit": BIEN_HOA})
    other = await http.get("/api/v1/kpis", params={"unit": TRAN_BIEN})
    assert (after.headers["x-cache"], other.headers["x-cache"]) == ("miss", "hit")
    assert other.content == elsewhere.content
    rates = [next(v for v in r.json() if v["kpi"] == ON_TIME)["value"] for r in (first, after)]
    assert rates == [100.0, 50.0]


async def test_current_values_of_the_province_are_dropped_when_a_commune_changes(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await http.get("/api/v1/kpis")
    await ingest([dossier("new", TRAN_BIEN, resolved_after=timedelta(0))])
    after = await http.get("/api/v1/kpis")
    assert after.headers["x-cache"] == "miss"
    assert next(v for v in after.json() if v["kpi"] == ON_TIME)["denominator"] == 1.0


# ---------------------------------------------------------------- series


async def test_series_returns_every_period_with_stored_values_and_zeros_between(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(
        [
            dossier("a", resolved_after=timedelta(0), due=DUE - timedelta(days=1)),
            dossier("b", resolved_after=timedelta(0), due=DUE + timedelta(days=1)),
            dossier("c", resolved_after=timedelta(hours=1), due=DUE + timedelta(days=1)),
        ]
    )
    response = await http.get(
        f"/api/v1/kpis/{ON_TIME}/series",
        params={"unit": BIEN_HOA, "period": "day", "from": "2026-11-08", "to": "2026-11-12"},
    )
    assert response.status_code == 200
    points = response.json()["points"]
    assert [(p["period_start"], p["numerator"], p["denominator"], p["value"]) for p in points] == [
        ("2026-11-08", 0.0, 0.0, None),
        ("2026-11-09", 1.0, 1.0, 100.0),
        ("2026-11-10", 0.0, 0.0, None),
        ("2026-11-11", 1.0, 2.0, 50.0),
        ("2026-11-12", 0.0, 0.0, None),
    ]
    assert [p["computed_at"] is None for p in points] == [True, False, True, False, True]


async def test_series_covers_every_period_holding_a_day_of_the_range(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (
        await http.get(
            f"/api/v1/kpis/{ON_TIME}/series",
            params={"period": "month", "from": "2026-10-15", "to": "2026-12-02"},
        )
    ).json()
    assert (body["unit"], body["date_from"], body["date_to"]) == ("75", "2026-10-01", "2026-12-31")
    assert [(p["period_start"], p["numerator"], p["denominator"]) for p in body["points"]] == [
        ("2026-10-01", 0.0, 1.0),
        ("2026-11-01", 3.0, 6.0),
        ("2026-12-01", 0.0, 0.0),
    ]


async def test_series_defaults_to_the_last_30_headline_periods_of_the_province(
    http: httpx.AsyncClient,
) -> None:
    body = (await http.get(f"/api/v1/kpis/{ON_TIME}/series")).json()
    starts = [p["period_start"] for p in body["points"]]
    assert (body["unit"], body["period_kind"], len(starts)) == ("75", "month", 30)
    assert (starts[0], starts[-1]) == ("2024-06-01", "2026-11-01")


async def test_series_is_served_as_the_same_cached_bytes_until_its_cells_change(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest([dossier("first", resolved_after=timedelta(0))])
    url = f"/api/v1/kpis/{ON_TIME}/series"
    params = {"unit": BIEN_HOA, "period": "month", "from": "2026-11-01", "to": "2026-11-30"}
    first = await http.get(url, params=params)
    again = await http.get(url, params=params)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert again.content == first.content


async def test_series_cache_is_dropped_when_a_recompute_changes_its_cell(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest([dossier("first", resolved_after=timedelta(0))])
    url = f"/api/v1/kpis/{ON_TIME}/series"
    params = {"unit": BIEN_HOA, "period": "month", "from": "2026-11-01", "to": "2026-11-30"}
    before = (await http.get(url, params=params)).json()["points"][0]
    await ingest([dossier("second", resolved_after=timedelta(hours=1))])
    after = await http.get(url, params=params)
    assert after.headers["x-cache"] == "miss"
    assert (before["value"], after.json()["points"][0]["value"]) == (100.0, 50.0)


async def test_series_of_a_unit_whose_cells_did_not_change_stays_cached(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest([dossier("tb", TRAN_BIEN, resolved_after=timedelta(0))])
    url = f"/api/v1/kpis/{ON_TIME}/series"
    params = {"unit": TRAN_BIEN, "period": "month", "from": "2026-11-01", "to": "2026-11-30"}
    await http.get(url, params=params)
    await ingest([dossier("bh", BIEN_HOA, resolved_after=timedelta(hours=1))])
    assert (await http.get(url, params=params)).headers["x-cache"] == "hit"


def series_key(unit: str) -> SeriesKey:
    return SeriesKey(ON_TIME, unit, "day", date(2026, 11, 1), date(2026, 11, 30))


def test_series_cache_evicts_the_least_recently_used_beyond_its_size() -> None:
    cache = SeriesCache(max_entries=2)
    for unit in ("a", "b"):
        cache.put(series_key(unit), unit.encode(), cache.ticket(series_key(unit)))
    assert cache.get(series_key("a")) == b"a"  # "b" is now the least recently used
    cache.put(series_key("c"), b"c", cache.ticket(series_key("c")))
    assert [cache.get(series_key(u)) for u in ("a", "b", "c")] == [b"a", None, b"c"]


def test_series_cache_refuses_bytes_read_before_an_invalidation() -> None:
    cache = SeriesCache()
    key = series_key(BIEN_HOA)
    ticket = cache.ticket(key)
    changed = CellValue(
        next(k for k in CATALOG if k.id == ON_TIME),
        BIEN_HOA,
        None,
        1.0,
        1.0,
        NOW,  # type: ignore[arg-type]
    )
    cache.invalidate([changed])
    cache.put(key, b"stale", ticket)
    assert cache.get(key) is None


def test_an_entry_may_expire_sooner_than_the_cache_s_time_to_live() -> None:
    now = [0.0]
    cache = SeriesCache(ttl_seconds=60, clock=lambda: now[0])
    brief, lasting = series_key(BIEN_HOA), series_key(TRAN_BIEN)
    cache.put(brief, b"moves with time", cache.ticket(brief), ttl_seconds=5)
    cache.put(lasting, b"series", cache.ticket(lasting))
    now[0] = 6.0
    assert (cache.get(brief), cache.get(lasting)) == (None, b"series")


def test_series_cache_entries_expire_after_their_time_to_live() -> None:
    now = [0.0]
    cache = SeriesCache(ttl_seconds=60, clock=lambda: now[0])
    key = series_key(BIEN_HOA)
    cache.put(key, b"series", cache.ticket(key))
    now[0] = 61.0
    assert cache.get(key) is None and len(cache) == 0


# ---------------------------------------------------------------- breakdown


async def test_breakdown_by_unit_sums_to_the_province_cell(
    ctx: AppContext, http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (
        await http.get(f"/api/v1/kpis/{ON_TIME}/breakdown", params={**NOVEMBER, "by": "unit"})
    ).json()
    province = await stored_cell(ctx, ON_TIME, "75", "month", date(2026, 11, 1))
    rows = body["rows"]
    assert sum(r["numerator"] for r in rows) == province.numerator == body["total"]["numerator"]
    assert sum(r["denominator"] for r in rows) == province.denominator == 6.0
    assert body["total"]["value"] == province.value == 50.0
    nonzero = [(r["key"], r["numerator"], r["denominator"]) for r in rows if r["denominator"]]
    assert nonzero == [(TRAN_BIEN, 1.0, 2.0), (BIEN_HOA, 2.0, 4.0)]  # both 50 %: by code
    assert next(r for r in rows if r["key"] == BIEN_HOA)["label"] == "Phường Biên Hòa"


@pytest.mark.parametrize(
    ("axis", "expected"),
    [
        pytest.param(
            "field",
            [
                ("DD", "Đất đai", 1.0, 4.0),
                ("TP", "Tư pháp", 1.0, 1.0),
                ("XD", "Xây dựng", 1.0, 1.0),
            ],
            id="field",
        ),
        pytest.param(
            "agency",
            [
                ("SNNMT", "Sở Nông nghiệp và Môi trường", 1.0, 4.0),
                ("STP", "Sở Tư pháp", 1.0, 1.0),
                ("SXD", "Sở Xây dựng", 1.0, 1.0),
            ],
            id="agency",
        ),
    ],
)
async def test_breakdown_by_an_axis_sums_to_the_whole_on_time_rate(
    ctx: AppContext,
    http: httpx.AsyncClient,
    ingest: Any,
    axis: str,
    expected: list[tuple[str, str, float, float]],
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (
        await http.get(f"/api/v1/kpis/{ON_TIME}/breakdown", params={**NOVEMBER, "by": axis})
    ).json()
    rows = [(r["key"], r["label"], r["numerator"], r["denominator"]) for r in body["rows"]]
    assert rows == expected  # the worst (25 %) first, ties by key
    province = await stored_cell(ctx, ON_TIME, "75", "month", date(2026, 11, 1))
    total = body["total"]
    assert (total["numerator"], total["denominator"]) == (province.numerator, province.denominator)
    assert sum(r[2] for r in rows) == total["numerator"] and sum(r[3] for r in rows) == 6.0


async def test_each_breakdown_row_links_to_exactly_the_records_it_counts(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (
        await http.get(
            f"/api/v1/kpis/{ON_TIME}/breakdown",
            params={**NOVEMBER, "unit": BIEN_HOA, "by": "field"},
        )
    ).json()
    land = next(r for r in body["rows"] if r["key"] == "DD")
    records = (await http.get(land["records"])).json()
    assert records["total"] == land["denominator"] == 3
    assert external_ids(records) == {"bh-dd-early", "bh-dd-late", "bh-dd-open-late"}


async def test_breakdown_by_an_axis_the_kpi_lacks_is_a_422_naming_its_axes(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get(f"/api/v1/kpis/{ON_TIME}/breakdown", params={"by": "school"})
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "cannot break onestop.on_time_rate down by 'school'; "
        "its axes are unit, agency, field, procedure"
    )


async def test_breakdown_of_a_commune_by_unit_is_a_422(http: httpx.AsyncClient) -> None:
    response = await http.get(
        f"/api/v1/kpis/{ON_TIME}/breakdown", params={"unit": BIEN_HOA, "by": "unit"}
    )
    assert response.status_code == 422 and "no units below it" in response.json()["detail"]


# ---------------------------------------------------------------- records behind a cell


@pytest.mark.parametrize("unit", [None, BIEN_HOA], ids=["province", "commune"])
async def test_late_side_lists_exactly_the_late_dossiers_of_the_cell(
    http: httpx.AsyncClient, ingest: Any, unit: str | None
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    params = {**NOVEMBER, "side": "late", **({"unit": unit} if unit else {})}
    body = (await http.get(f"/api/v1/kpis/{ON_TIME}/records", params=params)).json()
    expected = {d.external_id for d in NOVEMBER_DOSSIERS if is_late_in_november(d, unit)}
    assert external_ids(body) == expected and body["total"] == len(expected)
    assert (body["kpi"], body["side"], body["period_start"]) == (ON_TIME, "late", "2026-11-01")


async def test_records_behind_a_cell_take_the_filters_of_the_records_api(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest([*NOVEMBER_DOSSIERS, dossier("bh-tp-late", field="TP", resolved_after=None)])
    body = (
        await http.get(
            f"/api/v1/kpis/{ON_TIME}/records",
            params={**NOVEMBER, "unit": BIEN_HOA, "side": "late", "field_code": "DD"},
        )
    ).json()
    assert external_ids(body) == {"bh-dd-late", "bh-dd-open-late"}


async def test_numerator_and_denominator_sides_match_the_stored_cell(
    ctx: AppContext, http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    url = f"/api/v1/kpis/{ON_TIME}/records"
    numerator = (await http.get(url, params={**NOVEMBER, "side": "numerator"})).json()
    denominator = (await http.get(url, params={**NOVEMBER, "side": "denominator"})).json()
    cell = await stored_cell(ctx, ON_TIME, "75", "month", date(2026, 11, 1))
    assert (numerator["total"], denominator["total"]) == (cell.numerator, cell.denominator)
    assert external_ids(numerator) == {"bh-dd-early", "bh-tp-on-time", "tb-xd-not-yet-due"}


async def test_records_behind_a_cell_are_sorted_and_paged(
    http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (
        await http.get(
            f"/api/v1/kpis/{ON_TIME}/records",
            params={**NOVEMBER, "side": "late", "sort": "-external_id", "limit": 2, "offset": 1},
        )
    ).json()
    assert [i["external_id"] for i in body["items"]] == ["bh-dd-open-late", "bh-dd-late"]
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 1)


async def test_records_behind_a_stock_cell_are_those_open_at_its_end(
    ctx: AppContext, http: httpx.AsyncClient, ingest: Any
) -> None:
    await ingest(NOVEMBER_DOSSIERS)
    body = (
        await http.get(
            "/api/v1/kpis/onestop.overdue_open/records",
            params={"period": "day", "start": "2026-11-20"},
        )
    ).json()
    cell = await stored_cell(ctx, "onestop.overdue_open", "75", "day", date(2026, 11, 20))
    assert external_ids(body) == {"bh-dd-open-late", "bh-october-late"}
    assert body["total"] == cell.numerator


@pytest.mark.parametrize(
    ("kpi", "side", "message"),
    [
        ("onestop.overdue_open", "late", "is a count and has no denominator"),
        ("onestop.overdue_open", "denominator", "is a count and has no denominator"),
        ("onestop.mean_resolution_days", "late", "side=late needs a percentage"),
        ("onestop.service_index", "numerator", "has no records of its own; see those of"),
        (ON_TIME, "early", "side must be one of numerator, denominator, late"),
    ],
    ids=[
        "late-of-a-count",
        "denominator-of-a-count",
        "late-of-a-mean",
        "any-side-of-a-score",
        "unknown-side",
    ],
)
async def test_a_side_the_kpi_does_not_have_is_a_422(
    http: httpx.AsyncClient, kpi: str, side: str, message: str
) -> None:
    response = await http.get(f"/api/v1/kpis/{kpi}/records", params={"side": side})
    assert response.status_code == 422 and message in response.json()["detail"]


async def test_a_filter_the_record_type_lacks_is_a_422(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/api/v1/kpis/{ON_TIME}/records", params={"school_code": "x"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("unknown filter 'school_code' for dossier")


# ---------------------------------------------------------------- errors

DRILL_DOWNS = ["series", "breakdown", "records"]


@pytest.mark.parametrize("view", DRILL_DOWNS)
async def test_an_unknown_kpi_is_a_404_with_the_catalogue_message(
    http: httpx.AsyncClient, view: str
) -> None:
    response = await http.get(f"/api/v1/kpis/weather.rain/{view}")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown KPI 'weather.rain'; known: ")


@pytest.mark.parametrize("view", DRILL_DOWNS)
async def test_an_unknown_unit_is_a_404(http: httpx.AsyncClient, view: str) -> None:
    response = await http.get(f"/api/v1/kpis/{ON_TIME}/{view}", params={"unit": "12345"})
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown unit code '12345'"}


@pytest.mark.parametrize("view", DRILL_DOWNS)
async def test_an_unknown_period_kind_is_a_422(http: httpx.AsyncClient, view: str) -> None:
    response = await http.get(f"/api/v1/kpis/{ON_TIME}/{view}", params={"period": "week"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "period must be one of day, month, quarter, year, not 'week'"
    }


@pytest.mark.parametrize("view", ["breakdown", "records"])
async def test_a_start_that_does_not_begin_a_period_is_a_422(
    http: httpx.AsyncClient, view: str
) -> None:
    response = await http.get(
        f"/api/v1/kpis/{ON_TIME}/{view}", params={"period": "month", "start": "2026-11-02"}
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "2026-11-02 does not start a month (it starts 2026-11-01)"}


async def test_a_series_from_after_to_is_a_422(http: httpx.AsyncClient) -> None:
    response = await http.get(
        f"/api/v1/kpis/{ON_TIME}/series", params={"from": "2026-11-12", "to": "2026-11-10"}
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "from 2026-11-12 is after to 2026-11-10"}


async def test_a_series_of_too_many_periods_is_a_422(http: httpx.AsyncClient) -> None:
    response = await http.get(
        f"/api/v1/kpis/{ON_TIME}/series",
        params={"period": "day", "from": "2020-01-01", "to": "2026-11-20"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "the range holds 2516 day periods; at most 1000 per request: "
        "narrow it or choose a longer period"
    )
