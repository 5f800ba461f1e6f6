"""The KPI engine: on-time rate and overdue count per commune and province, day and month."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from ioc.context import AppContext
from ioc.ingest.service import ingest_batch
from ioc.kpi.catalog import CATALOG, KPIS
from ioc.kpi.engine import compute
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.reads import SeriesCache, breakdown
from ioc.kpi.service import (
    CellValue,
    count_stock,
    current_value,
    current_values,
    recompute,
    refresh,
    store_stock,
)
from ioc.models import PollRun
from ioc.sdk import Batch, Dossier, DossierStatus, Encounter, EncounterClass, Record
from ioc.units.service import COMMUNE_LEVEL, unit_codes
from tests.support.factories import BIEN_HOA, TRAN_BIEN, make_dossier, make_instance
from tests.support.statements import statements_sent

# 2026-11-20 10:00 local time.
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
DUE = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)  # 17:00 local on 10 November


def dossier(unit: str, *, resolved_after: timedelta | None, **overrides: object) -> Dossier:
    """A dossier due on 10 November, resolved `resolved_after` its due time (None: open)."""
    received = DUE - timedelta(days=7)
    resolved = DUE + resolved_after if resolved_after is not None else None
    values: dict[str, object] = {
        "unit_code": unit,
        "received_at": received,
        "due_at": DUE,
        "resolved_at": resolved,
        "status": DossierStatus.PROCESSED if resolved else DossierStatus.PROCESSING,
        "source_updated_at": resolved or received,
    }
    return make_dossier(**(values | overrides))


async def ingest_and_recompute(
    ctx: AppContext,
    records: list[Dossier] | list[Record],
    *,
    instance: int | None = None,
    now: datetime = NOW,
) -> list[CellValue]:
    instance = instance or await make_instance(ctx)
    async with ctx.sessionmaker() as session, session.begin():
        result = await ingest_batch(
            session,
            instance_id=instance,
            batch=Batch(records=records),
            known_units=await unit_codes(session, level=COMMUNE_LEVEL),
            tz=ctx.settings.tz,
            now=now,
        )
        return await recompute(
            session, changes=result.changes, province_code="75", tz=ctx.settings.tz, now=now
        )


async def cell(
    ctx: AppContext, kpi: str, unit: str, kind: PeriodKind, start: date
) -> KpiValue | None:
    async with ctx.sessionmaker() as session:
        return await session.get(KpiValue, (kpi, unit, kind.value, start))


async def test_on_time_rate_counts_ended_and_open_dossiers_due_in_the_period(
    ctx: AppContext,
) -> None:
    await ingest_and_recompute(
        ctx,
        [
            dossier(BIEN_HOA, resolved_after=-timedelta(days=1)),  # early
            dossier(BIEN_HOA, resolved_after=timedelta(0)),  # exactly on time
            dossier(BIEN_HOA, resolved_after=timedelta(hours=1)),  # late
            dossier(BIEN_HOA, resolved_after=None),  # open and past due: late
            dossier(TRAN_BIEN, resolved_after=None, due_at=NOW + timedelta(days=1)),  # not yet due
            dossier(TRAN_BIEN, resolved_after=None, status=DossierStatus.WITHDRAWN),  # excluded
        ],
    )
    day = await cell(ctx, "onestop.on_time_rate", BIEN_HOA, PeriodKind.DAY, date(2026, 11, 10))
    assert day is not None and (day.numerator, day.denominator, day.value) == (2, 4, 50.0)
    month = await cell(ctx, "onestop.on_time_rate", "75", PeriodKind.MONTH, date(2026, 11, 1))
    assert month is not None and (month.numerator, month.denominator) == (3, 5)
    assert month.value == 60.0


async def test_province_is_the_sum_of_communes_never_an_average_of_rates(ctx: AppContext) -> None:
    await ingest_and_recompute(
        ctx,
        [dossier(BIEN_HOA, resolved_after=None)]
        + [dossier(TRAN_BIEN, resolved_after=timedelta(0)) for _ in range(3)],
    )
    province = await cell(ctx, "onestop.on_time_rate", "75", PeriodKind.DAY, date(2026, 11, 10))
    # Communes are 0% (0/1) and 100% (3/3): the province is 75%, not their mean of 50%.
    assert province is not None and province.value == 75.0


async def test_overdue_open_is_the_count_open_and_past_due_at_each_period_end(
    ctx: AppContext,
) -> None:
    await ingest_and_recompute(
        ctx,
        [
            dossier(BIEN_HOA, resolved_after=None),  # overdue from 10 Nov until now
            dossier(BIEN_HOA, resolved_after=timedelta(days=3)),  # overdue 10–12 Nov
            dossier(BIEN_HOA, resolved_after=-timedelta(hours=1)),  # never overdue
        ],
    )

    async def overdue_on(day: date) -> float:
        value = await cell(ctx, "onestop.overdue_open", BIEN_HOA, PeriodKind.DAY, day)
        return value.numerator if value is not None else 0

    assert await overdue_on(date(2026, 11, 9)) == 0
    assert await overdue_on(date(2026, 11, 10)) == 2
    assert await overdue_on(date(2026, 11, 12)) == 2  # resolved 13 Nov 17:00 local
    assert await overdue_on(date(2026, 11, 13)) == 1
    assert await overdue_on(date(2026, 11, 20)) == 1  # today: as of now
    async with ctx.sessionmaker() as session:
        future = await session.scalar(
            select(KpiValue).where(
                KpiValue.kpi == "onestop.overdue_open", KpiValue.period_start > date(2026, 11, 20)
            )
        )
    assert future is None


async def test_running_periods_of_a_stock_are_counted_once_at_now(ctx: AppContext) -> None:
    """Every running period is judged now: one count, at one moment, serves them all."""
    await ingest_and_recompute(ctx, [dossier(BIEN_HOA, resolved_after=None)])
    today = date(2026, 11, 20)
    running = [Period.containing(kind, today) for kind in PeriodKind]
    ended = Period(PeriodKind.DAY, today - timedelta(days=1))
    with statements_sent(ctx.engine) as statements:
        async with ctx.sessionmaker() as session:
            cells = await compute(
                session,
                KPIS["onestop.overdue_open"],
                [BIEN_HOA],
                [*running, ended],
                now=NOW,
                tz=ctx.settings.tz,
            )
    assert {period: cells[(BIEN_HOA, period)] for period in [*running, ended]} == {
        period: (1.0, None) for period in [*running, ended]
    }
    (statement,) = statements
    assert statement.count("UNION ALL") == 1  # two moments: now and yesterday's end


async def test_reads_compute_no_empty_cell_the_refresh_or_the_ingest_would_have_stored(
    ctx: AppContext,
) -> None:
    """The refresh stores its empty running cells (not reported as changes: they read as zero
    already); an in-period cell with something in it is stored by the ingest, so a missing one
    is empty. Either way a unit's current values are read without counting its records."""
    await ingest_and_recompute(ctx, [dossier(BIEN_HOA, resolved_after=-timedelta(hours=1))])
    async with ctx.sessionmaker() as session, session.begin():
        changed = await refresh(session, province_code="75", tz=ctx.settings.tz, now=NOW)
    overdue = ("onestop.overdue_open", BIEN_HOA, "day", date(2026, 11, 20))
    assert not [c for c in changed if (c.kpi.id, c.unit_code) == overdue[:2]]
    async with ctx.sessionmaker() as session:
        stored = await session.get(KpiValue, overdue)
    assert stored is not None and stored.numerator == 0
    with statements_sent(ctx.engine) as statements:
        async with ctx.sessionmaker() as session:
            reads = await current_values(session, BIEN_HOA, now=NOW, tz=ctx.settings.tz)
    assert not [s for s in statements if "FROM dossiers" in s], statements
    by_kpi = {read.kpi: read for read in reads}
    assert by_kpi["onestop.overdue_open"].value == 0  # stored empty by the refresh
    assert by_kpi["onestop.apology_rate"].value is None  # no late dossier: never stored
    assert by_kpi["onestop.on_time_rate"].value == 100.0  # stored by the ingest


