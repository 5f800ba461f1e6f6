"""The catalogue: every KPI of DOMAIN.md declared once; the 766 index; due-soon dossiers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ioc.context import AppContext
from ioc.ingest.service import ingest_batch
from ioc.kpi import service_index
from ioc.kpi.catalog import CATALOG, KPIS, fact_columns
from ioc.kpi.engine import compute
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.service import cell_value, recompute
from ioc.sdk import Batch, Dossier, DossierStatus, Encounter, EncounterClass, Record
from ioc.units.service import unit_codes
from tests.support.factories import BIEN_HOA, TRAN_BIEN, make_dossier, make_instance

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # Friday 20 November 2026, 10:00 local
DOMAIN_TABLE = {  # the KPI catalogue of DOMAIN.md, first version
    "onestop.on_time_rate", "onestop.overdue_open", "onestop.due_soon", "onestop.apology_rate",
    "onestop.mean_resolution_days", "onestop.online_rate", "onestop.online_payment_rate",
    "onestop.digitised_rate", "onestop.portal_sync_rate", "onestop.backlog",
    "onestop.service_index", "feedback.received", "health.er_wait_minutes", "feedback.on_time_rate",
    "feedback.overdue_open", "feedback.mean_close_hours", "health.bed_occupancy",
    "health.inpatients", "health.outpatient_visits", "health.alos_days",
    "health.referral_out_rate", "education.attendance_rate", "education.enrolment",
    "education.pupils_per_teacher", "system.data_freshness_minutes",
}  # fmt: skip


def test_every_kpi_of_the_domain_table_is_declared_with_labels_in_both_languages() -> None:
    missing = DOMAIN_TABLE - set(KPIS)
    assert not missing, f"not declared yet: {sorted(missing)}"
    assert len({k.id for k in CATALOG}) == len(CATALOG)
    for kpi in CATALOG:
        assert kpi.name_vi and kpi.name_en and kpi.name_vi != kpi.name_en


def test_formulas_name_real_columns_of_their_record_tables() -> None:
    assert fact_columns("dossier") == ["due_date", "resolved_date", "received_date"]
    assert set(fact_columns("feedback")) == {"requested_date", "expected_date", "closed_date"}


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({k: 100.0 for k in service_index.COMPONENTS}, 100.0),
        ({k: 0.0 for k in service_index.COMPONENTS}, 0.0),
        ({**{k: 100.0 for k in service_index.COMPONENTS}, "onestop.online_rate": 25.0}, 94.0),
        ({"onestop.on_time_rate": 90.0}, 95.62),  # (14 × 0.9 + 18) ÷ 32 points
        ({}, None),
    ],
    ids=["all-full", "all-zero", "online-half-of-full", "only-on-time", "no-data"],
)
def test_service_index_scores_rates_against_their_full_points(
    rates: dict[str, float], expected: float | None
) -> None:
    assert service_index.score(rates) == expected


async def store(ctx: AppContext, dossiers: list[Record]) -> None:
    instance = await make_instance(ctx)
    async with ctx.sessionmaker() as session, session.begin():
        result = await ingest_batch(
            session,
            instance_id=instance,
            batch=Batch(records=dossiers),
            known_units=await unit_codes(session),
            tz=ctx.settings.tz,
            now=NOW,
            calendar=ctx.settings.calendar,
        )
        await recompute(
            session, changes=result.changes, province_code="75", tz=ctx.settings.tz, now=NOW
        )


async def read(ctx: AppContext, kpi: str, unit: str, period: Period) -> float | None:
    async with ctx.sessionmaker() as session:
        value = await cell_value(session, KPIS[kpi], unit, period, now=NOW, tz=ctx.settings.tz)
    return value.value


async def test_dossiers_due_by_the_end_of_the_next_working_day_are_due_soon(
    ctx: AppContext,
) -> None:
    received = NOW - timedelta(days=3)

    def due(local_day: date) -> Dossier:  # due at 17:00 local that day
        moment = datetime(local_day.year, local_day.month, local_day.day, 10, tzinfo=UTC)
        return make_dossier(received_at=received, due_at=moment, source_updated_at=received)

    await store(
        ctx,
        [
            due(date(2026, 11, 20)),  # today: due soon
            due(date(2026, 11, 23)),  # Monday, the next working day: due soon
            due(date(2026, 11, 25)),  # Wednesday: 24/11 is a holiday, still not next
            due(date(2026, 11, 19)),  # yesterday: overdue, not due soon
        ],
    )
    today = Period(PeriodKind.DAY, date(2026, 11, 20))
    assert await read(ctx, "onestop.due_soon", BIEN_HOA, today) == 2
    assert await read(ctx, "onestop.due_soon", "75", today) == 2
    assert await read(ctx, "onestop.overdue_open", BIEN_HOA, today) == 1


async def test_a_dossier_is_late_only_once_its_due_time_has_passed(ctx: AppContext) -> None:
    """Late: due before now and not ended by then. An end the upstream reports after a due
    time still ahead does not make a dossier late before it is due (nor after: it stays
    counted as ended late once the due time passes)."""
    received = NOW - timedelta(days=3)

    def dossier(due_in_hours: int, ended_in_hours: int | None) -> Dossier:
        ended = None if ended_in_hours is None else NOW + timedelta(hours=ended_in_hours)
        return make_dossier(
            received_at=received,
            due_at=NOW + timedelta(hours=due_in_hours),
            status=DossierStatus.PROCESSED if ended else DossierStatus.PROCESSING,
            resolved_at=ended,
            source_updated_at=received,
        )

    await store(
        ctx,
        [
            dossier(-2, None),  # open past its due time: late
            dossier(-5, -1),  # ended after its due time: late
            dossier(-5, -6),  # ended before it: on time
            dossier(+3, None),  # open, not yet due: on time
            dossier(+3, +5),  # reported ended after a due time still ahead: not late yet
        ],
    )
    today = Period(PeriodKind.DAY, date(2026, 11, 20))
    assert await read(ctx, "onestop.on_time_rate", BIEN_HOA, today) == 60.0  # 3 of 5
    async with ctx.sessionmaker() as session:
        apology = await cell_value(
            session, KPIS["onestop.apology_rate"], BIEN_HOA, today, now=NOW, tz=ctx.settings.tz
        )
    assert apology.denominator == 2  # the two late ones


async def test_a_dossier_due_minutes_ago_just_after_local_midnight_counts_as_overdue(
    ctx: AppContext,
) -> None:
    """Counted from the records: overdue dossiers are read by their local due date up to the
    local day of the moment judged, which at 00:15 in Vietnam is a day ahead of UTC's."""
    now = datetime(2026, 11, 20, 17, 15, tzinfo=UTC)  # 00:15 local, Saturday 21 November
    received = now - timedelta(days=3)
    await store(
        ctx,
        [
            make_dossier(received_at=received, due_at=now - timedelta(minutes=10)),  # 00:05 local
            make_dossier(received_at=received, due_at=now + timedelta(minutes=10)),
        ],
    )
    today = Period(PeriodKind.DAY, date(2026, 11, 21))
    async with ctx.sessionmaker() as session:
        found = await compute(
            session, KPIS["onestop.overdue_open"], [BIEN_HOA], [today], now=now, tz=ctx.settings.tz
        )
    assert found == {(BIEN_HOA, today): (1.0, None)}


