"""KPI benchmark: rebuild, incremental recompute and series reads over millions of dossiers.

One run on a fresh PostgreSQL database:

1. loads `--dossiers` (default 5,000,000) dossiers of Đồng Nai's 95 communes over `--days`
   (default 730) days, generated in SQL with `generate_series` in two parallel sessions (ten
   times faster than building rows in Python and COPYing them); the local-date columns and
   `resolution_working_days` are computed in SQL the way `STORES["dossier"].to_row` does (the
   working-day calendar comes from `WorkingCalendar` as a table) and checked against `to_row`
   on a sample; secondary indexes are built after the load, then VACUUM ANALYZE;
2. the floor: PostgreSQL's raw GROUP BY (unit_code, due_date) with the on-time CASE sums over
   all rows, with its plan;
3. the rebuild of the dossier KPIs (`service.rebuild`, one transaction), `--rebuild-repeats`
   times: the first over an empty table, the others over the cells it stored (as `ioc kpi
   rebuild` runs); time per stage (slot aggregates, cells, store) and the plans of the slowest
   statements; then the write floor: the stored cells copied into a table without an index and
   its primary key built;
4. incremental recompute: `--batches` pages of `--batch-size` dossiers (half newer versions of
   dossiers received in the last 60 days, half new ones), each `ingest_batch` + `recompute` in
   one transaction as the runtime does; after each, the floor: the batch's records read by key
   and the cells it changed upserted +0 (rolled back), on another connection;
5. series reads over HTTP: the app under uvicorn (one worker) in a subprocess, driven by
   `bench/load_client.py` in another process, repeating one URL (cached) and varying unit and
   range (uncached), closed loop (highest rate) and open loop at the target rate (latency).

    python bench/kpi.py [--dossiers 5000000] [--batches 20] [--batch-size 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    create_database,
    database_exists,
    database_urls,
    fresh_postgres,
    machine,
    percentile,
    postgres_copy_of,
    write_results,
)
from ioc.config import Settings
from ioc.context import build_context
from ioc.ingest.service import ingest_batch
from ioc.kit.clock import local_date, local_midnight, utcnow
from ioc.kpi import delta_sql
from ioc.kpi import service as kpi_service
from ioc.kpi.catalog import CANCELLED, CATALOG
from ioc.kpi.models import KpiValue
from ioc.migrations import upgrade
from ioc.records.stores import DEFAULT_CALENDAR, STORES, due_soon_from
from ioc.sdk import Batch, Channel, Dossier, DossierStatus
from ioc.units.service import province_rows, sync_units, unit_codes
from tests.support.factories import make_instance

PROVINCE = 75
PROVINCE_CODE = str(PROVINCE)
TZ_NAME = "Asia/Ho_Chi_Minh"
TZ = ZoneInfo(TZ_NAME)
DOSSIER_KPIS = [k for k in CATALOG if k.record_type == "dossier"]
SERIES_PATH = (
    "/api/v1/kpis/onestop.on_time_rate/series?unit={unit}&period=day&from={start}&to={end}"
)
FALLBACK_PATH = "/api/v1/kpis?unit={unit}"
BENCH = Path(__file__).resolve().parent
DUE_AHEAD = timedelta(days=40)
"""How far after today the working-day calendar table reaches (the longest SLA is 30 days)."""

# ---------------------------------------------------------------- 1. data

# Office-hours share of a local time of day, as ioc.kpi.calendar._office_fraction (07:30–11:30,
# 13:00–17:00; 8 hours).
_FRACTION = (
    "((greatest(0, least({s}, 41400) - 27000) + greatest(0, least({s}, 61200) - 46800)) / 28800.0)"
)


def _seconds(column: str) -> str:
    return f"extract(epoch from ({column} AT TIME ZONE '{TZ_NAME}')::time)::float8"


GENERATE = f"""
INSERT INTO dossiers (
    instance_id, external_id, unit_code, source_updated_at, ingested_at, procedure_code,
    procedure_name, field_code, field_name, agency_code, agency_name, channel, status,
    received_at, due_at, resolved_at, returned_at, received_date, due_date, resolved_date, fee,
    paid_online, digitised, reused_national_data, electronic_result, synced_to_portal,
    apology_issued, supplements, resolution_working_days, due_soon_from)
SELECT
    $1::int, external_id, unit_code, coalesce(returned_at, resolved_at, received_at),
    $3::timestamptz,
    procedure_code, 'Thủ tục hành chính ' || procedure_code, field_code,
    'Lĩnh vực ' || field_code, agency_code, 'Cơ quan ' || agency_code, channel, status,
    received_at, due_at, resolved_at, returned_at, received_date, due_date, resolved_date, fee,
    paid_online, digitised, reused_national_data, electronic_result, synced_to_portal,
    apology_issued, '[]',
    CASE
        WHEN resolved_at IS NULL THEN NULL
        WHEN resolved_at <= received_at THEN 0.0
        ELSE round(((ce.before - cs.before)::float8
            - CASE WHEN cs.working THEN {_FRACTION.format(s=_seconds("received_at"))} ELSE 0 END
            + CASE WHEN ce.working THEN {_FRACTION.format(s=_seconds("resolved_at"))} ELSE 0 END
        )::numeric, 4)::float8
    END,
    cd.soon_from::timestamp AT TIME ZONE '{TZ_NAME}'