@pytest.mark.parametrize(
    ("last_refreshed", "judged"),
    [
        (None, True),  # no refresh known: the first of the day
        (datetime(2026, 11, 19, 16, 59, tzinfo=UTC), True),  # the last one ran yesterday
        (datetime(2026, 11, 19, 17, 1, tzinfo=UTC), False),  # one ran today, at 00:01 local
    ],
    ids=["none-known", "last-yesterday", "one-ran-today"],
)
async def test_the_first_refresh_of_a_day_judges_yesterdays_cells_at_its_end_the_later_ones_not(
    ctx: AppContext, last_refreshed: datetime | None, judged: bool
) -> None:
    """Stored at 22:00 local on 19 November, an open dossier due at 23:00 was not overdue
    then; at the day's end it was. The first refresh of the 20th sets the 19th right; a later
    one leaves yesterday to that first one (and to the differences of later changes)."""
    evening = datetime(2026, 11, 19, 15, 0, tzinfo=UTC)  # 22:00 local
    due = evening + timedelta(hours=1)
    open_dossier = dossier(BIEN_HOA, resolved_after=None, due_at=due, received_at=evening)
    await ingest_and_recompute(ctx, [open_dossier], now=evening)
    async with ctx.sessionmaker() as session, session.begin():
        await refresh(
            session,
            province_code="75",
            tz=ctx.settings.tz,
            now=NOW,
            last_refreshed=last_refreshed,
        )
    yesterday = await cell(
        ctx, "onestop.overdue_open", BIEN_HOA, PeriodKind.DAY, date(2026, 11, 19)
    )
    today = await cell(ctx, "onestop.overdue_open", BIEN_HOA, PeriodKind.DAY, date(2026, 11, 20))
    assert today is not None and today.numerator == 1
    assert (yesterday is not None and yesterday.numerator == 1) is judged


