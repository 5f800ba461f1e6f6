"""The Open311 connector: recorded payloads mapped, the poll plan, the simulator over HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.open311.connector import (
    GROUP_FIELD,
    Open311Connector,
    commune_index,
    groups_of_services,
    map_request,
    newest_per_request,
)
from connectors.open311.simulator import Simulator, create_app
from ioc.sdk import (
    Batch,
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorUnavailable,
    FeedbackReport,
    FeedbackStatus,
)
from tests.support.servers import serve_app

FIXTURES = Path(__file__).parent / "fixtures"
START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local
COMMUNES = commune_index(75)


def recorded(name: str) -> Any:
    """A payload recorded from the upstream API."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@dataclass
class Upstream:
    """A simulator on a local port, a client for its control endpoints, connectors for it."""

    simulator: Simulator
    url: str
    control: httpx.AsyncClient

    def connector(self, **config: Any) -> Open311Connector:
        settings = {"base_url": self.url, "jurisdiction_id": "dongnai.gov.vn"} | config
        return Open311Connector(Open311Connector.Config(**settings), clock=self.simulator.now)


@asynccontextmanager
async def upstream(**overrides: Any) -> AsyncIterator[Upstream]:
    options: dict[str, Any] = {"seed": 3, "history_days": 20, "start": START, "speed": 0}
    app = create_app(**(options | overrides))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as control:
        yield Upstream(app.state.simulator, url, control)


@pytest.fixture
async def source() -> AsyncIterator[Upstream]:
    async with upstream() as running:
        yield running


async def one_cycle(connector: Open311Connector, cursor: dict[str, Any]) -> list[Batch]:
    """Poll from `cursor` until has_more is false, closing the connector afterwards."""
    try:
        batches = [await connector.poll(cursor)]
        while batches[-1].has_more:
            batches.append(await connector.poll(batches[-1].cursor))
    finally:
        await connector.aclose()
    return batches


def ids_of(batches: list[Batch]) -> list[str]:
    return [r.external_id for b in batches for r in b.records] + [
        str(r.external_id) for b in batches for r in b.rejected
    ]


# ---------------------------------------------------------------- mapping


def test_recorded_closed_late_request_maps_to_exact_fields_in_utc() -> None:
    payload = recorded("request_closed_late.json") | {GROUP_FIELD: "Thoát nước đô thị"}

    assert map_request(payload, COMMUNES) == FeedbackReport(
        external_id="PAKN-251105-0051",
        unit_code="26068",
        source_updated_at=utc(2025, 11, 12, 7, 9, 20),
        service_code="MT02",
        service_name="Ngập nước, tắc cống thoát nước",
        category="Thoát nước đô thị",
        status=FeedbackStatus.CLOSED,
        status_notes=(
            "Đã xử lý xong: Đã đưa vào kế hoạch cải tạo tuyến cống, tạm thời bố trí bơm tiêu"
            " khi mưa."
        ),
        description=(
            "Mỗi khi mưa lớn đường Nguyễn Ái Quốc ngập sâu 40–50 cm, nước tràn vào nhà dân."
        ),
        agency="Sở Xây dựng",
        requested_at=utc(2025, 11, 5, 10, 11, 55),
        expected_at=utc(2025, 11, 10, 10, 0, 0),
        closed_at=utc(2025, 11, 12, 7, 9, 20),
        address="Số 74, đường Nguyễn Ái Quốc, khu phố 4, Phường Biên Hòa, Đồng Nai",
        latitude=10.95654,
        longitude=106.858564,
    )


def test_request_without_ward_code_takes_the_commune_its_address_names() -> None:
    payload = recorded("request_open_without_ward_code.json")  # "xã Phú Hoà": old tone style

    report = map_request(payload, COMMUNES)

    assert report.unit_code == "26221"  # Xã Phú Hòa
    assert (report.status, report.closed_at) == (FeedbackStatus.OPEN, None)
    assert report.source_updated_at == utc(2025, 11, 11, 1, 34, 53)
    assert report.expected_at == utc(2025, 11, 21, 10, 0, 0)
    assert report.category == ""  # no service list was read