FROM (
    SELECT *,
        (received_at AT TIME ZONE '{TZ_NAME}')::date AS received_date,
        (due_at AT TIME ZONE '{TZ_NAME}')::date AS due_date,
        (resolved_at AT TIME ZONE '{TZ_NAME}')::date AS resolved_date,
        CASE WHEN cancelled THEN (ARRAY[3, 7, 8])[1 + floor(r_status * 3)::int]
             WHEN resolved_at IS NULL
                 THEN (ARRAY[2, 4, 4, 4, 4, 5, 6])[1 + floor(r_open * 7)::int]
             WHEN r_flags < 0.8 THEN 10 ELSE 9 END AS status,
        CASE WHEN resolved_at IS NOT NULL AND r_flags < 0.8
             THEN least(resolved_at + r_flags * interval '2 days', $2::timestamptz)
        END AS returned_at,
        coalesce(resolved_at > due_at, due_at < $2::timestamptz)
            AND NOT cancelled AND r_apology < 0.6 AS apology_issued,
        fee > 0 AND channel = 'online' AND r_apology < 0.85 AS paid_online
    FROM (
        SELECT *,
            CASE WHEN cancelled OR r_open < 0.004 OR candidate_resolved_at > $2::timestamptz
                 THEN NULL
                 ELSE candidate_resolved_at END AS resolved_at
        FROM (
            SELECT *,
                received_at + sla_days * r_speed * 1.08 * interval '1 day' AS candidate_resolved_at,
                received_at + sla_days * interval '1 day' AS due_at
            FROM (
                SELECT
                    'D' || lpad(i::text, 10, '0') AS external_id,
                    ($4::text[])[1 + floor(array_length($4::text[], 1)
                        * power(r_unit, 1.5))::int] AS unit_code,
                    least(
                        (($5::date - floor(r_day * $6::int)::int)
                            + interval '7 hours 30 minutes' + r_time * interval '9 hours 30 minutes'
                        ) AT TIME ZONE '{TZ_NAME}',
                        $2::timestamptz - r_time * interval '1 hour') AS received_at,
                    (ARRAY[1, 3, 5, 7, 10, 15, 20, 30])[1 + floor(r_sla * 8)::int] AS sla_days,
                    '1.00' || (1000 + floor(r_proc * 400)::int) AS procedure_code,
                    (ARRAY['DD', 'XD', 'KD', 'HT', 'CT', 'TP', 'GT', 'YT', 'GD', 'LD', 'TC',
                           'NV'])[1 + floor(r_proc * 4800)::int % 12] AS field_code,
                    CASE WHEN r_agency < 0.7 THEN 'UBND'
                         ELSE (ARRAY['STP', 'SXD', 'SNNMT', 'SCT', 'SYT', 'SGDDT', 'SNV'])
                              [1 + floor((r_agency - 0.7) / 0.3 * 7)::int] END AS agency_code,
                    CASE WHEN r_channel < 0.62 THEN 'online' WHEN r_channel < 0.97 THEN 'direct'
                         ELSE 'postal' END AS channel,
                    CASE WHEN r_fee < 0.35 THEN 50000.0 * (1 + floor(r_fee * 40)) ELSE 0.0 END
                        AS fee,
                    r_status < 0.02 AS cancelled,
                    r_digitised < 0.78 AS digitised,
                    r_reused < 0.45 AS reused_national_data,
                    r_electronic < 0.55 AS electronic_result,
                    r_synced < 0.96 AS synced_to_portal,
                    r_speed, r_open, r_status, r_flags, r_apology
                FROM (
                    SELECT i, random() AS r_unit, random() AS r_day, random() AS r_time,
                        random() AS r_sla, random() AS r_speed, random() AS r_open,
                        random() AS r_status, random() AS r_flags, random() AS r_apology,
                        random() AS r_proc, random() AS r_agency, random() AS r_channel,
                        random() AS r_fee, random() AS r_digitised, random() AS r_reused,
                        random() AS r_electronic, random() AS r_synced
                    FROM generate_series($7::bigint, $8::bigint) AS i
                    OFFSET 0
                ) AS draws
                OFFSET 0
            ) AS base
        ) AS timed
    ) AS resolved
) AS d
JOIN bench_calendar AS cs ON cs.day = d.received_date
LEFT JOIN bench_calendar AS ce ON ce.day = d.resolved_date
LEFT JOIN bench_calendar AS cd ON cd.day = d.due_date
"""


async def load(url: str, dsn: str, *, dossiers: int, days: int, now: datetime) -> dict[str, Any]:
    """Fill `dossiers`; returns timings, sizes and the check against `to_row`."""
    ctx = build_context(Settings(database_url=url, province=PROVINCE))
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await sync_units(session, PROVINCE)
        instance_id = await make_instance(ctx, name="bench-kpi")
    finally:
        await ctx.engine.dispose()
    communes = sorted(r["code"] for r in province_rows(PROVINCE) if r["level"] == "commune")
    today = local_date(now, TZ)
    connection = await asyncpg.connect(dsn)
    try:
        await _calendar_table(connection, today - timedelta(days=days + 10), today + DUE_AHEAD)
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dossiers'"
            " AND indexname LIKE 'ix_%'"
        )
        for index in indexes:
            await connection.execute(f'DROP INDEX "{index["indexname"]}"')
        started = time.perf_counter()
        half = dossiers // 2
        await asyncio.gather(
            _generate(dsn, instance_id, communes, now, days, 1, half, seed=0.11),
            _generate(dsn, instance_id, communes, now, days, half + 1, dossiers, seed=0.22),
        )
        inserted = time.perf_counter()
        await connection.execute("SET maintenance_work_mem = '512MB'")
        for index in indexes:
            await connection.execute(index["indexdef"])
        indexed = time.perf_counter()
        await connection.execute("VACUUM ANALYZE dossiers")
        analysed = time.perf_counter()
        size = await connection.fetchval(
            "SELECT pg_size_pretty(pg_total_relation_size('dossiers'))"
        )
        shape = await connection.fetchrow(
            f"""SELECT count(*) AS rows, count(DISTINCT unit_code) AS communes,
                min(received_date) AS first_day, max(received_date) AS last_day,
                round(avg((resolved_at IS NULL AND status NOT IN ({_in(CANCELLED)})
                    )::int), 4) AS open_share,
                round(avg((resolved_at > due_at)::int), 4) AS late_share_of_resolved,
                round(avg((channel = 'online')::int), 4) AS online_share
            FROM dossiers"""
        )
        check = await _check_derived(connection)
    finally:
        await connection.close()
    return {
        "method": "SQL generate_series, 2 sessions, indexes built after",
        "dossiers": dossiers,
        "days": days,
        "instance_id": instance_id,
        "insert_seconds": round(inserted - started, 1),
        "index_seconds": round(indexed - inserted, 1),
        "vacuum_analyze_seconds": round(analysed - indexed, 1),
        "total_seconds": round(analysed - started, 1),
        "table_size": size,
        "shape": {k: (float(v) if hasattr(v, "as_tuple") else v) for k, v in shape.items()},
        "derived_columns_check": check,
    }


def _in(values: list[int]) -> str:
    return ", ".join(str(v) for v in values)


async def _calendar_table(connection: asyncpg.Connection, first: date, last: date) -> None:
    """Working days as a table: `before` counts the working days before `day`, so the working
    days in [a, b) are before(b) − before(a), as WorkingCalendar._count_working; `soon_from` is
    the local day from which a dossier due on `day` is due soon (`due_soon_from`)."""
    rows, before = [], 0
    day = first
    while day <= last + timedelta(days=1):
        working = DEFAULT_CALENDAR.is_working_day(day)
        soon = due_soon_from(local_midnight(day, TZ), TZ, DEFAULT_CALENDAR)
        assert soon is not None
        rows.append((day, working, before, local_date(soon, TZ)))
        before += working
        day += timedelta(days=1)
    await connection.execute(
        "CREATE TABLE bench_calendar"
        " (day date PRIMARY KEY, working boolean, before integer, soon_from date)"
    )
    await connection.copy_records_to_table("bench_calendar", records=rows)
    await connection.execute("ANALYZE bench_calendar")


async def _generate(
    dsn: str,
    instance_id: int,
    communes: list[str],
    now: datetime,
    days: int,
    first: int,
    last: int,
    *,
    seed: float,
) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute(f"SELECT setseed({seed})")
        await connection.execute(
            GENERATE,
            instance_id,
            now,
            now,
            communes,
            local_date(now, TZ),
            days,
            first,
            last,
            timeout=None,
        )
    finally:
        await connection.close()


async def _check_derived(connection: asyncpg.Connection, sample: int = 3000) -> dict[str, Any]:
    """The derived columns of a sample of generated rows against `to_row` of the same dossier."""
    rows = await connection.fetch(
        f"SELECT * FROM dossiers TABLESAMPLE SYSTEM (1) REPEATABLE (7) LIMIT {sample}"
    )
    store = STORES["dossier"]
    derived = (
        "received_date",
        "due_date",
        "resolved_date",
        "resolution_working_days",
        "due_soon_from",
    )
    fields = set(Dossier.model_fields)
    mismatches: list[dict[str, Any]] = []
    for row in rows:
        values = {k: v for k, v in dict(row).items() if k in fields}
        values["supplements"] = ()
        expected = store.to_row(Dossier(**values), instance_id=row["instance_id"], tz=TZ, now=NOW0)
        for name in derived:
            if expected[name] != row[name]:
                mismatches.append(
                    {
                        "id": row["external_id"],
                        "column": name,
                        "to_row": expected[name],
                        "generated": row[name],
                    }
                )
    return {"sample": len(rows), "mismatches": len(mismatches), "examples": mismatches[:3]}


NOW0 = datetime(2000, 1, 1, tzinfo=UTC)

# ---------------------------------------------------------------- 2. the floor

RAW_GROUP_BY = f"""
SELECT unit_code, due_date,
       sum(CASE WHEN (resolved_at IS NOT NULL AND resolved_at <= due_at)
                  OR (resolved_at IS NULL AND due_at >= $1) THEN 1 ELSE 0 END) AS on_time,
       count(*) AS counted
