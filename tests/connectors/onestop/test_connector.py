"""The one-stop-shop connector: recorded payloads mapped, the simulator polled over HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.onestop.connector import OnestopConnector, map_dossier, next_cursor
from connectors.onestop.simulator import Simulator, create_app
from ioc.sdk import (
    Batch,
    Channel,
    ConnectorAuthError,
    ConnectorRateLimited,
    ConnectorUnavailable,
    Dossier,
    DossierStatus,
    SupplementRequest,
)
from ioc.testing import poll_to_exhaustion
from tests.support.servers import serve_app

FIXTURES = Path(__file__).parent / "fixtures"
START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local


def recorded(name: str) -> dict[str, Any]:
    """A dossier payload recorded from the upstream API."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@dataclass
class Upstream:
    """A simulator running on a local port, a client for its control endpoints, a connector."""

    simulator: Simulator
    url: str
    control: httpx.AsyncClient

    def connector(self, **config: Any) -> OnestopConnector:
        return OnestopConnector(OnestopConnector.Config(base_url=self.url, **config))


@asynccontextmanager
async def upstream(**overrides: Any) -> AsyncIterator[Upstream]:
    options: dict[str, Any] = {
        "seed": 3,
        "rate_per_day": 60,
        "history_days": 10,
        "start": START,
        "speed": 0,
    }
    app = create_app(**(options | overrides))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as control:
        yield Upstream(app.state.simulator, url, control)


@pytest.fixture
async def source() -> AsyncIterator[Upstream]:
    async with upstream() as running:
        yield running


async def poll_to_the_end(connector: OnestopConnector, cursor: dict[str, Any]) -> list[Batch]:
    """Every page from `cursor` until the upstream says there is no more (the kit's walk)."""
    return (await poll_to_exhaustion(connector, cursor)).pages


# ---------------------------------------------------------------- mapping


def test_recorded_late_dossier_maps_to_exact_fields_in_utc() -> None:
    dossier = map_dossier(recorded("dossier_returned_late.json"))

    assert dossier == Dossier(
        external_id="033.00.99.H75-251020-0001",
        unit_code="26359",
        source_updated_at=utc(2025, 11, 13, 9, 19, 43),
        procedure_code="1.004206",
        procedure_name="Chuyển mục đích sử dụng đất phải được phép của cơ quan nhà nước",
        field_code="G09-TN01",
        field_name="Đất đai",
        agency_code="033.00.99.H75",
        agency_name="UBND xã Xuân Đông",
        channel=Channel.DIRECT,
        status=DossierStatus.RETURNED,
        received_at=utc(2025, 10, 20, 1, 45, 5),
        due_at=utc(2025, 11, 12, 10, 0, 0),
        resolved_at=utc(2025, 11, 13, 3, 24, 3),
        returned_at=utc(2025, 11, 13, 9, 19, 43),
        fee=50_000,
        paid_online=False,
        digitised=True,
        reused_national_data=False,
        electronic_result=False,
        synced_to_portal=True,
        apology_issued=True,
        supplements=(
            SupplementRequest(
                previous_due_at=utc(2025, 11, 10, 10, 0, 0),
                new_due_at=utc(2025, 11, 12, 10, 0, 0),
            ),
        ),
    )


def test_recorded_open_online_dossier_maps_channel_payment_and_absent_dates() -> None:
    dossier = map_dossier(recorded("dossier_online_open.json"))

    assert (dossier.channel, dossier.status, dossier.paid_online) == (
        Channel.ONLINE,
        DossierStatus.PROCESSING,
        True,
    )
    assert dossier.received_at == utc(2025, 10, 21, 1, 12, 13)
    assert dossier.due_at == utc(2025, 11, 25, 10, 0, 0)
    assert (dossier.resolved_at, dossier.returned_at) == (None, None)
    assert dossier.is_open


def test_recorded_dossier_from_an_older_system_maps_documents_result_and_old_commune() -> None:
    dossier = map_dossier(recorded("dossier_legacy_commune_documents.json"))

    assert (dossier.unit_code, dossier.original_unit_code) == ("25363", "25381")
    assert (dossier.fee, dossier.paid_online, dossier.synced_to_portal) == (100_000, True, False)
    assert (dossier.digitised, dossier.reused_national_data) == (False, True)
    assert dossier.electronic_result  # a result file link, though CoKetQuaDienTu is false
    assert dossier.supplements == (
        SupplementRequest(
            requested_at=utc(2025, 11, 5, 3, 3, 12),
            previous_due_at=utc(2025, 11, 17, 10, 0, 0),
            new_due_at=utc(2025, 11, 24, 10, 0, 0),
        ),
    )


