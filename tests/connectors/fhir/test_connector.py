"""The FHIR connector: recorded payloads mapped, the simulated FHIR server polled over HTTP."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from connectors.fhir.connector import (
    Facility,
    FhirConnector,
    count_beds,
    map_encounter,
    map_facility,
)
from connectors.fhir.simulator import Simulator, create_app
from ioc.sdk import (
    Batch,
    BedCensus,
    ConnectorAuthError,
    ConnectorRateLimited,
    ConnectorUnavailable,
    Encounter,
    EncounterClass,
)
from tests.support.servers import serve_app

FIXTURES = Path(__file__).parent / "fixtures"
START = datetime(2025, 11, 19, 3, 0, tzinfo=UTC)  # 10:00 on Wednesday 19 November 2025, local


def recorded(name: str) -> dict[str, Any]:
    """A payload recorded from the FHIR server."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def facilities() -> dict[str, Facility]:
    bundle = recorded("organizations_bundle.json")
    found = (map_facility(entry["resource"]) for entry in bundle["entry"])
    return {facility.code: facility for facility in found}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@dataclass
class Upstream:
    """A simulator on a local port, a client for its control routes, connector factory."""

    simulator: Simulator
    url: str
    control: httpx.AsyncClient

    def connector(self, **config: Any) -> FhirConnector:
        return FhirConnector(FhirConnector.Config(base_url=self.url, **config))


@asynccontextmanager
async def upstream(**overrides: Any) -> AsyncIterator[Upstream]:
    options: dict[str, Any] = {
        "seed": 3,
        "scale": 0.03,
        "history_days": 2,
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


async def run(connector: FhirConnector, cursor: dict[str, Any]) -> list[Batch]:
    """Poll until the connector says there is nothing more (one scheduled run)."""
    batches = [await connector.poll(cursor)]
    while batches[-1].has_more:
        batches.append(await connector.poll(batches[-1].cursor))
    return batches


def encounters(batches: list[Batch]) -> list[Encounter]:
    return [r for b in batches for r in b.records if isinstance(r, Encounter)]


def censuses(batches: list[Batch]) -> list[BedCensus]:
    return [r for b in batches for r in b.records if isinstance(r, BedCensus)]


# ---------------------------------------------------------------- mapping


def test_recorded_emergency_visit_maps_to_exact_fields_in_utc() -> None:
    encounter = map_encounter(recorded("encounter_emergency_finished.json"), facilities())

    assert encounter == Encounter(
        external_id="dkdn-251116-C0001",
        version_id="4",
        unit_code="26017",
        source_updated_at=utc(2025, 11, 16, 5, 11, 38),
        facility_code="bvdk-dong-nai",
        facility_name="Bệnh viện Đa khoa Đồng Nai",
        encounter_class=EncounterClass.EMERGENCY,
        status="finished",
        start_at=utc(2025, 11, 16, 3, 14, 58),
        end_at=utc(2025, 11, 16, 5, 11, 38),
        wait_minutes=16.33,  # arrived 10:14:58 → in-progress 10:31:18
        discharge_disposition="home",
        referred_out=False,
    )


def test_recorded_inpatient_stay_sent_elsewhere_counts_as_referred_out() -> None:
    encounter = map_encounter(recorded("encounter_inpatient_referred.json"), facilities())

    assert encounter.encounter_class is EncounterClass.INPATIENT
    assert (encounter.discharge_disposition, encounter.referred_out) == ("other-hcf", True)
    assert (encounter.start_at, encounter.end_at) == (
        utc(2025, 10, 28, 2, 4, 7),
        utc(2025, 10, 30, 7, 19),
    )
    assert encounter.wait_minutes == 55.77
    assert (encounter.facility_code, encounter.unit_code) == ("bv-nhi-dong-nai", "26041")


def test_recorded_outpatient_visit_in_progress_has_no_end_and_no_disposition() -> None:
    encounter = map_encounter(recorded("encounter_outpatient_in_progress.json"), facilities())

    assert encounter.encounter_class is EncounterClass.AMBULATORY
    assert encounter.status == "in-progress"
    assert encounter.end_at is None
    assert encounter.wait_minutes is not None and encounter.wait_minutes > 0
    assert (encounter.discharge_disposition, encounter.referred_out) == (None, False)


def test_organizations_give_each_hospital_its_commune_code() -> None:
    found = facilities()

    assert found["bvdk-dong-nai"] == Facility(
        code="bvdk-dong-nai", name="Bệnh viện Đa khoa Đồng Nai", unit_code="26017"
    )
    assert {f.unit_code for f in found.values()} >= {"25210", "26206", "26368"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"class": None}, "missing class (Encounter.class)", id="no-class"),
        pytest.param(
            {"period": {"start": "2025-11-16T10:14:58+07:00", "end": "2025-11-16T09:14:58+07:00"}},
            "period.end is before period.start",
            id="end-before-start",
        ),
        pytest.param(
            {"serviceProvider": {"reference": "Organization/bv-khong-ton-tai"}},
            "serviceProvider Organization/bv-khong-ton-tai is not a known hospital",
            id="unknown-hospital",
        ),
        pytest.param(
            {"serviceProvider": None},
            "missing serviceProvider (an Organization reference)",
            id="no-hospital",
        ),
        pytest.param(
            {"period": {"start": "2025-11-16T10:14:58"}},
            "period.start '2025-11-16T10:14:58' has no UTC offset",
            id="naive-start",
        ),
        pytest.param({"status": "done"}, "unknown status 'done' (Encounter.status)", id="status"),
        pytest.param({"meta": {"versionId": "4"}}, "missing meta.lastUpdated", id="no-updated"),
        pytest.param({"id": ""}, "missing id (Encounter.id)", id="no-id"),
        pytest.param(
            {
                "statusHistory": [
                    {"status": "arrived", "period": {"start": "2025-11-16T10:30:00+07:00"}},
                    {"status": "in-progress", "period": {"start": "2025-11-16T10:00:00+07:00"}},
                ]
            },
            "statusHistory: in-progress (2025-11-16T03:00:00+00:00) is before arrived "
            "(2025-11-16T03:30:00+00:00)",
            id="negative-wait",
        ),
    ],
)
def test_unusable_encounter_is_rejected_with_a_readable_reason(
    change: dict[str, Any], reason: str
) -> None:
    payload = recorded("encounter_emergency_finished.json") | change

    batch = Batch.from_payloads(
        [payload], lambda p: map_encounter(p, facilities()), cursor={}, id_field="id"
    )

    assert batch.records == []
    assert [r.reason for r in batch.rejected] == [reason]