async def test_the_service_index_of_a_cell_scores_that_cells_own_rates(ctx: AppContext) -> None:
    received = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    common = {"received_at": received, "due_at": received + timedelta(days=4)}
    done = {"status": DossierStatus.PROCESSED, "source_updated_at": received + timedelta(days=2)}
    full = {"synced_to_portal": True, "digitised": True, "reused_national_data": True}
    await store(
        ctx,
        [
            make_dossier(**common, **done, **full, resolved_at=received + timedelta(days=2)),
            make_dossier(**common, **done, resolved_at=received + timedelta(days=6)),
        ],
    )
    month = Period(PeriodKind.MONTH, date(2026, 11, 1))
    rates = {k: await read(ctx, k, BIEN_HOA, month) for k in service_index.COMPONENTS}
    assert rates["onestop.on_time_rate"] == 50.0 and rates["onestop.digitised_rate"] == 50.0
    expected = service_index.score(rates)
    assert await read(ctx, "onestop.service_index", BIEN_HOA, month) == expected
    assert await read(ctx, "onestop.service_index", "75", month) == expected


async def test_emergency_wait_is_a_median_and_the_province_median_is_over_all_visits(
    ctx: AppContext,
) -> None:
    start = datetime(2026, 11, 19, 13, 0, tzinfo=UTC)  # 20:00 local on 19 November

    def visit(unit: str, wait: float, n: int) -> Encounter:
        return Encounter(
            external_id=f"E{unit}{n}",
            unit_code=unit,
            facility_code="BVDKDN",
            encounter_class=EncounterClass.EMERGENCY,
            status="finished",
            start_at=start,
            end_at=start + timedelta(hours=2),
            wait_minutes=wait,
            source_updated_at=start,
        )

    visits = [visit(BIEN_HOA, w, n) for n, w in enumerate((10, 20, 90))] + [visit(TRAN_BIEN, 5, 0)]
    await store(ctx, visits)
    day = Period(PeriodKind.DAY, date(2026, 11, 19))
    assert await read(ctx, "health.er_wait_minutes", BIEN_HOA, day) == 20
    assert await read(ctx, "health.er_wait_minutes", TRAN_BIEN, day) == 5
    assert await read(ctx, "health.er_wait_minutes", "75", day) == 15  # not the mean of medians