def test_service_groups_come_from_the_service_list() -> None:
    groups = groups_of_services(recorded("services.json"))

    assert groups["MT02"] == "Thoát nước đô thị"
    assert groups["GT01"] == groups["GT02"] == "Hạ tầng giao thông"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"service_request_id": None}, "missing service_request_id", id="no-id"),
        pytest.param(
            {"requested_datetime": "2025-11-05T17:11:55"},
            "requested_datetime '2025-11-05T17:11:55' has no UTC offset",
            id="naive-time",
        ),
        pytest.param(
            {"expected_datetime": "15 ngày"},
            "expected_datetime '15 ngày' is not an ISO 8601 time",
            id="bad-time",
        ),
        pytest.param(
            {"status": "pending"}, "unknown status 'pending' (expected open or closed)", id="status"
        ),
        pytest.param({"service_code": ""}, "missing service_code", id="no-service-code"),
        pytest.param(
            {"updated_datetime": None},
            "a closed request needs updated_datetime (its closing time)",
            id="closed-without-time",
        ),
        pytest.param(
            {"updated_datetime": "2025-11-01T08:00:00+07:00"},
            "closed before it was requested",
            id="closed-before-requested",
        ),
        pytest.param(
            {"ward_code": "2606"}, "ward_code '2606' is not a 5-digit commune code", id="ward"
        ),
        pytest.param({"lat": "mười một"}, "lat 'mười một' is not a number", id="lat-words"),
        pytest.param(
            {"ward_code": None, "address": "Km 12+300 Quốc lộ 20, Đồng Nai"},
            "no ward_code, and the address names no commune of Đồng Nai: "
            "'Km 12+300 Quốc lộ 20, Đồng Nai'",
            id="unlocated",
        ),
        pytest.param(
            {"ward_code": None, "address": ""},
            "no ward_code and no address to find the commune in",
            id="no-address",
        ),
        pytest.param(
            {"ward_code": None, "address": "Ranh giới Phường Trấn Biên và Phường Tam Hiệp"},
            "the address names more than one commune (Phường Tam Hiệp, Phường Trấn Biên): "
            "'Ranh giới Phường Trấn Biên và Phường Tam Hiệp'",
            id="two-communes",
        ),
    ],
)
def test_unusable_payload_is_rejected_with_a_readable_reason(
    change: dict[str, Any], reason: str
) -> None:
    payload = recorded("request_closed_late.json") | change
    connector = Open311Connector(
        Open311Connector.Config(base_url="http://x", jurisdiction_id="dongnai.gov.vn")
    )

    batch = Batch.from_payloads(
        [payload], connector.parse, cursor={}, id_field="service_request_id"
    )

    assert batch.records == []
    assert [r.reason for r in batch.rejected] == [reason]


@pytest.mark.parametrize(
    ("address", "code"),
    [
        pytest.param("12 Phạm Văn Thuận, P. Trấn Biên, Đồng Nai", "26041", id="abbreviated"),
        pytest.param("ấp 2, XÃ LONG THÀNH", "26368", id="upper-case"),
        pytest.param("Chợ Tân An, xã Tân An, Đồng Nai", "26179", id="lower-case"),
    ],
)
def test_commune_names_are_found_whatever_the_spelling(address: str, code: str) -> None:
    assert COMMUNES.resolve(address) == code


def test_the_newest_version_of_a_repeated_request_wins() -> None:
    old = {"service_request_id": "A", "updated_datetime": "2025-11-19T08:00:00+07:00"}
    new = {"service_request_id": "A", "updated_datetime": "2025-11-19T09:00:00+07:00"}
    anonymous = {"updated_datetime": "2025-11-19T09:00:00+07:00"}

    assert newest_per_request([old, anonymous, new, old]) == [new, anonymous]


# ---------------------------------------------------------------- plan and config