def test_hospital_without_commune_code_is_rejected_unless_configured() -> None:
    payload = recorded("encounter_emergency_finished.json")
    bare = {"bvdk-dong-nai": Facility(code="bvdk-dong-nai", name="BVĐK", unit_code=None)}

    with pytest.raises(Exception, match=r"bvdk-dong-nai .* has no commune code"):
        map_encounter(payload, bare)
    assert map_encounter(payload, bare, units={"bvdk-dong-nai": "26041"}).unit_code == "26041"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AMB", EncounterClass.AMBULATORY),
        ("ACUTE", EncounterClass.INPATIENT),
        ("OBSENC", EncounterClass.SHORT_STAY),
        ("SS", EncounterClass.SHORT_STAY),
        ("HH", EncounterClass.OTHER),
        ("VR", EncounterClass.OTHER),
    ],
)
def test_encounter_class_codes_map_to_canonical_classes(
    code: str, expected: EncounterClass
) -> None:
    payload = recorded("encounter_emergency_finished.json") | {"class": {"code": code}}

    assert map_encounter(payload, facilities()).encounter_class is expected


def test_bed_locations_are_counted_per_hospital_and_wards_are_skipped() -> None:
    page = recorded("locations_dinh_quan.json")
    counts: dict[str, list[int]] = {}

    rejected = count_beds([entry["resource"] for entry in page["entry"]], counts)

    assert rejected == []
    assert counts == {"bvdkkv-dinh-quan": [18, 14, 0]}  # 14 O, 2 U, 2 H