async def test_a_stock_counted_apart_keeps_the_batches_stored_between_its_count_and_its_write(
    ctx: AppContext,
) -> None:
    """The refresh counts a stock outside the KPI lock and writes it under the lock: a batch
    stored in between moves the cells by its differences, and the write keeps them (neither
    lost, as writing the count alone would, nor counted twice)."""
    backlog = KPIS["onestop.backlog"]
    await ingest_and_recompute(ctx, [dossier(BIEN_HOA, resolved_after=None) for _ in range(3)])
    async with ctx.sessionmaker() as session:
        count = await count_stock(session, backlog, province_code="75", tz=ctx.settings.tz, now=NOW)
    between = [dossier(BIEN_HOA, resolved_after=None), dossier(TRAN_BIEN, resolved_after=None)]
    await ingest_and_recompute(ctx, between)
    async with ctx.sessionmaker() as session, session.begin():
        await store_stock(session, count, province_code="75")
    today = date(2026, 11, 20)
    for unit, open_now in ((BIEN_HOA, 4), (TRAN_BIEN, 1), ("75", 5)):
        stored = await cell(ctx, "onestop.backlog", unit, PeriodKind.DAY, today)
        assert stored is not None and stored.numerator == open_now, unit
    async with ctx.sessionmaker() as session:
        counted = await compute(
            session, backlog, [BIEN_HOA, TRAN_BIEN], [Period(PeriodKind.DAY, today)],
            now=NOW, tz=ctx.settings.tz,
        )  # fmt: skip
    assert {unit: sums[0] for (unit, _), sums in counted.items()} == {BIEN_HOA: 4, TRAN_BIEN: 1}


async def test_recompute_reports_only_cells_whose_value_changed(ctx: AppContext) -> None:
    records = [dossier(BIEN_HOA, resolved_after=None)]
    instance = await make_instance(ctx)
    first = await ingest_and_recompute(ctx, records, instance=instance)
    assert first, "the first ingest creates cells"
    again = await ingest_and_recompute(ctx, records, instance=instance)
    assert again == []