@pytest.mark.parametrize(
    ("sent", "current"),
    [
        pytest.param("25381", "25363", id="tan-lap-dong-phu-binh-phuoc-to-dong-phu"),
        pytest.param("26356", "26359", id="xuan-tay-cam-my-to-xuan-dong"),
        pytest.param("25333", "25336", id="an-loc-whose-code-changed"),
    ],
)
def test_old_commune_code_maps_to_the_current_commune_and_keeps_the_original(
    sent: str, current: str
) -> None:
    payload = recorded("dossier_returned_late.json") | {"MaDiaBan": sent}

    dossier = map_dossier(payload)

    assert (dossier.unit_code, dossier.original_unit_code) == (current, sent)


def test_current_commune_code_is_left_untouched() -> None:
    dossier = map_dossier(recorded("dossier_returned_late.json"))

    assert (dossier.unit_code, dossier.original_unit_code) == ("26359", None)


def test_a_dossier_is_digitised_only_when_every_document_is() -> None:
    form = {"TenGiayTo": "Đơn đề nghị (tờ khai)", "DuocSoHoa": True, "DuocLayTuKhoDMQG": False}
    card = {"TenGiayTo": "Căn cước công dân", "DuocSoHoa": True, "DuocLayTuKhoDMQG": False}
    payload = recorded("dossier_online_open.json")

    complete = map_dossier(payload | {"DanhSachGiayTo": [form, card]})
    on_paper = map_dossier(payload | {"DanhSachGiayTo": [form, card | {"DuocSoHoa": False}]})

    assert (complete.digitised, complete.reused_national_data) == (True, False)
    assert on_paper.digitised is False  # though the dossier-level DuocSoHoa says true


def test_parse_re_maps_a_raw_payload_like_a_poll_does() -> None:
    connector = OnestopConnector(OnestopConnector.Config(base_url="http://x"))
    payload = recorded("dossier_returned_late.json")

    assert connector.parse(payload) == map_dossier(payload)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"MaHoSo": None}, "missing dossier id (MaHoSo)", id="missing-id"),
        pytest.param({"MaHoSo": ""}, "missing dossier id (MaHoSo)", id="empty-id"),
        pytest.param(
            {"NgayTiepNhan": "2025-10-20T08:45:05"},
            "NgayTiepNhan (receipt time) '2025-10-20T08:45:05' is not a yyyyMMddHHmmss time",
            id="iso-receipt-time",
        ),
        pytest.param(
            {"NgayHenTra": "20251345170000"},
            "NgayHenTra (due date) '20251345170000' is not a yyyyMMddHHmmss time",
            id="impossible-due-date",
        ),
        pytest.param(
            {"NgayTiepNhan": None}, "missing receipt time (NgayTiepNhan)", id="no-receipt"
        ),
        pytest.param(
            {"NgayHenTra": "20251019170000"},
            "due date (NgayHenTra) is before the receipt date (NgayTiepNhan)",
            id="due-before-receipt",
        ),
        pytest.param({"KenhThucHien": 9}, "unknown channel (KenhThucHien) 9", id="unknown-channel"),
        pytest.param(
            {"TrangThaiHoSo": 42}, "unknown status (TrangThaiHoSo) 42", id="unknown-status"
        ),
        pytest.param({"MaDiaBan": None}, "missing commune code (MaDiaBan)", id="no-commune"),
        pytest.param({"PhiLePhi": "free"}, "fee (PhiLePhi) 'free' is not a number", id="bad-fee"),
        pytest.param({"PhiLePhi": -5}, "fee (PhiLePhi) -5 is negative", id="negative-fee"),
        pytest.param(
            {"DanhSachGiayTo": "CCCD"}, "document list (DanhSachGiayTo) is not a list", id="docs"
        ),
        pytest.param(
            {"LichSuBoSung": [{"NgayHenTraMoi": "2025-11-12"}]},
            "NgayHenTraMoi (due date after the supplement) '2025-11-12' is not a yyyyMMddHHmmss"
            " time",
            id="supplement-time",
        ),
        pytest.param(
            {"LichSuBoSung": ["20251112170000"]},
            "supplement history (LichSuBoSung) entry 1 is not an object",
            id="supplement-entry",
        ),
    ],
)
def test_unusable_payload_is_rejected_with_a_readable_reason(
    change: dict[str, Any], reason: str
) -> None:
    payload = recorded("dossier_returned_late.json") | change

    batch = Batch.from_payloads([payload], map_dossier, cursor={}, id_field="MaHoSo")

    assert batch.records == []
    assert [r.reason for r in batch.rejected] == [reason]


