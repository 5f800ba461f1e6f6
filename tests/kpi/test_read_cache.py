"""The KPI read cache under another process's updates: series patched in place with the cells
published, current-values views with the headline value (also when their read is in flight),
and requests missing the same view at once sharing one read."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import event

from ioc.context import AppContext
from ioc.kit.clock import local_date
from ioc.kpi import reads
from ioc.kpi.catalog import get_kpi
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.publish import topic
from ioc.kpi.reads import ANY_KPI, CURRENT_VIEW, SeriesCache, SeriesKey
from ioc.kpi.schemas import KpiRead
from ioc.kpi.service import CellValue, to_read
from ioc.sdk import Dossier
from tests.kpi.test_publish import updates_after
from tests.support.factories import BIEN_HOA, make_dossier, make_instance, store_count_cell

UNIT = "26068"
DAY = date(2026, 11, 25)
EARLIER = date(2026, 11, 24)
BACKLOG, ON_TIME = "onestop.backlog", "onestop.on_time_rate"
VIEW = SeriesKey(ANY_KPI, UNIT, f"{CURRENT_VIEW}{BACKLOG},{ON_TIME}", DAY, DAY)
SERIES = SeriesKey(BACKLOG, UNIT, "day", DAY, DAY)
OTHER_SERIES = SeriesKey(ON_TIME, UNIT, "day", DAY, DAY)


def headline(kpi_id: str, value: float, *, start: str = "2026-11-25", at: str = "10:00") -> dict:
    """A KPI's headline cell as `KpiRead` JSON, as a worker publishes it (and a view holds it)."""
    kpi = get_kpi(kpi_id)
    kind = PeriodKind.DAY if kpi_id == BACKLOG else PeriodKind.MONTH
    period = Period(kind, date.fromisoformat(start))
    computed = datetime.fromisoformat(f"2026-11-25T{at}:00.123456+00:00")
    denominator = None if kpi_id == BACKLOG else 100.0
    cell = CellValue(kpi, UNIT, period, value, denominator, computed)
    return to_read(kpi, UNIT, period, cell).model_dump(mode="json")


def view_bytes(*items: dict) -> bytes:
    """The bytes a fresh read of the view would give."""
    return reads._KPI_READS.dump_json(reads._KPI_READS.validate_python(list(items)))


def published(item: dict) -> dict:
    """A topic's update as the worker publishes it: the headline plus the cells it changed."""
    fields = ("period_kind", "period_start", "value", "numerator", "denominator", "computed_at")
    return {**item, "changed": [{name: item[name] for name in fields}]}


def series_of(kpi_id: str, *cells: tuple[date, float, str]) -> bytes:
    """A day series over DAY's month as a fresh read gives it, holding `cells` (day, value,
    computed at HH:MM)."""
    kpi, first = get_kpi(kpi_id), Period(PeriodKind.DAY, DAY.replace(day=1))
    periods = reads.series_periods(first, Period(PeriodKind.DAY, DAY))
    rows = [
        (UNIT, day, float(value), None, datetime.fromisoformat(f"2026-11-25T{at}:00.123456+00:00"))
        for day, value, at in cells
    ] or [(UNIT, None, None, None, None)]
    return orjson.dumps(reads.series_document(kpi, UNIT, periods, rows), option=orjson.OPT_UTC_Z)


def cached(cache: SeriesCache, key: SeriesKey, data: bytes) -> None:
    cache.put(key, data, cache.ticket(key))


def test_an_update_from_another_process_patches_the_current_values_and_the_series() -> None:
    cache = SeriesCache()
    cached(cache, VIEW, view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90)))
    cached(cache, SERIES, series_of(BACKLOG, (EARLIER, 3, "09:00"), (DAY, 5, "10:00")))
    cached(cache, OTHER_SERIES, b"on-time series")
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", published(headline(BACKLOG, 6, at="10:01")))
    assert cache.get(VIEW) == view_bytes(headline(BACKLOG, 6, at="10:01"), headline(ON_TIME, 90))
    assert cache.get(SERIES) == series_of(BACKLOG, (EARLIER, 3, "09:00"), (DAY, 6, "10:01"))
    assert cache.get(OTHER_SERIES) == b"on-time series"