def test_a_cycle_plans_open_chunks_the_window_and_one_rotating_sweep_chunk() -> None:
    connector = Open311Connector(
        Open311Connector.Config(base_url="http://x", jurisdiction_id="dongnai.gov.vn")
    )

    plan = connector.plan(START, 0)
    later = connector.plan(START, 1)

    opens = [c for c in plan if c.phase == "open"]
    window = [c for c in plan if c.phase == "window"]
    [sweep] = [c for c in plan if c.phase == "sweep"]
    assert [c.phase for c in plan] == ["open"] * 5 + ["window"] * 5 + ["sweep"]
    assert opens[0].end == START and opens[-1].start == START - timedelta(days=365)
    assert all(c.end - c.start <= timedelta(days=90) for c in opens)
    assert all(a.start == b.end for a, b in pairwise(opens))
    assert window[0].start == START - timedelta(days=30) and window[-1].end == START
    assert all(a.end == b.start for a, b in pairwise(window))
    assert {c.status for c in window} == {sweep.status} == {"closed"}
    assert sweep.end <= window[0].start
    assert later[-1].end == sweep.start  # the next cycle sweeps the chunk before


def test_config_refuses_a_long_window_a_short_lookback_and_an_unknown_province() -> None:
    base = {"base_url": "http://x", "jurisdiction_id": "dongnai.gov.vn"}
    with pytest.raises(ValidationError):
        Open311Connector.Config(**base, window_days=91)
    with pytest.raises(ValidationError, match="open_lookback_days"):
        Open311Connector.Config(**base, window_days=60, open_lookback_days=30)
    with pytest.raises(ValidationError):
        Open311Connector.Config(base_url="http://x")
    with pytest.raises(ValidationError, match="province_code"):
        Open311Connector.Config(**base, province_code=99)
    config = Open311Connector.Config(**base, api_key="s3cret")
    assert "s3cret" not in config.model_dump_json()


# ---------------------------------------------------------------- polls over HTTP


async def test_a_cycle_reads_every_current_request_once(source: Upstream) -> None:
    batches = await one_cycle(source.connector(), {})
    truth = source.simulator.requests_as_of()

    ids = ids_of(batches)
    assert sorted(ids) == sorted(r["service_request_id"] for r in truth)
    assert len(ids) == len(set(ids))
    unlocated = [r for r in truth if "ward_code" not in r and r["address"].startswith("Km")]
    assert sum(len(b.rejected) for b in batches) == len(unlocated) > 0
    assert [b.has_more for b in batches] == [True] * (len(batches) - 1) + [False]
    assert all(r.category for b in batches for r in b.records)


async def test_cursor_never_goes_backwards_and_a_new_cycle_follows_the_last_chunk(
    source: Upstream,
) -> None:
    connector = source.connector()
    first = await one_cycle(connector, {})
    again = await connector.poll(first[-1].cursor)
    await connector.aclose()

    order = ["open", "window", "sweep", "done"]
    keys = [(b.cursor["cycle"], order.index(b.cursor["phase"]), b.cursor["chunk"]) for b in first]
    assert keys == sorted(set(keys))
    assert first[-1].cursor["phase"] == "done"
    assert again.cursor["cycle"] == 1
    assert again.cursor["anchor"] >= first[-1].cursor["anchor"]


async def test_changes_after_the_clock_advances_arrive_in_the_next_cycle(
    source: Upstream,
) -> None:
    first = await one_cycle(source.connector(), {})
    await source.control.post("/_sim/advance", json={"seconds": 2 * 86400})
    later = await one_cycle(source.connector(), first[-1].cursor)
    truth = {r["service_request_id"]: r for r in source.simulator.requests_as_of()}

    before = {r.external_id: r for b in first for r in b.records}
    after = {r.external_id: r for b in later for r in b.records}
    closed_since = [
        i for i, r in before.items() if r.status == "open" and after[i].status != "open"
    ]
    new = set(after) - set(before)
    assert later[0].cursor["anchor"] == "2025-11-21T10:00:00+07:00"
    assert len(closed_since) > 20 and len(new) > 50
    assert all(after[i].source_updated_at > START for i in closed_since)
    assert all(r.status == truth[i]["status"] for i, r in after.items())


async def test_answers_at_the_upstream_cap_are_split_until_complete() -> None:
    async with upstream(max_results=40) as running:
        batches = await one_cycle(running.connector(max_results=40), {})
        truth = running.simulator.requests_as_of()

    ids = ids_of(batches)
    assert sorted(ids) == sorted(r["service_request_id"] for r in truth)
    assert max(b.fetched for b in batches) > 40


