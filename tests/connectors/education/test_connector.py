"""The education connector against its simulator over real HTTP: the JSON API and CSV URL."""

from __future__ import annotations

import socket
import time
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from connectors.education.connector import EducationConnector
from ioc.sdk import ConnectorAuthError, ConnectorRateLimited, ConnectorUnavailable
from tests.connectors.education.support import START, Upstream, poll_to_the_end, upstream

DAY = 86400


def versions(batches: list[Any]) -> list[tuple[str, datetime]]:
    return [(r.external_id, r.source_updated_at) for b in batches for r in b.records]


def truth_versions(source: Upstream) -> list[tuple[str, datetime]]:
    return [
        (f"{row['school_code']}:{row['date']}", datetime.fromisoformat(row["updated_at"]))
        for row in source.simulator.attendance_as_of(source.simulator.now())
    ]


# ---------------------------------------------------------------- JSON API


async def test_api_polls_read_every_current_row_once_page_by_page(source: Upstream) -> None:
    batches = await poll_to_the_end(source.api(page_size=400), {})
    truth = truth_versions(source)

    assert versions(batches) == truth
    assert len(batches) == -(-len(truth) // 400)
    assert all(b.rejected == [] for b in batches)
    assert [b.has_more for b in batches[-2:]] == [True, False]


async def test_api_cursor_never_goes_backwards_and_ends_at_the_last_update(
    source: Upstream,
) -> None:
    batches = await poll_to_the_end(source.api(page_size=500), {})
    truth = truth_versions(source)

    watermarks = [
        datetime.fromisoformat(b.cursor.get("high") or b.cursor["since"]) for b in batches
    ]
    assert watermarks == sorted(watermarks)
    assert batches[-1].cursor == {"since": truth[-1][1].astimezone(UTC).isoformat()}
    assert "page_token" in batches[0].cursor


async def test_api_poll_from_the_final_cursor_is_empty_and_keeps_it(source: Upstream) -> None:
    last = (await poll_to_the_end(source.api(page_size=1000), {}))[-1]

    [again] = await poll_to_the_end(source.api(), last.cursor)

    assert (again.fetched, again.has_more, again.cursor) == (0, False, last.cursor)


async def test_reports_and_corrections_after_the_clock_moves_arrive_in_the_next_poll(
    source: Upstream,
) -> None:
    first = await poll_to_the_end(source.api(page_size=1000), {})
    await source.advance(DAY)  # to Thursday 10:00: Wednesday's reports and some corrections
    later = await poll_to_the_end(source.api(page_size=1000), first[-1].cursor)

    records = [r for b in later for r in b.records]
    days = {r.day.isoformat() for r in records}
    assert "2025-11-19" in days  # Wednesday's afternoon reports
    assert days - {"2025-11-19"}  # corrections of earlier days of the week
    assert all(r.source_updated_at > START for r in records)
    assert later[-1].cursor["since"] > first[-1].cursor["since"]


async def test_watermark_never_passes_the_server_clock_at_the_start_of_the_run() -> None:
    item = {
        "school_code": "75200001",
        "school_name": "Trường Tiểu học Biên Hòa",
        "level": "tieu_hoc",
        "commune_code": "26068",
        "date": "2025-11-18",
        "enrolled": 630,
        "present": 614,
        "teachers": 28,
        "classes": 18,
        "updated_at": "2025-11-18T16:00:05+07:00",  # stamped after the server's clock below
    }
    body = {"items": [item], "next_page_token": None, "server_time": "2025-11-18T16:00:00+07:00"}
    connector = EducationConnector(EducationConnector.Config(source="api", base_url="http://so"))
    connector._client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    )

    [batch] = await poll_to_the_end(connector, {})

    assert batch.cursor == {"since": "2025-11-18T09:00:00+00:00"}


async def test_a_page_token_the_server_refuses_restarts_from_the_watermark(
    source: Upstream,
) -> None:
    since = "2025-11-18T00:00:00+00:00"
    stale = {"since": since, "page_token": "not-a-token", "ceiling": since, "high": since}

    batches = await poll_to_the_end(source.api(page_size=1000), stale)

    truth = [v for v in truth_versions(source) if v[1] > datetime.fromisoformat(since)]
    assert versions(batches) == truth