def test_a_series_keeps_a_point_computed_after_an_update_arriving_late() -> None:
    cache = SeriesCache()
    data = series_of(BACKLOG, (DAY, 7, "10:02"))
    cached(cache, SERIES, data)
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", published(headline(BACKLOG, 6, at="10:01")))
    assert cache.get(SERIES) == data


def test_a_series_read_in_flight_during_an_update_is_not_cached() -> None:
    cache = SeriesCache()
    ticket = cache.ticket(SERIES)  # the read begins
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", published(headline(BACKLOG, 6, at="10:01")))
    cache.put(SERIES, series_of(BACKLOG, (DAY, 5, "10:00")), ticket)
    assert cache.get(SERIES) is None


def test_an_update_without_its_changed_cells_drops_the_series() -> None:
    cache = SeriesCache()
    cached(cache, SERIES, series_of(BACKLOG, (DAY, 5, "10:00")))
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", headline(BACKLOG, 6, at="10:01"))
    assert cache.get(SERIES) is None


def open_dossier(received: datetime) -> Dossier:
    return make_dossier(
        received_at=received, due_at=received + timedelta(days=5), source_updated_at=received
    )


async def test_a_series_patched_with_a_published_update_reads_as_a_fresh_read(
    ctx: AppContext,
) -> None:
    kpi, unit = get_kpi(BACKLOG), BIEN_HOA
    span = (Period(PeriodKind.DAY, date(2026, 11, 1)), Period(PeriodKind.DAY, date(2026, 11, 20)))
    instance_id = await make_instance(ctx)
    await updates_after(ctx, [open_dossier(datetime(2026, 11, 17, 2, tzinfo=UTC))])
    remote = SeriesCache()  # another API process, holding the series before the next batch
    before, _ = await reads.series_bytes(kpi, unit, span, engine=ctx.engine, cache=remote)

    frames = await updates_after(
        ctx,
        [open_dossier(datetime(2026, 11, 19, 2, tzinfo=UTC))],
        topics=(topic(BACKLOG, unit),),
        instance_id=instance_id,
    )
    remote.update_topic(topic(BACKLOG, unit), frames[-1]["data"])

    patched, hit = await reads.series_bytes(kpi, unit, span, engine=ctx.engine, cache=remote)
    fresh, _ = await reads.series_bytes(kpi, unit, span, engine=ctx.engine, cache=SeriesCache())
    assert hit and patched != before
    assert orjson.loads(patched) == orjson.loads(fresh)


def test_updates_of_other_units_and_topics_leave_a_view_alone() -> None:
    cache = SeriesCache()
    data = view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90))
    cached(cache, VIEW, data)
    cache.update_topic(f"kpi:{BACKLOG}:75", published(headline(BACKLOG, 6)))
    cache.update_topic("connectors", [{"id": 1}])
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", {"value": 6})  # not a KpiRead: dropped instead
    assert cache.get(VIEW) is None
    cached(cache, VIEW, data)
    cache.update_topic(f"kpi:{BACKLOG}:75", published(headline(BACKLOG, 6)))
    assert cache.get(VIEW) == data


def test_an_update_of_another_headline_period_drops_the_view() -> None:
    cache = SeriesCache()
    cached(cache, VIEW, view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90)))
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", published(headline(BACKLOG, 1, start="2026-11-26")))
    assert cache.get(VIEW) is None


