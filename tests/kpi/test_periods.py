"""Period boundaries: local midnight, month, quarter and year ends, a leap day, and Tết."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioc.context import AppContext
from ioc.ingest.service import ingest_batch
from ioc.kpi.calendar import WorkingCalendar
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.service import recompute
from ioc.sdk import Batch, Dossier, DossierStatus
from ioc.units.service import COMMUNE_LEVEL, unit_codes
from tests.support.factories import BIEN_HOA, make_dossier, make_instance

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DAY, MONTH, QUARTER, YEAR = PeriodKind.DAY, PeriodKind.MONTH, PeriodKind.QUARTER, PeriodKind.YEAR


def local(day: date, clock: time = time(9)) -> datetime:
    """The UTC instant of a local clock time (Asia/Ho_Chi_Minh is UTC+7, no summer time)."""
    return datetime.combine(day, clock, tzinfo=TZ).astimezone(UTC)


def due_on(due: datetime, **overrides: Any) -> Dossier:
    """An ended-on-time dossier due at `due`, received two days before."""
    values: dict[str, Any] = {
        "received_at": due - timedelta(days=2),
        "due_at": due,
        "resolved_at": due - timedelta(hours=1),
        "status": DossierStatus.PROCESSED,
        "source_updated_at": due,
    }
    return make_dossier(**(values | overrides))


async def ingest(ctx: AppContext, records: list[Dossier], *, now: datetime) -> None:
    """Ingest and recompute what changed, as a poll does."""
    instance = await make_instance(ctx)
    async with ctx.sessionmaker() as session, session.begin():
        result = await ingest_batch(
            session,
            instance_id=instance,
            batch=Batch(records=records),
            known_units=await unit_codes(session, level=COMMUNE_LEVEL),
            tz=TZ,
            now=now,
        )
        await recompute(session, changes=result.changes, province_code="75", tz=TZ, now=now)


async def sums(
    ctx: AppContext, kpi: str, kind: PeriodKind, start: date, unit: str = BIEN_HOA
) -> tuple[float, float | None] | None:
    """(numerator, denominator) of a stored cell, None when no cell is stored."""
    async with ctx.sessionmaker() as session:
        cell = await session.get(KpiValue, (kpi, unit, kind.value, start))
    return (cell.numerator, cell.denominator) if cell is not None else None


# ---------------------------------------------------------------- local midnight


async def test_a_dossier_due_at_23_59_local_counts_in_that_days_cell(ctx: AppContext) -> None:
    due = local(date(2026, 11, 10), time(23, 59))  # 16:59 UTC the same day
    await ingest(ctx, [due_on(due)], now=local(date(2026, 11, 20)))
    assert await sums(ctx, "onestop.on_time_rate", DAY, date(2026, 11, 10)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", DAY, date(2026, 11, 11)) is None


async def test_a_dossier_due_at_local_midnight_counts_in_the_next_days_cell(
    ctx: AppContext,
) -> None:
    due = local(date(2026, 11, 11), time(0))  # 17:00 UTC on 10 November
    assert due == datetime(2026, 11, 10, 17, 0, tzinfo=UTC)
    await ingest(ctx, [due_on(due)], now=local(date(2026, 11, 20)))
    assert await sums(ctx, "onestop.on_time_rate", DAY, date(2026, 11, 11)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", DAY, date(2026, 11, 10)) is None


async def test_a_utc_evening_on_31_january_is_received_on_1_february_local(
    ctx: AppContext,
) -> None:
    received = datetime(2026, 1, 31, 18, 30, tzinfo=UTC)  # 01:30 on 1 February local
    dossier = make_dossier(
        received_at=received, due_at=received + timedelta(days=5), source_updated_at=received
    )
    await ingest(ctx, [dossier], now=local(date(2026, 2, 10)))
    assert await sums(ctx, "onestop.online_rate", DAY, date(2026, 2, 1)) == (1, 1)
    assert await sums(ctx, "onestop.online_rate", MONTH, date(2026, 2, 1)) == (1, 1)
    assert await sums(ctx, "onestop.online_rate", MONTH, date(2026, 1, 1)) is None


async def test_a_dossier_open_past_its_due_time_is_overdue_from_that_local_day(
    ctx: AppContext,
) -> None:
    due = local(date(2026, 11, 10), time(23, 30))
    open_dossier = due_on(due, resolved_at=None, status=DossierStatus.PROCESSING)
    await ingest(ctx, [open_dossier], now=local(date(2026, 11, 12)))
    assert await sums(ctx, "onestop.overdue_open", DAY, date(2026, 11, 9)) is None
    assert await sums(ctx, "onestop.overdue_open", DAY, date(2026, 11, 10)) == (1, None)
    assert await sums(ctx, "onestop.overdue_open", DAY, date(2026, 11, 11)) == (1, None)


# ---------------------------------------------------------------- month, quarter, year ends


async def test_a_dossier_due_late_on_31_january_counts_in_january_not_february(
    ctx: AppContext,
) -> None:
    await ingest(
        ctx, [due_on(local(date(2026, 1, 31), time(23, 59, 59)))], now=local(date(2026, 2, 3))
    )
    assert await sums(ctx, "onestop.on_time_rate", MONTH, date(2026, 1, 1)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", MONTH, date(2026, 2, 1)) is None


async def test_overdue_at_the_end_of_january_is_judged_at_local_midnight_of_1_february(
    ctx: AppContext,
) -> None:
    late = local(date(2026, 1, 31), time(23, 30))  # overdue before January ends
    on_the_boundary = local(date(2026, 2, 1), time(0))  # due as February begins: not overdue
    records = [
        due_on(due, resolved_at=None, status=DossierStatus.PROCESSING)
        for due in (late, on_the_boundary)
    ]
    await ingest(ctx, records, now=local(date(2026, 2, 5)))
    assert await sums(ctx, "onestop.overdue_open", MONTH, date(2026, 1, 1)) == (1, None)
    assert await sums(ctx, "onestop.overdue_open", MONTH, date(2026, 2, 1)) == (2, None)


def test_february_2028_has_29_days_and_ends_at_local_midnight_of_1_march() -> None:
    february = Period.containing(MONTH, date(2028, 2, 29))
    assert february.start == date(2028, 2, 1) and february.last_day == date(2028, 2, 29)
    assert len(list(february.days())) == 29
    assert february.bounds(TZ)[1] == datetime(2028, 2, 29, 17, 0, tzinfo=UTC)


async def test_a_dossier_due_on_the_leap_day_counts_in_february_2028(ctx: AppContext) -> None:
    await ingest(
        ctx,
        [due_on(local(date(2028, 2, 29), time(23))), due_on(local(date(2028, 3, 1), time(0)))],
        now=local(date(2028, 3, 5)),
    )
    assert await sums(ctx, "onestop.on_time_rate", DAY, date(2028, 2, 29)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", MONTH, date(2028, 2, 1)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", MONTH, date(2028, 3, 1)) == (1, 1)


async def test_31_march_counts_in_the_first_quarter_and_1_april_in_the_second(
    ctx: AppContext,
) -> None:
    await ingest(
        ctx,
        [due_on(local(date(2026, 3, 31), time(23))), due_on(local(date(2026, 4, 1), time(0)))],
        now=local(date(2026, 4, 10)),
    )
    assert await sums(ctx, "onestop.on_time_rate", QUARTER, date(2026, 1, 1)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", QUARTER, date(2026, 4, 1)) == (1, 1)


async def test_31_december_counts_in_its_year_and_1_january_in_the_next(
    ctx: AppContext,
) -> None:
    await ingest(
        ctx,
        [due_on(local(date(2026, 12, 31), time(23))), due_on(local(date(2027, 1, 1), time(0)))],
        now=local(date(2027, 1, 10)),
    )
    assert await sums(ctx, "onestop.on_time_rate", YEAR, date(2026, 1, 1)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", YEAR, date(2027, 1, 1)) == (1, 1)
    assert await sums(ctx, "onestop.on_time_rate", QUARTER, date(2026, 10, 1)) == (1, 1)


# ---------------------------------------------------------------- Tết 2026 (16–20 February)


def test_five_working_days_from_before_tet_2026_end_a_week_after_it() -> None:
    # Friday 13 February; 16–20 February are Tết holidays, so 23–27 February are the five days.
    assert WorkingCalendar().add_working_days(date(2026, 2, 13), 5) == date(2026, 2, 27)


async def test_a_dossier_received_before_tet_due_after_it_is_on_time_when_ended_by_then(
    ctx: AppContext,
) -> None:
    received = local(date(2026, 2, 13))
    due = local(WorkingCalendar().add_working_days(date(2026, 2, 13), 5), time(17))
    dossier = make_dossier(
        received_at=received,
        due_at=due,
        resolved_at=local(date(2026, 2, 26), time(16)),
        status=DossierStatus.PROCESSED,
        source_updated_at=due,
    )
    await ingest(ctx, [dossier], now=local(date(2026, 3, 2)))
    assert await sums(ctx, "onestop.on_time_rate", DAY, date(2026, 2, 27)) == (1, 1)


async def test_mean_resolution_days_across_tet_count_no_holiday(ctx: AppContext) -> None:
    # 09:00 Friday 13 February → 09:00 Tuesday 24 February: 6.5 office hours of the 13th, all of
    # Monday 23rd and 1.5 hours of the 24th; the Tết week and weekends count nothing.
    dossier = make_dossier(
        received_at=local(date(2026, 2, 13)),
        due_at=local(date(2026, 2, 27), time(17)),
        resolved_at=local(date(2026, 2, 24)),
        status=DossierStatus.PROCESSED,
        source_updated_at=local(date(2026, 2, 24)),
    )
    await ingest(ctx, [dossier], now=local(date(2026, 3, 2)))
    assert await sums(ctx, "onestop.mean_resolution_days", MONTH, date(2026, 2, 1)) == (2.0, 1)