# ---------------------------------------------------------------- CSV exports at a URL


async def test_url_mode_reads_one_export_per_poll_as_the_listing_shows(source: Upstream) -> None:
    batches = await poll_to_the_end(source.exports(), {})
    listing = (await source.control.get("/exports/")).json()["files"]

    assert len(batches) == len(listing) == 4  # Friday 14, Saturday 15, Monday 17, Tuesday 18
    assert [b.records[0].day.isoformat() for b in batches] == [
        f["name"].removeprefix("attendance-").removesuffix(".csv") for f in listing
    ]
    assert batches[-1].cursor["files"] == {f["name"]: f["etag"] for f in listing}
    first = batches[0].records[0]
    assert first.source_updated_at == datetime.fromisoformat(listing[0]["last_modified"])
    rows = sum(len(b.records) for b in batches)
    assert rows == len(source.simulator.attendance_as_of(source.simulator.now()))


async def test_url_mode_reads_only_the_exports_regenerated_since(source: Upstream) -> None:
    done = (await poll_to_the_end(source.exports(), {}))[-1].cursor
    await source.advance(DAY)  # Wednesday's export, and corrected exports of earlier days

    later = await poll_to_the_end(source.exports(), done)

    names = sorted(later[-1].cursor["files"])
    changed = {b.records[0].day.isoformat() for b in later}
    assert "2025-11-19" in changed and len(changed) < len(names)
    assert all(
        b.records[0].source_updated_at == datetime(2025, 11, 19, 11, tzinfo=UTC) for b in later
    )


async def test_malformed_export_rows_are_rejected_with_line_numbers(source: Upstream) -> None:
    await source.faults(malformed=4)

    [batch] = [b for b in await poll_to_the_end(source.exports(), {})][:1]

    day = "2025-11-14"
    excel_serial = (date(2025, 11, 14) - date(1899, 12, 30)).days  # how Excel stores days
    reasons = [r.reason for r in batch.rejected]
    assert len(reasons) == 3
    assert reasons[0].startswith("attendance-2025-11-14.csv line 2: present (co_mat)")
    assert reasons[1] == (
        f"attendance-2025-11-14.csv line 4: date (ngay) '{excel_serial}' is not a valid "
        "yyyy-mm-dd or dd/mm/yyyy day"
    )
    assert reasons[2] == "attendance-2025-11-14.csv line 5: missing school code (ma_truong)"
    assert batch.records[0].unit_code == "99999"  # unknown communes are the ingest's to reject
    assert all(r.day.isoformat() == day for r in batch.records)


# ---------------------------------------------------------------- faults


async def test_malformed_api_rows_are_rejected_with_reasons_while_the_rest_map(
    source: Upstream,
) -> None:
    await source.faults(malformed=4)

    connector = source.api(page_size=50)
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()
    truth = source.simulator.attendance_as_of(source.simulator.now())[:50]
    written = "-".join(reversed(truth[2]["date"].split("-")))  # dd-mm-yyyy

    assert batch.fetched == 50
    assert [(r.external_id, r.reason) for r in batch.rejected] == [
        (
            f"{truth[0]['school_code']}:{truth[0]['date']}",
            f"present (present) {truth[0]['enrolled'] + 12} is more than enrolled (enrolled) "
            f"{truth[0]['enrolled']}",
        ),
        (None, f"date (date) {written!r} is not a valid yyyy-mm-dd or dd/mm/yyyy day"),
        (None, "missing school code (school_code)"),
    ]
    assert len(batch.records) == 47
    assert batch.records[0].unit_code == "99999"


@pytest.mark.parametrize("mode", ["api", "exports"])
async def test_server_error_raises_connector_unavailable(source: Upstream, mode: str) -> None:
    await source.faults(mode="error")
    connector = source.api() if mode == "api" else source.exports()

    with pytest.raises(ConnectorUnavailable, match="HTTP 500"):
        await poll_to_the_end(connector, {})