def test_a_view_read_while_updates_arrive_is_cached_with_them() -> None:
    cache = SeriesCache()
    ticket = cache.ticket(VIEW)  # the read begins
    cache.update_topic(f"kpi:{ON_TIME}:{UNIT}", published(headline(ON_TIME, 80, at="10:02")))
    cache.update_topic(f"kpi:{ON_TIME}:{UNIT}", published(headline(ON_TIME, 70, at="10:03")))
    read_before = view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90))
    stored = cache.put(VIEW, read_before, ticket)
    expected = view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 70, at="10:03"))
    assert stored == expected and cache.get(VIEW) == expected


def test_a_view_read_before_a_local_change_or_a_clear_is_still_refused() -> None:
    cache = SeriesCache()
    ticket = cache.ticket(VIEW)
    cache.invalidate_topic(f"kpi:{BACKLOG}:{UNIT}")  # a state too large to travel, say
    cache.put(VIEW, view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90)), ticket)
    assert cache.get(VIEW) is None
    ticket = cache.ticket(VIEW)
    cache.clear()  # the fan-out reconnected: notifications may have been missed
    cache.put(VIEW, view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90)), ticket)
    assert cache.get(VIEW) is None


def test_a_change_beside_the_headline_drops_the_series_but_not_the_current_values() -> None:
    cache = SeriesCache()
    data = view_bytes(headline(BACKLOG, 5), headline(ON_TIME, 90))
    cached(cache, VIEW, data)
    cached(cache, SERIES, b"backlog series")
    cache.forget_series_of_topic(f"kpi:{BACKLOG}:{UNIT}")
    assert cache.get(SERIES) is None
    assert cache.get(VIEW) == data


async def test_requests_missing_the_same_current_values_share_one_read(ctx: AppContext) -> None:
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(ctx.engine.sync_engine, "before_cursor_execute", count)
    kpis = [get_kpi(BACKLOG), get_kpi(ON_TIME)]
    now, tz = datetime.now(UTC), ctx.settings.tz

    async def ask(cache: SeriesCache) -> tuple[bytes, bool]:
        return await reads.current_values_bytes(ctx.sessionmaker, cache, UNIT, kpis, now=now, tz=tz)

    alone = await ask(SeriesCache())
    one_read, statements = statements, 0
    together = await asyncio.gather(*(ask(cache) for cache in [SeriesCache()] * 3))
    event.remove(ctx.engine.sync_engine, "before_cursor_execute", count)
    assert one_read > 0 and statements == one_read
    assert together == [alone] * 3  # each a miss, the same bytes


def test_expired_bytes_are_served_stale_for_their_stale_time_only() -> None:
    now = [0.0]
    cache = SeriesCache(clock=lambda: now[0])
    cache.put(VIEW, b"view", cache.ticket(VIEW), ttl_seconds=5, stale_seconds=5)
    now[0] = 4.9
    assert (cache.get(VIEW), cache.stale(VIEW)) == (b"view", None)
    now[0] = 5.1
    assert (cache.get(VIEW), cache.stale(VIEW)) == (None, b"view")
    now[0] = 10.1
    assert (cache.get(VIEW), cache.stale(VIEW)) == (None, None)


async def test_expired_current_values_are_answered_at_once_while_they_are_read_again(
    ctx: AppContext,
) -> None:
    clock = [0.0]
    cache = SeriesCache(clock=lambda: clock[0])
    kpis, now, tz = [get_kpi(BACKLOG)], datetime.now(UTC), ctx.settings.tz

    async def ask() -> tuple[list[Any], bool]:
        data, hit = await reads.current_values_bytes(
            ctx.sessionmaker, cache, UNIT, kpis, now=now, tz=tz
        )
        return [item["value"] for item in orjson.loads(data)], hit

    first = await ask()
    await store_count_cell(ctx, BACKLOG, UNIT, local_date(now, tz), 9.0, at=now)
    clock[0] = reads.CURRENT_VALUES_TTL_SECONDS + 0.1
    stale = await ask()
    reading = list(cache.flights.values())
    assert reading and not reading[0].done()  # answered before the read ended
    await asyncio.gather(*reading)
    fresh = await ask()
    clock[0] += reads.CURRENT_VALUES_TTL_SECONDS + reads.CURRENT_VALUES_STALE_SECONDS + 0.1
    too_old = await ask()
    assert first == ([0.0], False)
    assert stale == ([0.0], True)
    assert fresh == ([9.0], True)
    assert too_old == ([9.0], False)  # past its stale time: waited for