async def test_a_record_moved_to_another_unit_and_day_is_taken_out_of_its_old_median_cell(
    ctx: AppContext,
) -> None:
    # Medians are recomputed from the records: the old version's cell is found from the
    # unit and date the ingest read before overwriting it.
    instance = await make_instance(ctx, kind="fhir")

    def visit(unit: str, start: datetime, wait: float, version: int) -> Encounter:
        return Encounter(
            external_id="E1",
            unit_code=unit,
            facility_code="BV1",
            encounter_class=EncounterClass.EMERGENCY,
            status="finished",
            start_at=start,
            wait_minutes=wait,
            source_updated_at=NOW - timedelta(hours=10 - version),
        )

    first = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)
    second = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)
    await ingest_and_recompute(ctx, [visit(BIEN_HOA, first, 40.0, 1)], instance=instance)
    day = PeriodKind.DAY
    assert (
        await cell(ctx, "health.er_wait_minutes", BIEN_HOA, day, date(2026, 11, 18))
    ) is not None
    await ingest_and_recompute(ctx, [visit(TRAN_BIEN, second, 20.0, 2)], instance=instance)
    old = await cell(ctx, "health.er_wait_minutes", BIEN_HOA, day, date(2026, 11, 18))
    new = await cell(ctx, "health.er_wait_minutes", TRAN_BIEN, day, date(2026, 11, 19))
    assert old is None or old.value is None
    assert new is not None and new.value == 20.0


async def test_current_value_reads_the_headline_period(ctx: AppContext) -> None:
    await ingest_and_recompute(ctx, [dossier(BIEN_HOA, resolved_after=None)])
    async with ctx.sessionmaker() as session:
        overdue = await current_value(
            session, KPIS["onestop.overdue_open"], "75", now=NOW, tz=ctx.settings.tz
        )
        rate = await current_value(
            session, KPIS["onestop.on_time_rate"], "75", now=NOW, tz=ctx.settings.tz
        )
    assert (overdue.period_kind, str(overdue.period_start), overdue.value) == (
        "day",
        "2026-11-20",
        1,
    )
    assert (rate.period_kind, str(rate.period_start), rate.value) == ("month", "2026-11-01", 0.0)
    assert rate.name_vi == "Tỷ lệ hồ sơ đúng hạn"


def test_month_period_ends_on_the_first_of_next_month_at_local_midnight() -> None:
    from zoneinfo import ZoneInfo

    period = Period.containing(PeriodKind.MONTH, date(2026, 12, 31))
    start, end = period.bounds(ZoneInfo("Asia/Ho_Chi_Minh"))
    assert period.start == date(2026, 12, 1) and period.end == date(2027, 1, 1)
    assert end == datetime(2026, 12, 31, 17, 0, tzinfo=UTC)
    assert start == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)


async def test_a_period_not_yet_recomputed_is_computed_on_read_not_shown_as_zero(
    ctx: AppContext,
) -> None:
    await ingest_and_recompute(ctx, [dossier(BIEN_HOA, resolved_after=None)])
    next_day = NOW + timedelta(days=1)  # no recompute has stored that day's cells yet
    async with ctx.sessionmaker() as session:
        assert (
            await session.get(KpiValue, ("onestop.overdue_open", "75", "day", date(2026, 11, 21)))
            is None
        )
        overdue = await current_value(
            session, KPIS["onestop.overdue_open"], "75", now=next_day, tz=ctx.settings.tz
        )
        commune = await current_value(
            session, KPIS["onestop.overdue_open"], BIEN_HOA, now=next_day, tz=ctx.settings.tz
        )
    assert (str(overdue.period_start), overdue.value) == ("2026-11-21", 1)
    assert commune.value == 1


CURRENT_VALUE_SITUATIONS = {
    "no record at all": (None, NOW),
    "stored cells": (BIEN_HOA, NOW),
    "a day no recompute stored yet": (BIEN_HOA, NOW + timedelta(days=1)),
    "a month no recompute stored yet": (BIEN_HOA, NOW + timedelta(days=12)),
}


@pytest.mark.parametrize(
    ("with_dossier_in", "now"),
    CURRENT_VALUE_SITUATIONS.values(),
    ids=CURRENT_VALUE_SITUATIONS.keys(),
)
@pytest.mark.parametrize("unit", ["75", BIEN_HOA, TRAN_BIEN])
async def test_all_current_values_at_once_equal_each_kpi_s_current_value(
    ctx: AppContext, with_dossier_in: str | None, now: datetime, unit: str
) -> None:
    if with_dossier_in is not None:
        await ingest_and_recompute(
            ctx,
            [
                dossier(with_dossier_in, resolved_after=None),
                dossier(with_dossier_in, resolved_after=timedelta(hours=2)),
            ],
        )
    async with ctx.sessionmaker() as session:
        together = await current_values(session, unit, now=now, tz=ctx.settings.tz)
    async with ctx.sessionmaker() as session:
        one_by_one = [
            await current_value(session, kpi, unit, now=now, tz=ctx.settings.tz) for kpi in CATALOG
        ]
    assert [v.model_dump(exclude={"computed_at"}) for v in together] == [
        v.model_dump(exclude={"computed_at"}) for v in one_by_one
    ]
    assert [v.computed_at is None for v in together] == [v.computed_at is None for v in one_by_one]