FROM dossiers
WHERE status NOT IN ({_in(CANCELLED)}) AND due_at IS NOT NULL
GROUP BY unit_code, due_date
"""


async def raw_floor(dsn: str, now: datetime, repeats: int = 3) -> dict[str, Any]:
    """PostgreSQL's own GROUP BY over every dossier: the floor of any rebuild of one KPI."""
    connection = await asyncpg.connect(dsn)
    try:
        times, cells = [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            cells = len(await connection.fetch(RAW_GROUP_BY, now))
            times.append(time.perf_counter() - t0)
        plan = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + RAW_GROUP_BY, now)
        serial = await _timed_fetch(connection, "SET max_parallel_workers_per_gather = 0", now)
    finally:
        await connection.close()
    return {
        "query": " ".join(RAW_GROUP_BY.split()),
        "cells": cells,
        "seconds_first": round(times[0], 3),
        "seconds_best": round(min(times), 3),
        "seconds_serial_no_parallel_workers": serial,
        "plan": [r[0] for r in plan],
    }


async def _timed_fetch(connection: asyncpg.Connection, setting: str, now: datetime) -> float:
    await connection.execute(setting)
    t0 = time.perf_counter()
    await connection.fetch(RAW_GROUP_BY, now)
    elapsed = time.perf_counter() - t0
    await connection.execute("RESET max_parallel_workers_per_gather")
    return round(elapsed, 3)


