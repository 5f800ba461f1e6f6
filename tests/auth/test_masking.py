"""Citizens' personal data: masked below the personal_data permission, whole for leaders."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from ioc.auth.masking import MASK, mask_payload, mask_record, mask_text
from ioc.auth.permissions import Role
from ioc.context import AppContext
from ioc.ingest.service import ingest_batch
from ioc.kpi.service import recompute
from ioc.sdk import Batch, FeedbackReport, FeedbackStatus, Rejected
from ioc.units.service import COMMUNE_LEVEL, unit_codes
from tests.auth.conftest import MakeToken, bearer
from tests.support.factories import BIEN_HOA, make_instance

REQUESTED = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
DESCRIPTION = (
    "Ông Trần Thị Bình (0912 345 678, binh.tran@gmail.com, CCCD 079123456789) báo cống "
    "nghẹt trước nhà số 12"
)


def report(**overrides: object) -> FeedbackReport:
    values: dict = {
        "external_id": "PA-1",
        "unit_code": BIEN_HOA,
        "source_updated_at": REQUESTED,
        "service_code": "DRAIN",
        "status": FeedbackStatus.OPEN,
        "requested_at": REQUESTED,
        "description": DESCRIPTION,
        "address": "12 Đường Phan Chu Trinh, phường Biên Hòa",
        "latitude": 10.957413,
        "longitude": 106.842687,
        "reporter_name": "Trần Thị Bình",
        "reporter_phone": "+84 912 345 678",
    }
    values.update(overrides)
    return FeedbackReport(**values)


@pytest.fixture
async def stored(ctx: AppContext) -> None:
    """One feedback report stored and one rejected, both carrying personal data."""
    instance_id = await make_instance(ctx)
    raw = {
        "service_request_id": "PA-2",
        "first_name": "Bình",
        "phone": "0912345678",
        "lat": 10.957413,
        "description": DESCRIPTION,
        "service_code": "DRAIN",
    }
    async with ctx.sessionmaker() as session, session.begin():
        result = await ingest_batch(
            session,
            instance_id=instance_id,
            batch=Batch(
                records=[report()],
                rejected=[Rejected(external_id="PA-2", reason="no address", payload=raw)],
            ),
            known_units=await unit_codes(session, level=COMMUNE_LEVEL),
            tz=ctx.settings.tz,
            now=REQUESTED,
            record_type="feedback",
        )
        await recompute(  # as every ingest does: the KPI cells its records count in
            session, changes=result.changes, province_code="75", tz=ctx.settings.tz, now=REQUESTED
        )


def test_free_text_loses_phone_numbers_emails_id_numbers_and_the_reporters_name() -> None:
    masked = mask_text(DESCRIPTION, names=("Trần Thị Bình",))
    assert masked == f"Ông {MASK} ({MASK}, {MASK}, CCCD {MASK}) báo cống nghẹt trước nhà số 12"


def test_a_feedback_record_keeps_what_a_kpi_needs_and_loses_who_and_where_exactly() -> None:
    item = report().model_dump(mode="json")
    masked = mask_record("feedback", item)
    assert masked["reporter_name"] == masked["reporter_phone"] == masked["address"] == MASK
    assert (masked["latitude"], masked["longitude"]) == (10.96, 106.84)
    assert "0912" not in masked["description"] and "Bình" not in masked["description"]
    assert {k: masked[k] for k in ("unit_code", "status", "requested_at")} == {
        k: item[k] for k in ("unit_code", "status", "requested_at")
    }


def test_records_of_types_without_personal_data_are_unchanged() -> None:
    item = {"external_id": "H1", "agency_name": "Sở Tư pháp", "procedure_code": "1.0001"}
    assert mask_record("dossier", item) == item


def test_a_raw_payload_is_masked_by_key_and_by_pattern_and_keeps_its_shape() -> None:
    payload = {
        "service_request_id": "PA-000123456",
        "first_name": "Bình",
        "contact": {"phone": "0912345678", "email": "a@b.vn"},
        "lat": 10.957413,
        "notes": ["gọi 0912 345 678"],
        "service_name": "Thoát nước",
    }
    assert mask_payload(payload) == {
        "service_request_id": "PA-000123456",
        "first_name": MASK,
        "contact": {"phone": MASK, "email": MASK},
        "lat": 10.96,
        "notes": [f"gọi {MASK}"],
        "service_name": "Thoát nước",
    }


@pytest.mark.parametrize(
    ("role", "masked"),
    [(Role.INTEGRATOR, True), (Role.LEADER, False)],
    ids=["integrator-masked", "leader-whole"],
)
async def test_records_api_masks_personal_data_below_leader(
    http: httpx.AsyncClient, make_token: MakeToken, stored: None, role: Role, masked: bool
) -> None:
    response = await http.get("/api/v1/records/feedback", headers=bearer(await make_token(role)))
    (item,) = response.json()["items"]
    assert (item["reporter_name"] == MASK) is masked
    assert (item["reporter_phone"] == MASK) is masked
    assert ("0912 345 678" in item["description"]) is not masked
    assert (item["latitude"] == 10.957413) is not masked


async def test_records_behind_a_kpi_cell_are_masked_for_an_integrator(
    http: httpx.AsyncClient, make_token: MakeToken, stored: None
) -> None:
    response = await http.get(
        "/api/v1/kpis/feedback.received/records",
        params={"period": "day", "start": "2026-11-02", "unit": BIEN_HOA},
        headers=bearer(await make_token(Role.INTEGRATOR)),
    )
    (item,) = response.json()["items"]
    assert item["reporter_name"] == MASK and item["address"] == MASK


async def test_rejected_payloads_are_masked_for_an_integrator(
    http: httpx.AsyncClient, make_token: MakeToken, stored: None
) -> None:
    response = await http.get("/api/v1/rejected", headers=bearer(await make_token(Role.INTEGRATOR)))
    (rejected,) = response.json()
    assert rejected["payload"]["first_name"] == MASK and rejected["payload"]["phone"] == MASK
    assert rejected["payload"]["service_request_id"] == "PA-2"
    assert rejected["reason"] == "no address"


async def test_breakdown_rows_link_to_records_only_for_who_may_read_them(
    http: httpx.AsyncClient, make_token: MakeToken, stored: None
) -> None:
    url = "/api/v1/kpis/feedback.received/breakdown?period=day&start=2026-11-02"
    viewer = (await http.get(url, headers=bearer(await make_token(Role.VIEWER)))).json()
    leader = (await http.get(url, headers=bearer(await make_token(Role.LEADER)))).json()
    assert viewer["total"]["numerator"] == leader["total"]["numerator"] == 1
    assert viewer["total"]["records"] is None and {r["records"] for r in viewer["rows"]} == {None}
    assert leader["total"]["records"].startswith("/api/v1/kpis/feedback.received/records?")