async def test_a_cell_computed_on_read_is_kept_until_a_cell_of_its_kpi_and_unit_changes(
    ctx: AppContext,
) -> None:
    """Current values keep what they computed for a cell no recompute stored (here: records
    stored without one), so the next read does not compute it again; until the cache hears
    that a cell of that KPI and unit changed."""
    instance = await make_instance(ctx)
    backlog = KPIS["onestop.backlog"]
    open_until = {"resolved_after": None, "due_at": NOW + timedelta(days=3)}

    async def store_without_recompute(record: Dossier) -> None:
        async with ctx.sessionmaker() as session, session.begin():
            await ingest_batch(
                session,
                instance_id=instance,
                batch=Batch(records=[record]),
                known_units=await unit_codes(session, level=COMMUNE_LEVEL),
                tz=ctx.settings.tz,
                now=NOW,
            )

    async def backlog_now(memo: SeriesCache | None) -> float | None:
        async with ctx.sessionmaker() as session:
            values = await current_values(
                session, BIEN_HOA, now=NOW, tz=ctx.settings.tz, kpis=[backlog], computed=memo
            )
        return values[0].value

    memo = SeriesCache()
    await store_without_recompute(dossier(BIEN_HOA, **open_until))
    assert await backlog_now(memo) == 1  # computed on read
    await store_without_recompute(dossier(BIEN_HOA, **open_until))
    assert await backlog_now(memo) == 1  # kept: not computed again
    assert await backlog_now(None) == 2  # what computing it gives now
    memo.invalidate_topic(f"kpi:onestop.backlog:{BIEN_HOA}")
    assert await backlog_now(memo) == 2


async def test_data_freshness_is_the_stalest_sources_minutes_since_its_last_successful_poll(
    ctx: AppContext,
) -> None:
    now = datetime.now(UTC) + timedelta(hours=1)  # the sources were added just now
    fresh = await make_instance(ctx, name="fresh-source")
    stale = await make_instance(ctx, name="stale-source")
    await make_instance(ctx, name="disabled-source", enabled=False)
    async with ctx.sessionmaker() as session, session.begin():
        session.add_all(
            [
                PollRun(
                    instance_id=fresh,
                    started_at=now - timedelta(minutes=2),
                    finished_at=now - timedelta(minutes=1),
                    outcome="ok",
                ),
                PollRun(
                    instance_id=stale,
                    started_at=now - timedelta(minutes=46),
                    finished_at=now - timedelta(minutes=45),
                    outcome="ok",
                ),
                PollRun(  # a failed poll is not a fresh one
                    instance_id=stale,
                    started_at=now - timedelta(minutes=6),
                    finished_at=now - timedelta(minutes=5),
                    outcome="failed",
                ),
            ]
        )
    tz = ctx.settings.tz
    async with ctx.sessionmaker() as session, session.begin():
        changed = await refresh(session, province_code="75", tz=tz, now=now)
    kpi = KPIS["system.data_freshness_minutes"]
    today = Period(PeriodKind.DAY, now.astimezone(tz).date())
    published = {(c.unit_code, c.period) for c in changed if c.kpi is kpi}
    assert ("75", today) in published
    async with ctx.sessionmaker() as session:
        headline = await current_value(session, kpi, "75", now=now, tz=tz)
        by_source = await breakdown(session, kpi, "75", today, by="source", now=now, tz=tz)
    assert (headline.value, headline.numerator, headline.denominator) == (45.0, 45.0, 2.0)
    assert [(r.key, r.numerator) for r in by_source.rows] == [
        ("stale-source", 45.0),
        ("fresh-source", 1.0),
    ]