async def write_floor(dsn: str) -> dict[str, Any]:
    """What storing the rebuilt cells costs PostgreSQL at the least: the stored cells copied into
    a new table without an index, then its primary key built (rolled back)."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            t0 = time.perf_counter()
            await connection.execute(
                "CREATE TEMPORARY TABLE floor_cells (LIKE kpi_values) ON COMMIT DROP;"
                " INSERT INTO floor_cells SELECT * FROM kpi_values"
            )
            t1 = time.perf_counter()
            await connection.execute(
                "ALTER TABLE floor_cells"
                " ADD PRIMARY KEY (kpi, unit_code, period_kind, period_start)"
            )
            t2 = time.perf_counter()
            raise _RolledBack
    except _RolledBack:
        pass
    finally:
        await connection.close()
    return {
        "insert_seconds": round(t1 - t0, 3),
        "primary_key_seconds": round(t2 - t1, 3),
        "seconds": round(t2 - t0, 3),
    }


class _RolledBack(Exception):
    """Leaves a transaction that only measured something."""


UPSERT_FLOOR = """
INSERT INTO kpi_values AS v (kpi, unit_code, period_kind, period_start, numerator, denominator,
    value, computed_at)
SELECT kpi, unit, kind, start, 0.0, NULL, NULL, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::date[]) AS c(kpi, unit, kind, start)
ON CONFLICT (kpi, unit_code, period_kind, period_start) DO UPDATE SET
    numerator = v.numerator + excluded.numerator, computed_at = excluded.computed_at
