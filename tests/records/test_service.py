"""Record reads: unit, time window, filters, text, sort and paging, and their errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import ColumnElement, text

from ioc.context import AppContext
from ioc.records.models import DossierRow
from ioc.records.schemas import Page
from ioc.records.service import (
    InvalidRecordQuery,
    RecordQuery,
    UnknownRecordType,
    UnknownUnit,
    order_by_clauses,
    query_records,
    records_select,
)
from ioc.records.totals import TotalsCache
from ioc.sdk import DossierStatus, FeedbackReport, FeedbackStatus
from tests.faults.conftest import eventually
from tests.records.conftest import Store, dossier_due
from tests.support.factories import BIEN_HOA, TRAN_BIEN, make_dossier

PROVINCE = "75"
MARCH_1, MARCH_31 = date(2026, 3, 1), date(2026, 3, 31)


async def ask(
    ctx: AppContext,
    record_type: str = "dossier",
    *,
    extra_conditions: tuple[ColumnElement[bool], ...] = (),
    **fields: Any,
) -> Page:
    async with ctx.sessionmaker() as session:
        query = RecordQuery(record_type=record_type, **fields)
        return await query_records(session, query, extra_conditions=extra_conditions)


def external_ids(page: Page) -> set[str]:
    return {item["external_id"] for item in page.items}


async def test_province_unit_covers_the_records_of_all_its_communes(
    ctx: AppContext, store: Store
) -> None:
    await store([make_dossier(external_id="BH", unit_code=BIEN_HOA)])
    await store([make_dossier(external_id="TB", unit_code=TRAN_BIEN)])
    page = await ask(ctx, unit=PROVINCE)
    assert external_ids(page) == {"BH", "TB"}


async def test_commune_unit_keeps_only_its_own_records(ctx: AppContext, store: Store) -> None:
    await store(
        [
            make_dossier(external_id="BH", unit_code=BIEN_HOA),
            make_dossier(external_id="TB", unit_code=TRAN_BIEN),
        ]
    )
    page = await ask(ctx, unit=TRAN_BIEN)
    assert external_ids(page) == {"TB"}


async def test_unit_field_and_due_date_window_combine(ctx: AppContext, store: Store) -> None:
    await store(
        [
            dossier_due(date(2026, 3, 10), external_id="wanted", unit_code=BIEN_HOA),
            dossier_due(date(2026, 3, 10), external_id="other-commune", unit_code=TRAN_BIEN),
            dossier_due(date(2026, 3, 10), external_id="other-field", field_code="TP"),
            dossier_due(date(2026, 4, 2), external_id="due-in-april", unit_code=BIEN_HOA),
        ]
    )
    page = await ask(
        ctx,
        unit=BIEN_HOA,
        time_column="due_date",
        date_from=MARCH_1,
        date_to=MARCH_31,
        filters={"field_code": ["DD"]},
    )
    assert external_ids(page) == {"wanted"}


async def test_time_window_includes_both_of_its_local_end_days(
    ctx: AppContext, store: Store
) -> None:
    # Due 2026-03-31 20:00 UTC is 2026-04-01 03:00 in Asia/Ho_Chi_Minh: outside March.
    late_evening = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)
    await store(
        [
            dossier_due(date(2026, 2, 28), external_id="feb-28"),
            dossier_due(MARCH_1, external_id="mar-01"),
            dossier_due(MARCH_31, external_id="mar-31"),
            dossier_due(MARCH_31, external_id="apr-01-local", due_at=late_evening),
        ]
    )
    page = await ask(ctx, time_column="due_date", date_from=MARCH_1, date_to=MARCH_31)
    assert external_ids(page) == {"mar-01", "mar-31"}


async def test_time_window_defaults_to_the_types_main_date_column(
    ctx: AppContext, store: Store
) -> None:
    # Received 2026-03-05 and due 2026-03-10: a window on received_date finds it by receipt.
    await store([dossier_due(date(2026, 3, 10), external_id="received-march-5")])
    assert external_ids(await ask(ctx, date_from=date(2026, 3, 5), date_to=date(2026, 3, 5)))
    assert not external_ids(await ask(ctx, date_from=date(2026, 3, 10), date_to=date(2026, 3, 10)))


async def test_filter_with_several_values_matches_any_of_them(
    ctx: AppContext, store: Store
) -> None:
    await store(
        [
            make_dossier(external_id="land", field_code="DD"),
            make_dossier(external_id="justice", field_code="TP"),
            make_dossier(external_id="civil", field_code="HT"),
        ]
    )
    page = await ask(ctx, filters={"field_code": ["DD", "HT"]})
    assert external_ids(page) == {"land", "civil"}


async def test_numeric_status_filter_accepts_values_given_as_text(
    ctx: AppContext, store: Store
) -> None:
    resolved = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    await store(
        [
            make_dossier(external_id="open"),
            make_dossier(external_id="done", status=DossierStatus.PROCESSED, resolved_at=resolved),
        ]
    )
    page = await ask(ctx, filters={"status": [str(DossierStatus.PROCESSED.value)]})
    assert external_ids(page) == {"done"}


async def test_total_counts_every_match_while_items_hold_one_page(
    ctx: AppContext, store: Store
) -> None:
    await store([make_dossier() for _ in range(7)])
    page = await ask(ctx, limit=3, offset=6)
    assert (page.total, len(page.items), page.limit, page.offset) == (7, 1, 3, 6)


@pytest.mark.parametrize(
    "sort",
    [("due_date",), ("-due_date",), ("field_code",), ("-agency_code", "due_date"), ("-id",)],
    ids=["due-asc", "due-desc", "field-ties", "agency-desc-then-due", "id-desc"],
)
async def test_paging_through_any_sort_returns_every_record_exactly_once(
    ctx: AppContext, store: Store, sort: tuple[str, ...]
) -> None:
    # Few distinct values, so most rows tie on the sort column and only the id tiebreak orders them.
    await store(
        [
            dossier_due(
                date(2026, 3, 1 + n % 3),
                field_code=("DD", "TP")[n % 2],
                agency_code=("SNNMT", "STP", "UBND")[n % 3],
            )
            for n in range(11)
        ]
    )
    whole = await ask(ctx, sort=sort, limit=500)
    paged: list[int] = []
    for offset in range(0, 11, 4):
        page = await ask(ctx, sort=sort, limit=4, offset=offset)
        assert page.total == 11
        paged.extend(item["id"] for item in page.items)
    assert paged == [item["id"] for item in whole.items]
    assert len(set(paged)) == 11


async def test_descending_sort_reverses_the_ascending_order(ctx: AppContext, store: Store) -> None:
    await store([dossier_due(date(2026, 3, day)) for day in (5, 1, 9, 1, 5)])
    ascending = await ask(ctx, sort=["due_date"])
    descending = await ask(ctx, sort=["-due_date"])
    assert [i["due_date"] for i in ascending.items] == sorted(
        i["due_date"] for i in ascending.items
    )
    assert [i["id"] for i in descending.items] == [i["id"] for i in reversed(ascending.items)]


@pytest.mark.parametrize("sort", ["resolved_date", "-resolved_date"], ids=["asc", "desc"])
async def test_records_without_a_value_sort_last_either_way(
    ctx: AppContext, store: Store, sort: str
) -> None:
    resolved = datetime(2026, 11, 4, 2, 0, tzinfo=UTC)
    await store(
        [
            make_dossier(external_id="open"),
            make_dossier(external_id="done", status=DossierStatus.PROCESSED, resolved_at=resolved),
        ]
    )
    page = await ask(ctx, sort=[sort])
    assert [item["external_id"] for item in page.items] == ["done", "open"]


async def test_default_order_is_newest_first_by_the_types_main_date_column(
    ctx: AppContext, store: Store
) -> None:
    await store([dossier_due(date(2026, 3, day), external_id=f"d{day}") for day in (7, 20, 12)])
    page = await ask(ctx)
    assert [item["external_id"] for item in page.items] == ["d20", "d12", "d7"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("record_type", "sort"),
    [("dossier", None), ("dossier", "received_date"), ("feedback", None)],
    ids=["dossiers-newest-first", "dossiers-oldest-first", "feedback-newest-first"],
)
async def test_a_page_in_the_default_date_order_is_read_from_an_index_not_sorted(
    ctx: AppContext, record_type: str, sort: str | None
) -> None:
    query = RecordQuery(record_type=record_type, sort=[sort] if sort else [], limit=20)
    statement = records_select(query).order_by(*order_by_clauses(query)).limit(20)
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(text("SET LOCAL enable_sort = off"))  # a sort only if unavoidable
        sql = statement.compile(session.bind, compile_kwargs={"literal_binds": True})
        plan = "\n".join((await session.scalars(text(f"EXPLAIN {sql}"))).all())
    assert "Sort" not in plan, plan
    assert "_date_id" in plan, plan


@pytest.mark.parametrize(
    "q", ["đất đai", "ĐẤT ĐAI", "Đất Đai", "dat dai"], ids=["lower", "upper", "title", "no-marks"]
)
async def test_text_search_finds_vietnamese_names_whatever_their_case(
    ctx: AppContext, store: Store, q: str
) -> None:
    await store(
        [
            make_dossier(
                external_id="land", procedure_name="Cấp giấy chứng nhận", field_name="Đất đai"
            ),
            make_dossier(
                external_id="justice", procedure_name="Chứng thực bản sao", field_name="Tư pháp"
            ),
        ]
    )
    page = await ask(ctx, q=q)
    expected = set() if q == "dat dai" else {"land"}  # diacritics are letters, not decoration
    assert external_ids(page) == expected


async def test_text_search_treats_percent_and_underscore_as_plain_characters(
    ctx: AppContext, store: Store
) -> None:
    await store(
        [
            make_dossier(external_id="rate", procedure_name="Giảm 50% lệ phí"),
            make_dossier(external_id="plain", procedure_name="Giảm 500 lệ phí"),
        ]
    )
    assert external_ids(await ask(ctx, q="50%")) == {"rate"}
    assert external_ids(await ask(ctx, q="_")) == set()


async def test_extra_conditions_narrow_the_result_to_a_kpi_cells_records(
    ctx: AppContext, store: Store
) -> None:
    await store(
        [
            dossier_due(date(2026, 3, 10), external_id="apologised", apology_issued=True),
            dossier_due(date(2026, 3, 10), external_id="silent"),
            dossier_due(date(2026, 4, 10), external_id="april", apology_issued=True),
        ]
    )
    # The KPI engine adds its formula's own condition to the cell's unit and period.
    page = await ask(
        ctx,
        time_column="due_date",
        date_from=MARCH_1,
        date_to=MARCH_31,
        extra_conditions=(DossierRow.apology_issued.is_(True),),
    )
    assert external_ids(page) == {"apologised"} and page.total == 1


async def test_items_are_json_safe_dicts_of_every_column(ctx: AppContext, store: Store) -> None:
    await store([make_dossier(external_id="H-1")])
    (item,) = (await ask(ctx)).items
    json.dumps(item)
    assert item["received_at"] == "2026-11-02T02:00:00Z"
    assert item["received_date"] == "2026-11-02"
    assert item["status"] == DossierStatus.PROCESSING.value
    assert item["field_name"] == "Đất đai" and item["supplements"] == []


async def test_other_record_types_are_read_with_their_own_filters(
    ctx: AppContext, store: Store
) -> None:
    requested = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)
    closed = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)
    await store(
        [
            FeedbackReport(
                external_id="pothole",
                unit_code=TRAN_BIEN,
                service_code="ROAD",
                description="Ổ gà trên đường Võ Thị Sáu",
                status=FeedbackStatus.OPEN,
                requested_at=requested,
                source_updated_at=requested,
            ),
            FeedbackReport(
                external_id="fixed",
                unit_code=TRAN_BIEN,
                service_code="ROAD",
                description="Ổ gà đã vá",
                status=FeedbackStatus.CLOSED,
                requested_at=requested,
                closed_at=closed,
                source_updated_at=closed,
            ),
        ]
    )
    page = await ask(
        ctx, "feedback", unit=PROVINCE, filters={"status": ["open"]}, q="ổ gà", date_from=MARCH_1
    )
    assert external_ids(page) == {"pothole"}


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"record_type": "dossiers"}, UnknownRecordType, "unknown record type 'dossiers'"),
        ({"filters": {"colour": ["red"]}}, InvalidRecordQuery, "unknown filter 'colour'"),
        ({"filters": {"unit_code": ["26068"]}}, InvalidRecordQuery, "unknown filter 'unit_code'"),
        ({"filters": {"status": ["late"]}}, InvalidRecordQuery, "takes whole numbers"),
        ({"sort": ["-colour"]}, InvalidRecordQuery, "cannot sort dossier by 'colour'"),
        ({"sort": ["supplements"]}, InvalidRecordQuery, "cannot sort dossier by 'supplements'"),
        ({"time_column": "day"}, InvalidRecordQuery, "'day' is not a date column of dossier"),
        (
            {"date_from": date(2026, 3, 2), "date_to": date(2026, 3, 1)},
            InvalidRecordQuery,
            "date_from 2026-03-02 is after date_to 2026-03-01",
        ),
        ({"limit": 0}, InvalidRecordQuery, "limit must be between 1 and 500"),
        ({"limit": 501}, InvalidRecordQuery, "limit must be between 1 and 500"),
        ({"offset": -1}, InvalidRecordQuery, "offset must be 0 or more"),
    ],
    ids=[
        "unknown-type",
        "unknown-filter",
        "unfilterable-column",
        "non-numeric-status",
        "unknown-sort",
        "json-sort",
        "time-column-of-another-type",
        "inverted-window",
        "limit-zero",
        "limit-too-big",
        "negative-offset",
    ],
)
def test_bad_query_is_refused_with_a_message_naming_the_problem(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RecordQuery(**{"record_type": "dossier", **fields})


async def test_unknown_unit_is_refused_with_its_code(ctx: AppContext) -> None:
    with pytest.raises(UnknownUnit, match="unknown unit code '99999'"):
        await ask(ctx, unit="99999")


async def test_a_large_total_is_reused_by_queries_matching_the_same_records(
    ctx: AppContext, store: Store
) -> None:
    """A listing's total at or above the cache's `large` is counted once per `ttl_seconds`,
    shared by every page and sort of the same query (and answered for as long again while it is
    counted anew); other queries count their own."""
    now = [0.0]
    totals = TotalsCache(large=3, ttl_seconds=10, clock=lambda: now[0])
    await store([make_dossier(unit_code=BIEN_HOA) for _ in range(3)])

    async def total(**fields: Any) -> int:
        async with ctx.sessionmaker() as session:
            query = RecordQuery(record_type="dossier", **fields)
            return (await query_records(session, query, totals=totals)).total

    assert await total() == 3
    await store([make_dossier(unit_code=BIEN_HOA)])
    assert await total(offset=2, sort="-due_at", limit=1) == 3  # the same records: remembered
    assert await total(unit=BIEN_HOA) == 4  # other records: counted
    now[0] = 10.0
    assert await total() == 3  # its time is up: answered while counted again apart

    async def recounted() -> bool:
        return await total() == 4

    await eventually(recounted)
    await store([make_dossier(unit_code=BIEN_HOA)])
    now[0] = 30.0
    assert await total() == 5  # past its stale time too: counted before answering


async def test_a_small_total_or_a_drill_down_s_is_always_counted(
    ctx: AppContext, store: Store
) -> None:
    totals = TotalsCache(large=3, clock=lambda: 0.0)
    await store([make_dossier(external_id="first")])

    async def total(extra_conditions: tuple[ColumnElement[bool], ...] = ()) -> int:
        async with ctx.sessionmaker() as session:
            query = RecordQuery(record_type="dossier")
            page = await query_records(
                session, query, totals=totals, extra_conditions=extra_conditions
            )
            return page.total

    assert await total() == 1
    await store([make_dossier(), make_dossier()])
    assert await total() == 3  # 1 was small: counted again
    everything = (DossierRow.id > 0,)
    assert await total(everything) == 3
    await store([make_dossier()])
    assert await total(everything) == 4  # with extra conditions: never remembered