def test_config_keeps_the_api_key_secret_and_refuses_bad_page_sizes() -> None:
    config = FhirConnector.Config(base_url="http://his:8080/fhir/", api_key="s3cret")

    assert config.base_url == "http://his:8080/fhir"
    assert (config.page_size, config.overlap_seconds, config.bed_census) == (200, 60, True)
    assert "s3cret" not in config.model_dump_json()
    with pytest.raises(ValidationError):
        FhirConnector.Config(base_url="http://x", page_size=0)


# ---------------------------------------------------------------- polls over HTTP


async def test_check_reads_the_r4_capability_statement(source: Upstream) -> None:
    connector = source.connector()
    try:
        await connector.check()
        await source.control.post("/_sim/faults", json={"mode": "error"})
        with pytest.raises(ConnectorUnavailable, match="HTTP 500: simulated upstream failure"):
            await connector.check()
    finally:
        await connector.aclose()


async def test_a_run_reads_every_current_encounter_once_then_one_census_per_hospital(
    source: Upstream,
) -> None:
    connector = source.connector(page_size=150)
    try:
        batches = await run(connector, {})
    finally:
        await connector.aclose()
    truth = source.simulator.encounters_as_of(source.simulator.now())
    census = source.simulator.bed_census(source.simulator.now())

    read = encounters(batches)
    assert [(e.external_id, e.version_id) for e in read] == [
        (r["id"], r["meta"]["versionId"]) for r in truth
    ]
    assert all(b.rejected == [] for b in batches)
    assert {c.facility_code for c in censuses(batches)} == set(census)
    for record in censuses(batches):
        counts = census[record.facility_code]
        assert (record.beds_total, record.beds_occupied, record.beds_closed) == (
            sum(counts.values()),
            counts.get("O", 0),
            counts.get("C", 0),
        )
        assert record.measured_at == START
        assert record.external_id == f"{record.facility_code}:20251119T1000"


async def test_watermark_is_saved_only_after_the_last_page_and_never_goes_back(
    source: Upstream,
) -> None:
    connector = source.connector(page_size=100, bed_census=False)
    try:
        batches = await run(connector, {"watermark": "2025-11-18T00:00:00Z"})
    finally:
        await connector.aclose()

    assert len(batches) > 2
    assert all(b.cursor["watermark"] == "2025-11-18T00:00:00Z" for b in batches[:-1])
    assert all(b.cursor["next"] for b in batches[:-1])
    last = batches[-1].cursor
    assert "next" not in last and last["watermark"] > "2025-11-18T00:00:00Z"
    assert datetime.fromisoformat(last["watermark"]) <= START
    assert max(e.source_updated_at for e in encounters(batches)) == datetime.fromisoformat(
        last["watermark"]
    )


async def test_next_run_after_the_clock_moves_returns_only_the_changes(source: Upstream) -> None:
    connector = source.connector(page_size=500, bed_census=False)
    try:
        first = await run(connector, {})
        await source.control.post("/_sim/advance", json={"seconds": 3600})
        later = await run(connector, first[-1].cursor)
    finally:
        await connector.aclose()
    truth = {r["id"]: r for r in source.simulator.encounters_as_of(source.simulator.now())}
    before = {(e.external_id, e.version_id) for e in encounters(first)}

    changed = encounters(later)
    assert changed
    assert not {(e.external_id, e.version_id) for e in changed} & before  # overlap de-duplicated
    assert all(e.source_updated_at > START for e in changed)
    assert all(e.version_id == truth[e.external_id]["meta"]["versionId"] for e in changed)
    assert later[-1].cursor["watermark"] > first[-1].cursor["watermark"]


async def test_versions_read_inside_the_overlap_are_not_emitted_twice(source: Upstream) -> None:
    connector = source.connector(page_size=1000, bed_census=False, overlap_seconds=3600)
    try:
        first = await run(connector, {})
        again = await run(connector, first[-1].cursor)
    finally:
        await connector.aclose()

    assert first[-1].cursor["seen"]
    assert again[0].records == [] and again[0].cursor["watermark"] == first[-1].cursor["watermark"]