def computed_cell(value: float) -> KpiRead:
    return KpiRead.model_validate(headline(BACKLOG, value))


BACKLOG_TODAY = Period(PeriodKind.DAY, DAY)


def test_a_cell_computed_on_read_is_kept_until_a_cell_of_its_kpi_and_unit_changes() -> None:
    cache = SeriesCache()
    ticket = cache.computed_ticket(BACKLOG, UNIT)
    cache.remember_computed(BACKLOG, UNIT, BACKLOG_TODAY, computed_cell(5), ticket)
    cache.update_topic(f"kpi:{BACKLOG}:75", published(headline(BACKLOG, 6)))  # another unit
    cache.update_topic(f"kpi:{ON_TIME}:{UNIT}", published(headline(ON_TIME, 80)))  # another KPI
    assert cache.computed(BACKLOG, UNIT, BACKLOG_TODAY) == computed_cell(5)
    cache.forget_series_of_topic(f"kpi:{BACKLOG}:{UNIT}")  # a cell beside the headline changed
    assert cache.computed(BACKLOG, UNIT, BACKLOG_TODAY) is None


def test_a_cell_computed_before_a_change_of_its_kpi_and_unit_is_not_kept() -> None:
    cache = SeriesCache()
    ticket = cache.computed_ticket(BACKLOG, UNIT)  # the computation begins
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", published(headline(BACKLOG, 6)))
    cache.remember_computed(BACKLOG, UNIT, BACKLOG_TODAY, computed_cell(5), ticket)
    assert cache.computed(BACKLOG, UNIT, BACKLOG_TODAY) is None


def test_a_cell_computed_on_read_expires_after_the_refresh_interval_and_on_a_clear() -> None:
    now = [0.0]
    cache = SeriesCache(computed_ttl_seconds=60, clock=lambda: now[0])
    cache.remember_computed(BACKLOG, UNIT, BACKLOG_TODAY, computed_cell(5), 0)
    now[0] = 59.9
    assert cache.computed(BACKLOG, UNIT, BACKLOG_TODAY) == computed_cell(5)
    now[0] = 60.0
    assert cache.computed(BACKLOG, UNIT, BACKLOG_TODAY) is None
    cache.remember_computed(BACKLOG, UNIT, BACKLOG_TODAY, computed_cell(5), 0)
    cache.clear()
    assert cache.computed(BACKLOG, UNIT, BACKLOG_TODAY) is None


PROVINCE, OTHER_COMMUNE = "75", "26041"
BREAKDOWN = SeriesKey(BACKLOG, PROVINCE, f"{reads.BREAKDOWN_VIEW}day:value:links", DAY, DAY)
CHILDREN = [(BACKLOG, UNIT), (BACKLOG, OTHER_COMMUNE)]


def breakdown_of(total: float, **rows: float) -> bytes:
    """A province's backlog on DAY broken down by commune, as a fresh read gives it."""

    def row(key: str, value: float) -> dict[str, Any]:
        return {
            "key": key,
            "label": key,
            "numerator": float(value),
            "denominator": None,
            "value": float(value),
            "records": f"/records/{key}",
        }

    ordered = sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]))  # worst (largest) first
    return orjson.dumps(
        {
            "kpi": BACKLOG,
            "unit": PROVINCE,
            "period_kind": "day",
            "period_start": DAY.isoformat(),
            "by": "unit",
            "column": None,
            "value_kind": "count",
            "good_direction": "down",
            "additive": True,
            "sort": "value",
            "rows": [row(key, value) for key, value in ordered],
            "total": row(PROVINCE, total),
        }
    )