async def test_malformed_requests_are_rejected_with_reasons_while_the_rest_map(
    source: Upstream,
) -> None:
    await source.control.post("/_sim/faults", json={"malformed": 5})
    connector = source.connector()
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()
    truth = [r for r in source.simulator.requests_as_of() if r["status"] == "open"]

    reasons = [r.reason for r in batch.rejected]
    assert batch.fetched == len(truth)
    assert reasons[:5] == [
        "missing service_request_id",
        f"requested_datetime {truth[1]['requested_datetime'][:19]!r} has no UTC offset",
        "unknown status 'pending' (expected open or closed)",
        "no ward_code, and the address names no commune of Đồng Nai: 'Gần chợ, ven đường lớn'",
        "lat 'mười một độ bắc' is not a number",
    ]
    assert len(batch.records) == batch.fetched - len(reasons)


async def test_server_error_raises_connector_unavailable(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"mode": "error"})
    connector = source.connector()
    try:
        with pytest.raises(ConnectorUnavailable, match="HTTP 500"):
            await connector.poll({})
    finally:
        await connector.aclose()


async def test_upstream_timeout_raises_connector_unavailable(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"mode": "timeout", "timeout_seconds": 5})
    connector = source.connector(timeout_seconds=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectorUnavailable, match=r"timed out after 0\.3s"):
            await connector.poll({})
    finally:
        await connector.aclose()
    assert time.monotonic() - started < 2


async def test_rate_limit_raises_with_the_retry_after_delay(source: Upstream) -> None:
    await source.control.post(
        "/_sim/faults", json={"mode": "rate_limited", "retry_after_seconds": 45}
    )
    connector = source.connector()
    try:
        with pytest.raises(ConnectorRateLimited) as caught:
            await connector.poll({})
    finally:
        await connector.aclose()
    assert caught.value.retry_after == 45


async def test_slow_upstream_still_answers_within_the_timeout(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"slow_seconds": 0.2})
    connector = source.connector(timeout_seconds=2)
    started = time.monotonic()
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()
    assert batch.records
    assert time.monotonic() - started >= 0.4  # the service list and one chunk


async def test_a_surge_brings_more_new_requests_into_the_window() -> None:
    counts = []
    for surge in (1, 4):
        async with upstream(history_days=1) as running:
            await running.control.post("/_sim/faults", json={"surge": surge})
            await running.control.post("/_sim/advance", json={"seconds": 86400})
            batches = await one_cycle(running.connector(window_days=2, open_lookback_days=2), {})
        counts.append(sum(r.requested_at > START for b in batches for r in b.records))

    assert counts[0] > 30
    assert counts[1] > 3 * counts[0]


async def test_api_key_goes_in_the_query_and_a_missing_or_wrong_one_raises_auth_error() -> None:
    async with upstream(api_key="s3cret", history_days=2) as running:
        for key, status in ((None, 401), ("guess", 403)):
            connector = running.connector(api_key=key)
            try:
                with pytest.raises(ConnectorAuthError, match=f"HTTP {status}") as caught:
                    await connector.poll({})
            finally:
                await connector.aclose()
            assert "guess" not in str(caught.value)
        batches = await one_cycle(running.connector(api_key="s3cret"), {})
    assert sum(len(b.records) for b in batches) > 50


async def test_wrong_jurisdiction_raises_connector_error_with_the_upstream_description(
    source: Upstream,
) -> None:
    connector = source.connector(jurisdiction_id="hanoi.gov.vn")
    try:
        with pytest.raises(ConnectorError, match=r"'hanoi\.gov\.vn' is not served here") as caught:
            await connector.poll({})
    finally:
        await connector.aclose()
    assert not isinstance(caught.value, ConnectorUnavailable | ConnectorAuthError)


async def test_check_passes_on_a_healthy_upstream(source: Upstream) -> None:
    connector = source.connector()
    try:
        await connector.check()
    finally:
        await connector.aclose()


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


async def test_unreachable_upstream_raises_connector_unavailable(closed_port: int) -> None:
    connector = Open311Connector(
        Open311Connector.Config(
            base_url=f"http://127.0.0.1:{closed_port}", jurisdiction_id="dongnai.gov.vn"
        )
    )
    try:
        with pytest.raises(ConnectorUnavailable, match="cannot reach"):
            await connector.poll({})
    finally:
        await connector.aclose()