async def test_expired_paging_link_restarts_the_run_from_the_watermark(source: Upstream) -> None:
    connector = source.connector(page_size=100, bed_census=False)
    try:
        first = await connector.poll({})
        source.simulator._searches.clear()  # the server forgot every search
        rest = await run(connector, first.cursor)
    finally:
        await connector.aclose()
    truth = source.simulator.encounters_as_of(source.simulator.now())

    read = {(e.external_id, e.version_id) for e in encounters([first, *rest])}
    assert read == {(r["id"], r["meta"]["versionId"]) for r in truth}  # re-reads are upserts


async def test_malformed_encounters_are_rejected_with_reasons_while_the_rest_map(
    source: Upstream,
) -> None:
    await source.control.post("/_sim/faults", json={"malformed": 5})
    connector = source.connector(page_size=20)
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()
    truth = source.simulator.encounters_as_of(source.simulator.now())[:20]

    assert batch.fetched == 20
    reasons = [(r.external_id, r.reason) for r in batch.rejected]
    assert reasons[0] == (truth[0]["id"], "missing class (Encounter.class)")
    assert reasons[1] == (truth[1]["id"], "period.end is before period.start")
    assert reasons[2] == (
        truth[2]["id"],
        "serviceProvider Organization/bv-khong-ton-tai is not a known hospital",
    )
    assert reasons[3][0] == truth[3]["id"] and reasons[3][1].endswith("has no UTC offset")
    assert reasons[4] == (truth[4]["id"], "unknown status 'done' (Encounter.status)")
    assert [r.external_id for r in batch.records] == [r["id"] for r in truth[5:]]


async def test_server_error_raises_connector_unavailable(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"mode": "error"})
    connector = source.connector()
    try:
        with pytest.raises(ConnectorUnavailable, match="HTTP 500"):
            await connector.poll({})
    finally:
        await connector.aclose()


async def test_upstream_timeout_raises_connector_unavailable(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"mode": "timeout", "timeout_seconds": 1})
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
        "/_sim/faults", json={"mode": "rate_limited", "retry_after_seconds": 42}
    )
    connector = source.connector()
    try:
        with pytest.raises(ConnectorRateLimited) as caught:
            await connector.poll({})
    finally:
        await connector.aclose()
    assert caught.value.retry_after == 42


async def test_slow_responses_within_the_timeout_still_succeed(source: Upstream) -> None:
    await source.control.post("/_sim/faults", json={"slow_seconds": 0.3})
    connector = source.connector(timeout_seconds=3, bed_census=False)
    try:
        batch = await connector.poll({})
    finally:
        await connector.aclose()
    assert batch.records


async def test_surge_brings_more_encounters_than_the_baseline() -> None:
    async def arrivals_in_the_next_hours(surge: float) -> int:
        async with upstream() as running:
            connector = running.connector(page_size=1000, bed_census=False)
            try:
                first = await run(connector, {})
                await running.control.post("/_sim/faults", json={"surge": surge})
                await running.control.post("/_sim/advance", json={"seconds": 4 * 3600})
                later = await run(connector, first[-1].cursor)
            finally:
                await connector.aclose()
        return len({e.external_id for e in encounters(later) if e.start_at and e.start_at > START})

    assert await arrivals_in_the_next_hours(4.0) > 2 * await arrivals_in_the_next_hours(1.0)


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


async def test_same_seed_gives_the_same_records_and_another_seed_does_not() -> None:
    async def read(seed: int) -> list[tuple[str, str, str]]:
        async with upstream(seed=seed) as running:
            connector = running.connector(page_size=1000)
            try:
                batches = await run(connector, {})
            finally:
                await connector.aclose()
        return [
            (r.external_id, r.record_type, r.model_dump_json()) for b in batches for r in b.records
        ]

    first = await read(3)
    assert first == await read(3)
    assert first != await read(4)
    assert Counter(kind for _, kind, _ in first)["bed_census"] == 7
