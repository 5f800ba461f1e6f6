"""Each record rule kind measures its subjects from the records an ingest stores, and keeps
exactly the matching records as evidence; connectors are judged by their missed intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from ioc.context import AppContext
from ioc.incidents import queries, ruleset
from ioc.incidents.models import Incident
from ioc.incidents.rules import missed_intervals
from ioc.incidents.schemas import RuleCreate
from ioc.ingest.models import ConnectorInstance
from ioc.scheduler.runner import store_batch, write_transaction
from ioc.sdk import (
    Batch,
    BedCensus,
    DossierStatus,
    Encounter,
    EncounterClass,
    FeedbackReport,
    FeedbackStatus,
    Record,
)
from tests.support.factories import BIEN_HOA, make_dossier, make_instance
from tests.support.statements import statements_sent

MONDAY = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 10:00 local, Monday 23 November 2026


async def judge(ctx: AppContext, rule: dict[str, Any], records: list[Record]) -> list[Incident]:
    """Store `rule`, ingest `records` at MONDAY as a poll does, return the incidents."""
    async with ctx.sessionmaker() as session, session.begin():
        await ruleset.create_rule(session, RuleCreate(name="rule", **rule), now=MONDAY)
    ctx.clock = lambda: MONDAY
    instance_id = await make_instance(ctx)
    async with write_transaction(ctx) as session:
        await store_batch(
            ctx,
            session,
            instance_id=instance_id,
            batch=Batch(records=records),
            record_type=records[0].record_type,
        )
    async with ctx.sessionmaker() as session:
        return list((await session.scalars(select(Incident).order_by(Incident.id))).all())


async def evidence(ctx: AppContext, incident: Incident) -> set[str]:
    async with ctx.sessionmaker() as session:
        page = await queries.incident_records(
            session,
            incident,
            now=MONDAY,
            tz=ctx.settings.tz,
            filters={},
            q=None,
            sort=(),
            limit=100,
            offset=0,
        )
    return {r["external_id"] for r in page.items}


def ended(day: int) -> datetime:
    """09:00 local on `day` November 2026."""
    return datetime(2026, 11, day, 2, 0, tzinfo=UTC)


def due_on(day: int, external_id: str, **overrides: Any) -> Any:
    """An open dossier due at 17:00 local on `day` November 2026."""
    due = datetime(2026, 11, day, 10, 0, tzinfo=UTC)
    return make_dossier(
        external_id=external_id, due_at=due, received_at=due - timedelta(days=10), **overrides
    )


async def test_overdue_by_working_days_counts_whole_working_days_before_today(
    ctx: AppContext,
) -> None:
    rule = {"kind": "dossier_overdue", "params": {"working_days": 1}, "warn": 0}
    records = [due_on(20, "due-friday"), due_on(21, "due-saturday"), due_on(19, "due-thursday")]
    (incident,) = await judge(ctx, rule, records)
    # Friday is the working day before Monday: due then or earlier is a working day late.
    assert await evidence(ctx, incident) == {"due-friday", "due-thursday"}
    assert "time_column=due_date&date_to=2026-11-20" in incident.evidence["query"]
    assert incident.evidence["query_exact"] is True


async def test_late_dossiers_without_an_apology_slip_are_counted_by_agency(
    ctx: AppContext,
) -> None:
    rule = {"kind": "dossier_late_without_apology", "warn": 1}
    records = [
        due_on(10, "late-1"),
        due_on(12, "late-2"),
        due_on(13, "late-with-slip", apology_issued=True),
        due_on(30, "not-yet-due"),
        due_on(11, "other-agency", agency_code="STP", agency_name="Sở Tư pháp"),
        due_on(9, "ended-late", status=DossierStatus.PROCESSED, resolved_at=ended(11)),
        # An end reported after a due time that is still ahead: not late before it is due.
        due_on(
            24,
            "ends-after-a-due-still-ahead",
            status=DossierStatus.PROCESSED,
            resolved_at=ended(25),
        ),
    ]
    (incident,) = await judge(ctx, rule, records)
    assert incident.subject == {"unit_code": BIEN_HOA, "agency_code": "SNNMT"}
    assert incident.agency_code == "SNNMT" and "Sở Nông nghiệp và Môi trường" in incident.title
    assert await evidence(ctx, incident) == {"late-1", "late-2", "ended-late"}
    assert incident.value == 3.0
    assert "side=late" in incident.evidence["query"]


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "dossier_late_without_apology", "warn": 1},
        {"kind": "dossier_overdue", "params": {"working_days": 0}, "warn": 1},
    ],
    ids=["late-without-apology", "overdue"],
)
async def test_late_and_overdue_dossiers_are_read_only_up_to_today_in_the_due_date_index(
    ctx: AppContext, rule: dict[str, Any]
) -> None:
    """Late and overdue dossiers are due by now, so a rule on them bounds the due date by
    today and reads that part of the `(unit, due date)` index, not a whole month of dossiers
    due after today, or every open one (on every ingest, before)."""
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, _p: Any, context: Any, _many: Any) -> None:
        if "ORDER BY dossiers.id" in statement:
            compiled = context.compiled.statement.compile(
                context.engine, compile_kwargs={"literal_binds": True}
            )
            statements.append(str(compiled))

    event.listen(ctx.engine.sync_engine, "before_cursor_execute", keep)
    try:
        await judge(ctx, rule, [due_on(10, "late"), due_on(30, "not-yet-due")])
    finally:
        event.remove(ctx.engine.sync_engine, "before_cursor_execute", keep)
    (statement,) = statements
    assert "dossiers.due_date <= '2026-11-23'" in statement, statement


async def test_overdue_feedback_opens_an_incident_per_agency(ctx: AppContext) -> None:
    def report(external_id: str, agency: str, expected_hours: float) -> FeedbackReport:
        return FeedbackReport(
            external_id=external_id,
            unit_code=BIEN_HOA,
            service_code="ENV",
            status=FeedbackStatus.OPEN,
            agency=agency,
            requested_at=MONDAY - timedelta(days=20),
            expected_at=MONDAY + timedelta(hours=expected_hours),
            source_updated_at=MONDAY - timedelta(days=20),
        )

    records = [
        report("r1", "Công an phường", -5),
        report("r2", "Công an phường", -50),
        report("r3", "Công an phường", 5),  # not yet due
        report("r4", "UBND phường", -5),
    ]
    with statements_sent(ctx.engine) as statements:
        (incident,) = await judge(ctx, {"kind": "feedback_overdue", "warn": 1}, records)
    assert incident.subject == {"unit_code": BIEN_HOA, "agency": "Công an phường"}
    assert (incident.value, incident.domain) == (2, "feedback")
    assert await evidence(ctx, incident) == {"r1", "r2"}  # r1: due 5 hours ago, today
    (read,) = [s for s in statements if "ORDER BY feedback_reports.id" in s]
    assert "feedback_reports.expected_date <=" in read  # due by now: up to today only


async def test_emergency_visits_over_the_wait_limit_are_the_evidence(ctx: AppContext) -> None:
    def visit(
        external_id: str, wait: float, kind: EncounterClass = EncounterClass.EMERGENCY
    ) -> Any:
        return Encounter(
            external_id=external_id,
            unit_code=BIEN_HOA,
            facility_code="BVDN",
            facility_name="Bệnh viện Đa khoa Đồng Nai",
            encounter_class=kind,
            status="in-progress",
            start_at=MONDAY - timedelta(hours=2),
            wait_minutes=wait,
            source_updated_at=MONDAY - timedelta(hours=1),
        )

    records = [
        visit("e1", 70),
        visit("e2", 95),
        visit("e3", 20),
        visit("a1", 300, EncounterClass.AMBULATORY),
    ]
    rule = {"kind": "er_wait", "params": {"limit_minutes": 60}, "warn": 1}
    (incident,) = await judge(ctx, rule, records)
    assert incident.subject == {"unit_code": BIEN_HOA, "facility_code": "BVDN"}
    assert incident.value == 2 and incident.severity == "warn"
    assert await evidence(ctx, incident) == {"e1", "e2"}
    assert incident.evidence["query_exact"] is False  # the query lists the day's visits


async def test_a_hospital_above_its_bed_limit_is_judged_on_its_latest_census(
    ctx: AppContext,
) -> None:
    def census(external_id: str, facility: str, occupied: int, hours_ago: float) -> BedCensus:
        moment = MONDAY - timedelta(hours=hours_ago)
        return BedCensus(
            external_id=external_id,
            unit_code=BIEN_HOA,
            facility_code=facility,
            facility_name=facility,
            measured_at=moment,
            beds_total=110,
            beds_occupied=occupied,
            beds_closed=10,
            source_updated_at=moment,
        )

    records = [
        census("a-old", "A", 50, 5),
        census("a-now", "A", 97, 1),
        census("b-now", "B", 80, 1),
    ]
    (incident,) = await judge(ctx, {"kind": "bed_occupancy"}, records)
    assert incident.subject == {"unit_code": BIEN_HOA, "facility_code": "A"}
    assert (incident.value, incident.severity, incident.threshold) == (97.0, "critical", 95.0)
    assert await evidence(ctx, incident) == {"a-now"}


def test_a_connector_misses_the_intervals_it_failed_or_went_without_success() -> None:
    now = MONDAY
    instance = ConnectorInstance(
        name="x",
        enabled=True,
        interval_seconds=60,
        health="ok",
        consecutive_failures=0,
        last_success_at=now - timedelta(seconds=330),
        created_at=now - timedelta(days=1),
    )
    assert missed_intervals(instance, real_now=now) == 5
    instance.health, instance.consecutive_failures = "failing", 7
    assert missed_intervals(instance, real_now=now) == 7
    instance.last_success_at, instance.consecutive_failures = None, 0
    assert missed_intervals(instance, real_now=now) == 0  # its first run is still going
    instance.enabled = False
    assert missed_intervals(instance, real_now=now) == 0