@pytest.mark.parametrize("mode", ["api", "exports"])
async def test_upstream_that_hangs_raises_connector_unavailable_after_the_timeout(
    source: Upstream, mode: str
) -> None:
    await source.faults(mode="timeout", timeout_seconds=5)
    options = {"timeout_seconds": 0.3}
    connector = source.api(**options) if mode == "api" else source.exports(**options)
    started = time.monotonic()

    with pytest.raises(ConnectorUnavailable, match=r"timed out after 0\.3s"):
        await poll_to_the_end(connector, {})
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("mode", ["api", "exports"])
async def test_rate_limit_raises_with_the_retry_after_delay(source: Upstream, mode: str) -> None:
    await source.faults(mode="rate_limited", retry_after_seconds=45)
    connector = source.api() if mode == "api" else source.exports()

    with pytest.raises(ConnectorRateLimited) as caught:
        await poll_to_the_end(connector, {})
    assert caught.value.retry_after == 45


async def test_slow_responses_still_succeed_within_the_timeout(source: Upstream) -> None:
    await source.faults(slow_seconds=0.3)
    connector = source.api(page_size=1000, timeout_seconds=5)
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()

    assert versions([batch]) == truth_versions(source)[:1000]


async def afternoon_of_polls(running: Upstream) -> list[tuple[str, datetime]]:
    """Versions read by polling every half hour through Wednesday's reporting afternoon."""
    cursor = (await poll_to_the_end(running.api(page_size=1000), {}))[-1].cursor
    await running.advance(4 * 3600)  # 14:00
    seen: list[tuple[str, datetime]] = []
    for _ in range(8):
        await running.advance(1800)
        batches = await poll_to_the_end(running.api(page_size=1000), cursor)
        seen += versions(batches)
        cursor = batches[-1].cursor
    return seen


async def test_surge_multiplies_the_updates_that_follow(source: Upstream) -> None:
    async with upstream() as calm:
        baseline = await afternoon_of_polls(calm)
    await source.faults(surge=4)

    surged = await afternoon_of_polls(source)

    assert len(surged) > 2 * len(baseline)
    assert {v[0] for v in surged} == {v[0] for v in baseline}


async def test_wrong_api_key_raises_auth_error_and_the_right_one_reads() -> None:
    async with upstream(api_key="s3cret", history_days=2) as running:
        with pytest.raises(ConnectorAuthError):
            await poll_to_the_end(running.api(api_key="guess"), {})
        with pytest.raises(ConnectorAuthError):
            await poll_to_the_end(running.exports(), {})
        assert versions(await poll_to_the_end(running.api(api_key="s3cret", page_size=1000), {}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("mode", ["api", "exports"])
async def test_unreachable_upstream_raises_connector_unavailable(mode: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config: dict[str, Any] = (
        {"source": "api", "base_url": url} if mode == "api" else {"source": "csv", "csv_url": url}
    )
    connector = EducationConnector(EducationConnector.Config(timeout_seconds=2, **config))

    with pytest.raises(ConnectorUnavailable, match="cannot reach"):
        await connector.check()
    with pytest.raises(ConnectorUnavailable, match="cannot reach"):
        await poll_to_the_end(connector, {})


async def test_check_passes_against_the_live_simulator(source: Upstream) -> None:
    for connector in (source.api(), source.exports()):
        try:
            await connector.check()
        finally:
            await connector.aclose()


async def test_same_seed_gives_the_same_records() -> None:
    async with upstream(history_days=2) as one, upstream(history_days=2) as two:
        first = await poll_to_the_end(one.api(page_size=1000), {})
        second = await poll_to_the_end(two.api(page_size=1000), {})
    async with upstream(history_days=2, seed=4) as other:
        third = await poll_to_the_end(other.api(page_size=1000), {})

    records = [r for b in first for r in b.records]
    assert records == [r for b in second for r in b.records]
    assert records != [r for b in third for r in b.records]
