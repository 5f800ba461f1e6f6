"""GET /api/v1/records/{record_type}: query parameters, paging and error answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest

from ioc.app import create_app
from ioc.context import AppContext
from tests.records.conftest import Store, dossier_due
from tests.support.factories import BIEN_HOA, TRAN_BIEN, make_dossier

URL = "/api/v1/records/dossier"


@pytest.fixture
async def http(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            yield client


def external_ids(body: dict[str, object]) -> set[str]:
    items = body["items"]
    assert isinstance(items, list)
    return {item["external_id"] for item in items}


async def test_late_land_dossiers_of_one_commune_in_march_are_listed(
    http: httpx.AsyncClient, store: Store
) -> None:
    await store(
        [
            dossier_due(date(2026, 3, 10), external_id="wanted", unit_code=BIEN_HOA),
            dossier_due(date(2026, 3, 10), external_id="other-commune", unit_code=TRAN_BIEN),
            dossier_due(date(2026, 3, 10), external_id="other-field", field_code="TP"),
            dossier_due(date(2026, 4, 10), external_id="april", unit_code=BIEN_HOA),
        ]
    )
    response = await http.get(
        URL,
        params={
            "unit": BIEN_HOA,
            "time_column": "due_date",
            "date_from": "2026-03-01",
            "date_to": "2026-03-31",
            "field_code": "DD",
        },
    )
    assert response.status_code == 200
    assert external_ids(response.json()) == {"wanted"}


async def test_repeated_filter_parameter_matches_any_of_its_values(
    http: httpx.AsyncClient, store: Store
) -> None:
    await store(
        [
            make_dossier(external_id="land", field_code="DD"),
            make_dossier(external_id="justice", field_code="TP"),
            make_dossier(external_id="civil", field_code="HT"),
        ]
    )
    response = await http.get(f"{URL}?field_code=DD&field_code=HT&unit=75")
    assert external_ids(response.json()) == {"land", "civil"}


async def test_page_reports_the_total_and_echoes_limit_and_offset(
    http: httpx.AsyncClient, store: Store
) -> None:
    await store([make_dossier() for _ in range(5)])
    body = (await http.get(URL, params={"limit": 2, "offset": 4})).json()
    assert (len(body["items"]), body["total"], body["limit"], body["offset"]) == (1, 5, 2, 4)


async def test_sort_parameter_takes_several_columns_and_descending_marks(
    http: httpx.AsyncClient, store: Store
) -> None:
    await store(
        [
            dossier_due(date(2026, 3, 2), external_id="tp-2", field_code="TP"),
            dossier_due(date(2026, 3, 1), external_id="dd-1", field_code="DD"),
            dossier_due(date(2026, 3, 3), external_id="dd-3", field_code="DD"),
        ]
    )
    body = (await http.get(URL, params={"sort": "field_code,-due_date"})).json()
    assert [item["external_id"] for item in body["items"]] == ["dd-3", "dd-1", "tp-2"]


async def test_text_search_takes_vietnamese_in_the_query_string(
    http: httpx.AsyncClient, store: Store
) -> None:
    await store(
        [
            make_dossier(external_id="land", procedure_name="Cấp sổ", field_name="Đất đai"),
            make_dossier(external_id="justice", procedure_name="Chứng thực", field_name="Tư pháp"),
        ]
    )
    body = (await http.get(URL, params={"q": "ĐẤT"})).json()
    assert external_ids(body) == {"land"}


async def test_items_carry_iso_dates_and_utc_times(http: httpx.AsyncClient, store: Store) -> None:
    received = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
    await store([make_dossier(received_at=received, source_updated_at=received)])
    (item,) = (await http.get(URL)).json()["items"]
    assert (item["received_at"], item["received_date"]) == ("2026-11-02T02:00:00Z", "2026-11-02")


@pytest.mark.parametrize(
    ("path", "params", "detail"),
    [
        ("/api/v1/records/dossiers", {}, "unknown record type 'dossiers'"),
        (URL, {"unit": "99999"}, "unknown unit code '99999'"),
    ],
    ids=["unknown-record-type", "unknown-unit"],
)
async def test_unknown_record_type_or_unit_is_a_404_with_a_message(
    http: httpx.AsyncClient, path: str, params: dict[str, str], detail: str
) -> None:
    response = await http.get(path, params=params)
    assert response.status_code == 404
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"colour": "red"}, "unknown filter 'colour' for dossier; filters are agency_code, "),
        ({"sort": "-colour"}, "cannot sort dossier by 'colour'; sortable columns are "),
        ({"time_column": "day"}, "time column 'day' is not a date column of dossier; choose "),
        (
            {"date_from": "2026-03-31", "date_to": "2026-03-01"},
            "date_from 2026-03-31 is after date_to 2026-03-01",
        ),
        ({"status": "late"}, "filter 'status' of dossier takes whole numbers, not 'late'"),
    ],
    ids=["unknown-filter", "unknown-sort", "foreign-time-column", "inverted-window", "bad-status"],
)
async def test_bad_parameter_is_a_422_whose_detail_names_the_problem(
    http: httpx.AsyncClient, params: dict[str, str], detail: str
) -> None:
    response = await http.get(URL, params=params)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"date_from": "March"}, "date_from"),
    ],
    ids=["limit-zero", "limit-too-big", "negative-offset", "not-a-date"],
)
async def test_malformed_parameter_is_a_422_pointing_at_it(
    http: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await http.get(URL, params=params)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field] and error["msg"]


async def test_a_large_listing_total_is_counted_once_for_its_pages(
    ctx: AppContext, store: Store
) -> None:
    app = create_app(ctx.settings)
    async with app.router.lifespan_context(app):
        app.state.ctx.record_totals.large = 3  # as if 3 were a large table
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            await store([make_dossier() for _ in range(3)])
            first = (await client.get(URL, params={"limit": 2})).json()
            await store([make_dossier()])
            second = (await client.get(URL, params={"limit": 2, "offset": 2})).json()
            commune = (await client.get(URL, params={"unit": BIEN_HOA})).json()
    assert (first["total"], second["total"]) == (3, 3)
    assert len(second["items"]) == 2  # the page itself is read now
    assert commune["total"] == 4