def test_a_breakdown_is_patched_with_its_children_s_cells_and_its_unit_s() -> None:
    cache = SeriesCache()
    cache.put(
        BREAKDOWN,
        breakdown_of(8, **{UNIT: 5, OTHER_COMMUNE: 3}),
        cache.ticket(BREAKDOWN, also=CHILDREN),
        also=CHILDREN,
    )
    moved = published(headline(BACKLOG, 6))
    cache.update_topic(f"kpi:{BACKLOG}:{OTHER_COMMUNE}", {**moved, "unit": OTHER_COMMUNE})
    cache.update_topic(f"kpi:{BACKLOG}:{PROVINCE}", published(headline(BACKLOG, 11)))
    yesterday = published(headline(BACKLOG, 1, start="2026-11-24"))  # another period
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", yesterday)
    assert cache.get(BREAKDOWN) == breakdown_of(11, **{UNIT: 5, OTHER_COMMUNE: 6})


def test_a_breakdown_read_while_a_child_s_cell_changes_is_not_cached() -> None:
    cache = SeriesCache()
    ticket = cache.ticket(BREAKDOWN, also=CHILDREN)
    cache.update_topic(f"kpi:{BACKLOG}:{UNIT}", published(headline(BACKLOG, 6)))
    cache.put(BREAKDOWN, breakdown_of(8, **{UNIT: 5, OTHER_COMMUNE: 3}), ticket, also=CHILDREN)
    assert cache.get(BREAKDOWN) is None


def test_a_breakdown_dropped_by_one_child_is_forgotten_by_the_others() -> None:
    cache = SeriesCache()
    data = breakdown_of(8, **{UNIT: 5, OTHER_COMMUNE: 3})
    cache.put(BREAKDOWN, data, cache.ticket(BREAKDOWN, also=CHILDREN), also=CHILDREN)
    cache.forget_series_of_topic(f"kpi:{BACKLOG}:{UNIT}")  # a change without its values
    assert cache.get(BREAKDOWN) is None
    cache.update_topic(f"kpi:{BACKLOG}:{OTHER_COMMUNE}", published(headline(BACKLOG, 6)))
    cache.put(BREAKDOWN, data, cache.ticket(BREAKDOWN, also=CHILDREN), also=CHILDREN)
    assert cache.get(BREAKDOWN) == data


async def test_a_breakdown_patched_with_published_updates_reads_as_a_fresh_read(
    ctx: AppContext,
) -> None:
    kpi = get_kpi(BACKLOG)
    day = Period(PeriodKind.DAY, date(2026, 11, 20))
    instance_id = await make_instance(ctx)
    await updates_after(ctx, [open_dossier(datetime(2026, 11, 17, 2, tzinfo=UTC))])

    async def read(cache: SeriesCache) -> tuple[bytes, bool]:
        async with ctx.read_sessionmaker() as session:
            return await reads.breakdown_bytes(
                session,
                cache,
                kpi,
                PROVINCE,
                day,
                by="unit",
                sort="value",
                links=True,
                now=datetime(2026, 11, 20, 3, tzinfo=UTC),
                tz=ctx.settings.tz,
            )

    remote = SeriesCache()  # another API process, holding the breakdown before the next batch
    before, _ = await read(remote)
    updates = await updates_after(
        ctx,
        [open_dossier(datetime(2026, 11, 19, 2, tzinfo=UTC))],
        topics=(topic(BACKLOG, BIEN_HOA), topic(BACKLOG, PROVINCE)),
        instance_id=instance_id,
    )
    for update in updates:
        remote.update_topic(update["topic"], update["data"])

    patched, hit = await read(remote)
    fresh, _ = await read(SeriesCache())
    assert hit and patched != before
    assert orjson.loads(patched) == orjson.loads(fresh)