def test_unknown_commune_code_is_left_for_the_ingest_to_check() -> None:
    payload = recorded("dossier_returned_late.json") | {"MaDiaBan": "99999"}

    assert map_dossier(payload).unit_code == "99999"


# ---------------------------------------------------------------- cursor


def test_cursor_never_goes_backwards_when_the_upstream_offers_an_older_position() -> None:
    ahead = {"updated_after": "2025-11-19T10:00:00+07:00", "after_id": "B"}
    older = {"updated_after": "2025-11-19T09:00:00+07:00", "after_id": "Z"}

    assert next_cursor(ahead, [], older) == ahead
    assert next_cursor(ahead, [], None) == ahead


def test_cursor_skips_a_last_item_whose_key_cannot_be_read() -> None:
    good = {"MaHoSo": "A-1", "NgayCapNhat": "20251119090000"}
    broken = {"NgayCapNhat": "20251119093000"}  # MaHoSo missing

    cursor = next_cursor({}, [good, broken], None)

    assert cursor == {"updated_after": "2025-11-19T09:00:00+07:00", "after_id": "A-1"}


def test_config_refuses_out_of_range_page_size_and_non_http_urls() -> None:
    with pytest.raises(ValidationError):
        OnestopConnector.Config(base_url="http://x", page_size=0)
    with pytest.raises(ValidationError):
        OnestopConnector.Config(base_url="http://x", page_size=1001)
    with pytest.raises(ValidationError):
        OnestopConnector.Config(base_url="ftp://x")
    config = OnestopConnector.Config(base_url="http://x:8101", api_key="s3cret")
    assert "s3cret" not in config.model_dump_json()


# ---------------------------------------------------------------- polls over HTTP


async def test_polls_read_every_current_dossier_once_page_by_page(source: Upstream) -> None:
    connector = source.connector(page_size=150)
    try:
        batches = await poll_to_the_end(connector, {})
    finally:
        await connector.aclose()
    truth = source.simulator.dossiers_as_of(source.simulator.now())

    ids = [record.external_id for batch in batches for record in batch.records]
    assert ids == [d["MaHoSo"] for d in truth]
    assert all(batch.rejected == [] for batch in batches)
    assert len(batches) == len(truth) // 150 + 1
    assert batches[-1].cursor["after_id"] == truth[-1]["MaHoSo"]


async def test_cursor_stays_put_on_an_empty_page(source: Upstream) -> None:
    connector = source.connector(page_size=1000)
    try:
        last = (await poll_to_the_end(connector, {}))[-1]
        empty = await connector.poll(last.cursor)
    finally:
        await connector.aclose()

    assert (empty.fetched, empty.has_more) == (0, False)
    assert empty.cursor == last.cursor


async def test_changes_after_the_clock_advances_arrive_in_the_next_poll(source: Upstream) -> None:
    connector = source.connector(page_size=1000)
    try:
        first = await poll_to_the_end(connector, {})
        await source.control.post("/_sim/advance", json={"seconds": 2 * 86400})
        later = await poll_to_the_end(connector, first[-1].cursor)
    finally:
        await connector.aclose()
    truth = {d["MaHoSo"]: d for d in source.simulator.dossiers_as_of(source.simulator.now())}

    changed = [record for batch in later for record in batch.records]
    assert changed
    assert all(r.source_updated_at > START for r in changed)
    assert all(r.status == DossierStatus(truth[r.external_id]["TrangThaiHoSo"]) for r in changed)
    assert later[-1].cursor["updated_after"] > first[-1].cursor["updated_after"]


async def test_malformed_items_are_rejected_with_reasons_while_good_records_map(
    source: Upstream,
) -> None:
    await source.control.post("/_sim/faults", json={"malformed": 4})
    connector = source.connector(page_size=20)
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()
    truth = source.simulator.dossiers_as_of(source.simulator.now())[:20]

    iso_receipt = datetime.strptime(truth[3]["NgayTiepNhan"], "%Y%m%d%H%M%S").isoformat()
    assert batch.fetched == 20
    assert [(r.external_id, r.reason) for r in batch.rejected] == [
        (None, "missing dossier id (MaHoSo)"),
        (
            truth[1]["MaHoSo"],
            "due date (NgayHenTra) is before the receipt date (NgayTiepNhan)",
        ),
        (
            truth[3]["MaHoSo"],
            f"NgayTiepNhan (receipt time) {iso_receipt!r} is not a yyyyMMddHHmmss time",
        ),
    ]
    assert len(batch.records) == 17
    assert batch.records[0].unit_code == "99999"  # unknown communes are the ingest's to reject
    assert batch.cursor["after_id"] == truth[-1]["MaHoSo"]