"""
LOOKUP_FLOOR = """
SELECT count(*) FROM unnest($2::text[]) AS i(external_id)
CROSS JOIN LATERAL (
    SELECT * FROM dossiers AS r WHERE r.instance_id = $1 AND r.external_id = i.external_id
    OFFSET 0
) AS n
"""


async def recompute_floor(
    dsn: str, *, instance_id: int, page: list[Dossier], changed: list[Any]
) -> tuple[float, float]:
    """What a batch's recompute costs PostgreSQL at the least, in seconds: reading the batch's
    records by key once, and upserting the cells it changed (+0, rolled back)."""
    connection = await asyncpg.connect(dsn)
    try:
        ids = [d.external_id for d in page]
        t0 = time.perf_counter()
        await connection.fetchval(LOOKUP_FLOOR, instance_id, ids)
        lookup = time.perf_counter() - t0
        cells = sorted(
            {(c.kpi.id, c.unit_code, c.period.kind.value, c.period.start) for c in changed}
        )
        keys = [list(column) for column in zip(*cells, strict=True)]
        try:
            async with connection.transaction():
                t0 = time.perf_counter()
                await connection.execute(UPSERT_FLOOR, *keys)
                upsert = time.perf_counter() - t0
                raise _RolledBack
        except _RolledBack:
            pass
    finally:
        await connection.close()
    return lookup, upsert


# ---------------------------------------------------------------- instrumentation


class Probe:
    """Times the KPI service's stages and every SQL statement while it is installed."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = defaultdict(float)
        self.statements: list[tuple[float, str, Any]] = []
        self.sql_seconds = 0.0
        self.sql_count = 0

    @contextmanager
    def installed(self, engine: Any) -> Any:
        """Wrap compute, _store_changed and _roll_up; listen to the engine's statements."""
        from sqlalchemy import event

        labels = {
            "compute": "compute (SQL over dossiers)",
            "_store_changed": "store cells",
            "_roll_up": "province roll-up",
            "_totals": "province totals",
        }
        originals = {n: getattr(kpi_service, n) for n in labels if hasattr(kpi_service, n)}

        def wrap(name: str) -> Any:
            async def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await originals[name](*args, **kwargs)
                finally:
                    self.stages[labels[name]] += time.perf_counter() - t0

            return timed

        def before(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            conn.info.setdefault("bench_t0", []).append(time.perf_counter())

        def after(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            elapsed = time.perf_counter() - conn.info["bench_t0"].pop()
            self.sql_seconds += elapsed
            self.sql_count += 1
            if not many:
                self.statements.append((elapsed, statement, params))
                self.statements.sort(key=lambda s: -s[0])
                del self.statements[40:]

        for name in originals:
            setattr(kpi_service, name, wrap(name))
        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(kpi_service, name, original)
            event.remove(engine.sync_engine, "before_cursor_execute", before)
            event.remove(engine.sync_engine, "after_cursor_execute", after)

    def reset(self) -> tuple[dict[str, float], float, int]:
        """The stage times, SQL time and statement count since the last reset."""
        stages, sql, count = dict(self.stages), self.sql_seconds, self.sql_count
        self.stages.clear()
        self.sql_seconds, self.sql_count = 0.0, 0
        return {k: round(v, 3) for k, v in stages.items()}, round(sql, 3), count

    def slowest(self, distinct: int = 3) -> list[tuple[float, str, Any]]:
        """The slowest statements, one per statement text."""
        seen: set[str] = set()
        found = []
        for elapsed, statement, params in self.statements:
            shape = " ".join(statement.split())[:300]
            if shape in seen:
                continue
            seen.add(shape)
            found.append((elapsed, statement, params))
            if len(found) == distinct:
                break
        return found


async def explain(dsn: str, statements: list[tuple[float, str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of captured statements (SELECTs only), run again as they were."""
    connection = await asyncpg.connect(dsn)
    plans = []
    try:
        for elapsed, statement, params in statements:
            entry: dict[str, Any] = {
                "seconds": round(elapsed, 3),
                "statement": " ".join(statement.split())[:1500],
            }
            if statement.lstrip().upper().startswith("SELECT"):
                try:
                    rows = await connection.fetch(
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement, *(params or ())
                    )
                    entry["plan"] = [r[0] for r in rows]
                except Exception as exc:  # a plan is a nicety; the figures stand without it
                    entry["plan_error"] = repr(exc)
            plans.append(entry)
    finally:
        await connection.close()
    return plans


# ---------------------------------------------------------------- 3. rebuild


@contextmanager
def _timed(module: Any, names: list[str], stages: dict[str, float]) -> Any:
    """Time calls of `module`'s functions `names` (summed per name) while installed."""
    originals = {n: getattr(module, n) for n in names}

    def wrap(name: str) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await originals[name](*args, **kwargs)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0

        return timed

    for name in names:
        setattr(module, name, wrap(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


async def rebuild(url: str, dsn: str, *, now: datetime) -> dict[str, Any]:
    """`rebuild` of every dossier KPI (all communes, days, months, quarters, years and the
    province) in one transaction, timed by stage."""
    from ioc.kpi import bulk, scan

    ctx = build_context(Settings(database_url=url, province=PROVINCE))
    probe = Probe()
    stages: dict[str, float] = {}
    try:
        with (
            probe.installed(ctx.engine),
            _timed(bulk, ["in_period", "longer_periods", "province"], stages),
            _timed(scan, ["slot_tables", "cells", "store"], stages),
            _timed(kpi_service, ["recompute_cells", "_rebuild_composite"], stages),
        ):
            started = time.perf_counter()
            async with ctx.sessionmaker() as session, session.begin():
                cells = await kpi_service.rebuild(
                    session, province_code=PROVINCE_CODE, tz=TZ, now=now, kpis=DOSSIER_KPIS
                )
                t_commit = time.perf_counter()
            committed = time.perf_counter()
            _, sql, count = probe.reset()
        slowest = probe.slowest(distinct=4)
        async with ctx.sessionmaker() as session:
            by_kind = dict(
                (
                    await session.execute(
                        select(KpiValue.period_kind, func.count()).group_by(KpiValue.period_kind)
                    )
                ).all()
            )
    finally:
        await ctx.engine.dispose()
    return {
        "how": "service.rebuild(kpis=every dossier KPI) in one transaction: on PostgreSQL one "
        "parallel aggregate per local date of the dossiers into temporary tables (slot_tables), "
        "every cell in one INSERT into a temporary table (cells), then kpi_values emptied, "
        "filled without its primary key and the key built again (store)",
        "kpis": [k.id for k in DOSSIER_KPIS],
        "seconds": round(committed - started, 2),
        "seconds_before_commit": round(t_commit - started, 2),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "sql_seconds": sql,
        "statements": count,
        "cells_stored": cells,
        "cells_by_period_kind": by_kind,
        "slowest_statements": await explain(dsn, slowest),
    }


# ---------------------------------------------------------------- 4. incremental


async def make_pages(
    dsn: str, *, count: int, size: int, now: datetime, communes: list[str]
) -> list[list[Dossier]]:
    """Pages as upstream sends them: half newer versions of recent dossiers, half new ones."""
    rng = random.Random(42)
    updates_per_page = size // 2
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT setseed(0.5)")
        fields = [f for f in Dossier.model_fields if f != "supplements"]
        rows = await connection.fetch(
            f"SELECT {', '.join(fields)} FROM dossiers WHERE received_at > $1"
            f" ORDER BY random() LIMIT {count * updates_per_page}",
            now - timedelta(days=60),
        )
    finally:
        await connection.close()
    pages: list[list[Dossier]] = []
    serial = 0
    for index in range(count):
        page = []
        for row in rows[index * updates_per_page : (index + 1) * updates_per_page]:
            values = dict(row)
            if values["resolved_at"] is None and values["status"] not in CANCELLED:
                values["resolved_at"] = max(
                    values["received_at"], now - timedelta(minutes=rng.randint(1, 600))
                )
                values["status"] = DossierStatus.PROCESSED
            values["synced_to_portal"] = True
            values["electronic_result"] = True
            values["source_updated_at"] = now + timedelta(seconds=index + 1)
            page.append(Dossier(**values))
        for _ in range(size - len(page)):
            serial += 1
            received = now - timedelta(days=rng.random() * 3)
            due = received + timedelta(days=rng.choice([1, 3, 5, 7, 10, 15, 20, 30]))
            resolved = received + timedelta(hours=rng.random() * 40) if rng.random() < 0.4 else None
            if resolved is not None and resolved > now:
                resolved = None
            page.append(
                Dossier(
                    external_id=f"N{serial:09d}",
                    unit_code=communes[int(len(communes) * rng.random() ** 1.5)],
                    procedure_code=f"1.00{rng.randint(1000, 1399)}",
                    procedure_name="Thủ tục hành chính",
                    field_code=rng.choice(["DD", "XD", "KD", "HT", "CT"]),
                    field_name="Lĩnh vực",
                    agency_code="UBND",
                    agency_name="Ủy ban nhân dân",
                    channel=rng.choice(list(Channel)),
                    status=DossierStatus.PROCESSED if resolved else DossierStatus.PROCESSING,
                    received_at=received,
                    due_at=due,
                    resolved_at=resolved,
                    fee=50000.0 if rng.random() < 0.35 else 0.0,
                    paid_online=rng.random() < 0.5,
                    digitised=rng.random() < 0.78,
                    source_updated_at=now + timedelta(seconds=index + 1),
                )
            )
        pages.append(page)
    return pages


class _OverBudget(Exception):
    """The incremental run's time budget ran out inside a batch (its transaction rolls back)."""


async def incremental(
    url: str,
    dsn: str,
    *,
    now: datetime,
    pages: list[list[Dossier]],
    instance_id: int,
    budget_seconds: float,
) -> dict[str, Any]:
    """`ingest_batch` + `recompute` in one transaction per page, as the runtime stores a page."""
    ctx = build_context(Settings(database_url=url, province=PROVINCE))
    probe = Probe()
    ingest_s, recompute_s, commit_s, cells, changed = [], [], [], [], []
    lookup_s: list[float] = []
    upsert_s: list[float] = []
    timed_out: float | None = None
    part: dict[str, float] = {}
    sql, count = 0.0, 0
    stages: dict[str, float] = defaultdict(float)
    sql_seconds, statements = 0.0, 0
    in_sql: dict[str, float] = {}
    try:
        async with ctx.sessionmaker() as session:
            known = await unit_codes(session)
        with probe.installed(ctx.engine), _timed(delta_sql, ["apply", "keep_versions"], in_sql):
            started = time.perf_counter()
            for page in pages:
                t0 = time.perf_counter()
                try:
                    async with ctx.sessionmaker() as session, session.begin():
                        result = await ingest_batch(
                            session,
                            instance_id=instance_id,
                            batch=Batch(records=page),
                            known_units=known,
                            tz=TZ,
                            now=now,
                        )
                        probe.reset()
                        t1 = time.perf_counter()
                        try:
                            values = await asyncio.wait_for(
                                kpi_service.recompute(
                                    session,
                                    changes=result.changes,
                                    province_code=PROVINCE_CODE,
                                    tz=TZ,
                                    now=now,
                                ),
                                timeout=max(1.0, budget_seconds - (t1 - started)),
                            )
                        except TimeoutError:
                            timed_out = round(time.perf_counter() - t1, 1)
                            part, sql, count = probe.reset()
                            print(
                                f"  batch {len(commit_s) + 1}: recompute unfinished after"
                                f" {timed_out} s (budget); stopping",
                                flush=True,
                            )
                            raise _OverBudget from None
                        t2 = time.perf_counter()
                        part, sql, count = probe.reset()
                except _OverBudget:
                    break
                for k, v in part.items():
                    stages[k] += v
                sql_seconds += sql
                statements += count
                t3 = time.perf_counter()
                ingest_s.append(t1 - t0)
                recompute_s.append(t2 - t1)
                commit_s.append(t3 - t0)
                changed.append(len(values))
                cells.append(sum(len(f) for f in result.changes.facts.values()))
                lookup, upsert = await recompute_floor(
                    dsn, instance_id=instance_id, page=page, changed=values
                )
                lookup_s.append(lookup)
                upsert_s.append(upsert)
                print(
                    f"  batch {len(commit_s)}: ingest {1000 * (t1 - t0):.0f} ms,"
                    f" recompute {1000 * (t2 - t1):.0f} ms, {len(values)} cells changed;"
                    f" floor: records by key {1000 * lookup:.0f} ms + changed cells upserted"
                    f" {1000 * upsert:.0f} ms",
                    flush=True,
                )
                if time.perf_counter() - started > budget_seconds:
                    break
        slowest = probe.slowest()
    finally:
        await ctx.engine.dispose()
    done = len(commit_s)
    if not done:
        return {
            "batches_done": 0,
            "recompute_unfinished_after_seconds": timed_out,
            "recompute_stage_seconds_so_far": part,
            "recompute_sql_seconds_so_far": round(sql, 3),
            "recompute_statements_so_far": count,
            "slowest_statements": await explain(dsn, slowest),
        }

    def ms(values: list[float], pct: float) -> float:
        return round(percentile(values, pct) * 1000, 1)

    return {
        "batches_done": done,
        "batches_asked": len(pages),
        "stopped_unfinished_after_seconds": timed_out,
        "batch_size": len(pages[0]),
        "updates_share": 0.5,
        "recompute_ms_p50": ms(recompute_s, 50),
        "recompute_ms_p95": ms(recompute_s, 95),
        "recompute_ms_max": round(max(recompute_s) * 1000, 1),
        "ingest_ms_p50": ms(ingest_s, 50),
        "ingest_ms_p95": ms(ingest_s, 95),
        "transaction_ms_p50": ms(commit_s, 50),
        "transaction_ms_p95": ms(commit_s, 95),
        "changed_cells_per_batch_mean": round(sum(changed) / done),
        "floor": {
            "how": "after each batch, on another connection: the batch's records read by key"
            " (one statement) and the cells it changed upserted +0 in key order (rolled back)",
            "records_by_key_ms_p50": ms(lookup_s, 50),
            "changed_cells_upsert_ms_p50": ms(upsert_s, 50),
            "changed_cells_upsert_ms_p95": ms(upsert_s, 95),
            "sum_ms_p50": ms([a + b for a, b in zip(lookup_s, upsert_s, strict=True)], 50),
        },
        "record_versions_in_changes_per_batch_mean": round(sum(cells) / done),
        "recompute_stage_seconds_per_batch": {k: round(v / done, 3) for k, v in stages.items()},
        "recompute_sql_seconds_per_batch": round(sql_seconds / done, 3),
        "recompute_statements_per_batch": round(statements / done),
        # On PostgreSQL the differences are one statement sent straight on asyncpg (not seen
        # by the SQLAlchemy statement timer above); the ingest copies the old versions first.
        "differences_statement_ms_per_batch": round(1000 * in_sql.get("apply", 0.0) / done, 1),
        "old_versions_copy_ms_per_batch_in_ingest": round(
            1000 * in_sql.get("keep_versions", 0.0) / done, 1
        ),
        "slowest_statements": await explain(dsn, slowest),
    }


# ---------------------------------------------------------------- 5. series reads


def serve(url: str, port: int) -> None:
    """The app under uvicorn, one worker, no scheduler (run in a subprocess)."""
    import uvicorn

    from ioc.app import create_app

    # Without tokens: this measures KPI reads; bench/auth.py measures what a token check adds.
    settings = Settings(
        database_url=url,
        province=PROVINCE,
        scheduler_enabled=False,
        environment="development",
        auth_disabled=True,
    )
    app = create_app(settings)
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def reads(
    url: str,
    *,
    now: datetime,
    days: int,
    path: str,
    seconds: float,
    connections: int,
    communes: list[str],
) -> dict[str, Any]:
    """Series reads over HTTP from a separate load process, cached and uncached."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(BENCH / "kpi.py"), "serve", "--url", url, "--port", str(port)],
        cwd=BENCH.parent,
    )
    results: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/openapi.json")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the app did not start")
            time.sleep(0.3)
        routes = json.loads(_get(port, "/openapi.json")[1])["paths"]
        route = path.split("?")[0].replace("onestop.on_time_rate", "{kpi}")
        series = any(p.rstrip("/").endswith("/series") for p in routes) or route in routes
        if not series:
            print(
                f"  no series route in the app ({route}); benchmarking {FALLBACK_PATH}", flush=True
            )
            path = FALLBACK_PATH
        results["path"] = path
        results["series_endpoint_present"] = series
        today = local_date(now, TZ)
        last = today - timedelta(days=1)

        def url_for(unit: str, end: date) -> str:
            start = end - timedelta(days=29)
            return path.format(unit=unit, start=start.isoformat(), end=end.isoformat())

        rng = random.Random(3)
        cached = [url_for(PROVINCE_CODE, last)]
        uncached = [
            url_for(rng.choice(communes), last - timedelta(days=rng.randint(0, days - 40)))
            for _ in range(20000)
        ]
        status, body = _get(port, cached[0])
        results["probe"] = {
            "status": status,
            "bytes": len(body),
            "head": body[:200].decode(errors="replace"),
        }
        runs = (
            ("warmup", cached, 0, 2),
            ("cached_closed_loop", cached, 0, seconds),
            ("cached_open_loop_2000", cached, 2000, seconds),
            ("uncached_closed_loop", uncached, 0, seconds),
            ("uncached_open_loop_1000", uncached, 1000, seconds),
        )
        with tempfile.TemporaryDirectory() as folder:
            for name, urls, rate, duration in runs:
                file = Path(folder) / f"{name}.txt"
                file.write_text("\n".join(urls))
                cpu0, t0, busy0 = _cpu_seconds(server.pid), time.monotonic(), _machine_busy()
                out = subprocess.run(
                    [
                        sys.executable,
                        str(BENCH / "load_client.py"),
                        "--port",
                        str(port),
                        "--urls",
                        str(file),
                        "--connections",
                        str(connections),
                        "--seconds",
                        str(duration),
                        "--rate",
                        str(rate),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=duration + 120,
                    check=True,
                )
                figures = json.loads(out.stdout)
                figures["server_cpu_share"] = round(
                    (_cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0), 2
                )
                busy1 = _machine_busy()
                figures["machine_cpu_busy_share"] = round(
                    (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 2
                )
                if name != "warmup":
                    results[name] = figures
                    print(f"  {name}: {json.dumps(figures)}", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


# ---------------------------------------------------------------- main


def kept_data(name: str, dossiers: int, days: int, now: datetime) -> tuple[datetime, Any]:
    """The generation moment and load figures of the kept database `name`, loading it first
    when it does not exist (it is then left in place, for later runs to copy: drop it by hand)."""
    if not asyncio.run(database_exists(name)):
        url, dsn = create_database(name)
        upgrade(url)
        print(f"loading {dossiers:,} dossiers into {name} (kept) …", flush=True)
        loaded = asyncio.run(load(url, dsn, dossiers=dossiers, days=days, now=now))
        print(f"  {json.dumps(loaded, default=str)}", flush=True)
        asyncio.run(_store_meta(dsn, now, loaded))
    _, dsn = database_urls(name)
    kept_now, loaded = asyncio.run(_read_meta(dsn))
    if loaded["dossiers"] != dossiers or loaded["days"] != days:
        raise SystemExit(
            f"{name} holds {loaded['dossiers']:,} dossiers over {loaded['days']} days, not"
            f" {dossiers:,} over {days}: drop it or choose another name"
        )
    print(f"using {name}: {dossiers:,} dossiers generated at {kept_now.isoformat()}", flush=True)
    return kept_now, loaded


async def _store_meta(dsn: str, now: datetime, loaded: dict[str, Any]) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TABLE bench_meta (now timestamptz, load text)")
        await connection.execute(
            "INSERT INTO bench_meta VALUES ($1, $2)", now, json.dumps(loaded, default=str)
        )
    finally:
        await connection.close()


async def _read_meta(dsn: str) -> tuple[datetime, dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow("SELECT now, load FROM bench_meta")
    except asyncpg.UndefinedTableError:
        raise SystemExit(f"{dsn} was not fully loaded (no bench_meta): drop it") from None
    finally:
        await connection.close()
    return row["now"], json.loads(row["load"])


def run_stages(
    args: argparse.Namespace,
    url: str,
    dsn: str,
    results: dict[str, Any],
    *,
    now: datetime,
    communes: list[str],
) -> None:
    """The benchmark's stages after the load, each unless skipped."""
    if "raw" not in args.skip:
        results["raw_group_by"] = asyncio.run(raw_floor(dsn, now))
        print(f"raw GROUP BY: best {results['raw_group_by']['seconds_best']} s", flush=True)
    if "rebuild" not in args.skip:
        runs = []
        for repeat in range(args.rebuild_repeats):
            # the first over an empty table, the others over the cells it stored
            print(f"rebuild {repeat + 1}/{args.rebuild_repeats} …", flush=True)
            runs.append(asyncio.run(rebuild(url, dsn, now=now)))
            shown = {k: v for k, v in runs[-1].items() if k != "slowest_statements"}
            print(f"  rebuild: {json.dumps(shown)}", flush=True)
        results["rebuild"] = min(runs, key=lambda r: r["seconds"])
        results["rebuild"]["seconds_every_run"] = [r["seconds"] for r in runs]
        results["rebuild"]["write_floor"] = asyncio.run(write_floor(dsn))
        print(f"  write floor: {json.dumps(results['rebuild']['write_floor'])}", flush=True)
    if "incremental" not in args.skip:
        print("incremental …", flush=True)
        pages = asyncio.run(
            make_pages(dsn, count=args.batches, size=args.batch_size, now=now, communes=communes)
        )
        results["incremental"] = asyncio.run(
            incremental(
                url,
                dsn,
                now=now,
                pages=pages,
                instance_id=results["load"]["instance_id"],
                budget_seconds=args.incremental_budget,
            )
        )
    if "reads" not in args.skip:
        print("series reads …", flush=True)
        results["reads"] = reads(
            url,
            now=now,
            days=args.days,
            path=args.path,
            seconds=args.seconds,
            connections=args.connections,
            communes=communes,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    served = sub.add_parser("serve", help="internal: run the app for the read benchmark")
    served.add_argument("--url", required=True)
    served.add_argument("--port", type=int, required=True)
    parser.add_argument("--dossiers", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument(
        "--incremental-budget",
        type=float,
        default=90.0,
        help="stop the incremental batches after this many seconds",
    )
    parser.add_argument("--path", default=SERIES_PATH, help="series URL template")
    parser.add_argument("--seconds", type=float, default=10.0, help="each read run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--rebuild-repeats",
        type=int,
        default=1,
        help="rebuild this many times (the table emptied between runs); the best is reported",
    )
    parser.add_argument(
        "--keep-data",
        metavar="NAME",
        help="keep the generated dossiers in database NAME and reuse them when it exists: each"
        " run works on a copy (CREATE DATABASE … TEMPLATE NAME); drop NAME by hand after",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["raw", "rebuild", "incremental", "reads"]
    )
    parser.add_argument(
        "--python-differences",
        action="store_true",
        help="recompute by the Python pairing of versions (SQLite's path) instead of the SQL"
        " statement, for comparison",
    )
    args = parser.parse_args()
    if args.python_differences:
        delta_sql.supported = lambda *_: False  # type: ignore[assignment]
    if args.command == "serve":
        serve(args.url, args.port)
        return
    began = time.perf_counter()
    now = utcnow().replace(microsecond=0)
    communes = sorted(r["code"] for r in province_rows(PROVINCE) if r["level"] == "commune")
    results: dict[str, Any] = {
        "machine": machine(),
        "now": now,
        "dossiers": args.dossiers,
        "differences": "python" if args.python_differences else "sql",
    }
    if args.keep_data:
        now, results["load"] = kept_data(args.keep_data, args.dossiers, args.days, now)
        results["now"] = now
        results["kept_data"] = args.keep_data
        with postgres_copy_of(args.keep_data) as (url, dsn):
            upgrade(url)  # migrations added since the data was kept
            run_stages(args, url, dsn, results, now=now, communes=communes)
    else:
        with fresh_postgres() as (url, dsn):
            upgrade(url)
            print(f"loading {args.dossiers:,} dossiers …", flush=True)
            results["load"] = asyncio.run(
                load(url, dsn, dossiers=args.dossiers, days=args.days, now=now)
            )
            print(f"  {json.dumps(results['load'], default=str)}", flush=True)
            run_stages(args, url, dsn, results, now=now, communes=communes)
    results["run_seconds"] = round(time.perf_counter() - began)
    results["targets"] = {
        "rebuild_dossier_kpis_commune_day_seconds": 3,
        "incremental_recompute_ms_p95_after_10000": 100,
        "series_cached": {"requests_per_second": 2000, "latency_ms_p99": 25},
        "series_uncached": {"requests_per_second": 1000, "latency_ms_p99": 40},
    }
    write_results("kpi", results)


if __name__ == "__main__":
    main()