async def test_server_error_raises_connector_unavailable_with_the_status(
    source: Upstream,
) -> None:
    await source.control.post("/_sim/faults", json={"mode": "error"})
    connector = source.connector()
    try:
        with pytest.raises(ConnectorUnavailable, match="HTTP 500"):
            await connector.poll({})
    finally:
        await connector.aclose()


async def test_slow_upstream_raises_connector_unavailable_after_the_timeout(
    source: Upstream,
) -> None:
    await source.control.post("/_sim/faults", json={"mode": "timeout", "timeout_seconds": 5})
    connector = source.connector(timeout_seconds=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectorUnavailable, match=r"timed out after 0\.3s"):
            await connector.poll({})
    finally:
        await connector.aclose()
    assert time.monotonic() - started < 2


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


async def test_unreachable_upstream_raises_connector_unavailable(closed_port: int) -> None:
    connector = OnestopConnector(
        OnestopConnector.Config(base_url=f"http://127.0.0.1:{closed_port}", timeout_seconds=2)
    )
    try:
        with pytest.raises(ConnectorUnavailable, match="ConnectError"):
            await connector.poll({})
    finally:
        await connector.aclose()


async def test_wrong_api_key_raises_auth_error_and_the_right_one_reads() -> None:
    async with upstream(api_key="s3cret") as running:
        wrong, right = running.connector(api_key="guess"), running.connector(api_key="s3cret")
        try:
            with pytest.raises(ConnectorAuthError, match="HTTP 401"):
                await wrong.poll({})
            assert (await right.poll({})).records
        finally:
            await wrong.aclose()
            await right.aclose()


async def test_rate_limit_raises_with_the_retry_after_delay(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"mode": "rate_limited"})
    connector = source.connector()
    try:
        with pytest.raises(ConnectorRateLimited) as caught:
            await connector.poll({})
    finally:
        await connector.aclose()
    assert caught.value.retry_after == 30


async def test_rate_limit_retry_after_follows_the_upstreams_header(source: Upstream) -> None:
    await source.control.post(
        "/_sim/faults", json={"mode": "rate_limited", "retry_after_seconds": 120}
    )
    connector = source.connector()
    try:
        with pytest.raises(ConnectorRateLimited) as caught:
            await connector.poll({})
    finally:
        await connector.aclose()
    assert caught.value.retry_after == 120


async def test_slow_answers_within_the_timeout_still_map(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"slow_seconds": 0.3})
    connector = source.connector(page_size=50, timeout_seconds=3)
    started = time.monotonic()
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()

    assert time.monotonic() - started >= 0.3
    assert (len(batch.records), batch.rejected) == (50, [])


async def test_check_reads_one_dossier_and_raises_the_upstreams_fault(source: Upstream) -> None:
    connector = source.connector()
    try:
        await connector.check()
        await source.control.post("/_sim/faults", json={"mode": "error"})
        with pytest.raises(ConnectorUnavailable, match="HTTP 500"):
            await connector.check()
    finally:
        await connector.aclose()


async def test_old_commune_codes_from_the_simulator_arrive_mapped_with_the_original_kept(
    source: Upstream,
) -> None:
    connector = source.connector(page_size=1000)
    try:
        records = [r for b in await poll_to_the_end(connector, {}) for r in b.records]
    finally:
        await connector.aclose()
    served = {d["MaHoSo"]: d["MaDiaBan"] for d in source.simulator.dossiers_as_of(START)}
    communes = {f"{c.code:05d}" for c in source.simulator.factory.communes}

    legacy = [r for r in records if r.original_unit_code is not None]
    assert 0.02 < len(legacy) / len(records) < 0.09
    assert all(r.original_unit_code == served[r.external_id] for r in legacy)
    assert all(r.unit_code in communes and r.unit_code != r.original_unit_code for r in legacy)
    assert all(
        r.unit_code == served[r.external_id] for r in records if r.original_unit_code is None
    )


async def test_a_surge_brings_more_new_dossiers_in_the_next_polls() -> None:
    received: dict[float, int] = {}
    for surge in (1.0, 3.0):
        async with upstream() as running:
            connector = running.connector(page_size=1000)
            try:
                first = await poll_to_the_end(connector, {})
                await running.control.post("/_sim/faults", json={"surge": surge})
                await running.control.post("/_sim/advance", json={"seconds": 2 * 86400})
                later = await poll_to_the_end(connector, first[-1].cursor)
            finally:
                await connector.aclose()
        received[surge] = sum(r.received_at >= START for b in later for r in b.records)

    assert received[1.0] > 50
    assert 2.4 < received[3.0] / received[1.0] < 3.6
