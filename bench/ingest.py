"""Ingest benchmark: canonical records from parsed upstream pages to committed rows on PostgreSQL.

Each batch is one page as the runtime stores it: half new dossiers, half newer versions of
dossiers already stored. Measured: the ingest path alone (validate, upsert, rejects, commit), the
same with the KPI recompute the runtime does in that transaction, and beside them the raw
PostgreSQL upsert ceiling on the same machine in the same run (asyncpg COPY into a temporary
table, then one INSERT … ON CONFLICT DO UPDATE), with the same rows.

    python bench/ingest.py [--batches 40] [--batch-size 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_postgres, machine, percentile, process_cpu_seconds, write_results
from ioc.config import Settings
from ioc.context import build_context
from ioc.ingest.service import ingest_batch
from ioc.kit.clock import utcnow
from ioc.kpi.service import recompute
from ioc.migrations import upgrade
from ioc.records.stores import STORES
from ioc.sdk import Batch, Channel, Dossier, DossierStatus
from ioc.units.service import province_rows, sync_units, unit_codes
from tests.support.factories import make_instance

PROVINCE = 75
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def make_batches(count: int, size: int, communes: list[str]) -> list[list[Dossier]]:
    """`count` pages of `size` dossiers: the first all new, then half new and half updates."""
    rng = random.Random(42)
    batches: list[list[Dossier]] = []
    known: list[str] = []
    serial = 0
    for index in range(count):
        page: list[Dossier] = []
        updates = 0 if index == 0 else size // 2
        for external_id in rng.sample(known, updates):
            page.append(dossier(external_id, rng, communes, version=index))
        for _ in range(size - updates):
            serial += 1
            page.append(dossier(f"H{serial:09d}", rng, communes, version=index))
            known.append(f"H{serial:09d}")
        batches.append(page)
    return batches


def dossier(external_id: str, rng: random.Random, communes: list[str], *, version: int) -> Dossier:
    received = NOW - timedelta(days=rng.randint(0, 60), minutes=rng.randint(0, 600))
    due = received + timedelta(days=rng.randint(1, 20))
    resolved = received + timedelta(days=rng.randint(0, 25)) if rng.random() < 0.7 else None
    if resolved is not None and resolved > NOW:
        resolved = None
    return Dossier(
        external_id=external_id,
        unit_code=rng.choice(communes),
        procedure_code=f"1.00{rng.randint(1000, 9999)}",
        procedure_name="Thủ tục hành chính",
        field_code=rng.choice(["DD", "XD", "KD", "HT", "CT"]),
        field_name="Lĩnh vực",
        agency_code="SNNMT",
        agency_name="Sở Nông nghiệp và Môi trường",
        channel=rng.choice(list(Channel)),
        status=DossierStatus.PROCESSED if resolved else DossierStatus.PROCESSING,
        received_at=received,
        due_at=due,
        resolved_at=resolved,
        paid_online=rng.random() < 0.5,
        source_updated_at=NOW + timedelta(seconds=version),
    )


async def run_ioc(url: str, batches: list[list[Dossier]], *, with_kpis: bool) -> dict[str, float]:
    """Store every batch through the IOC's ingest, one transaction per batch."""
    ctx = build_context(Settings(database_url=url, province=PROVINCE))
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await sync_units(session, PROVINCE)
        instance_id = await make_instance(ctx, name=f"bench-{with_kpis}")
        async with ctx.sessionmaker() as session:
            known = await unit_codes(session)
        commits: list[float] = []
        started = time.perf_counter()
        for page in batches:
            t0 = time.perf_counter()
            async with ctx.sessionmaker() as session, session.begin():
                result = await ingest_batch(
                    session,
                    instance_id=instance_id,
                    batch=Batch(records=page),
                    known_units=known,
                    tz=ctx.settings.tz,
                    now=utcnow(),
                    calendar=ctx.settings.calendar,
                    # as the runtime's `store_batch`: the stored versions kept for the KPI
                    # differences, judged at the moment the recompute uses
                    kpi_now=NOW if with_kpis else None,
                )
                if with_kpis:
                    await recompute(
                        session,
                        changes=result.changes,
                        province_code="75",
                        tz=ctx.settings.tz,
                        now=NOW,
                    )
            commits.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    finally:
        await ctx.engine.dispose()
    return summary(batches, commits, elapsed)


async def run_raw(dsn: str, batches: list[list[Dossier]], tz_name: str) -> dict[str, float]:
    """The ceiling: the same rows, already converted, COPY to a temp table and one upsert,
    straight on asyncpg; with the CPU time its PostgreSQL backend spent per record (what
    storing a record costs the database at the least, whatever the client does)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(tz_name)
    store = STORES["dossier"]
    connection = await asyncpg.connect(dsn)
    try:
        instance_id = await connection.fetchval(
            "INSERT INTO connector_instances (name, kind, config, enabled, interval_seconds,"
            " cursor, health, consecutive_failures, timeout_seconds, max_backoff_seconds,"
            " created_at) VALUES ('raw', 'onestop', '{}', true, 60, '{}', 'ok', 0, 120, 900, now())"
            " RETURNING id"
        )
        columns = list(store.to_row(batches[0][0], instance_id=instance_id, tz=tz, now=NOW))
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in columns if c not in ("instance_id", "external_id")
        )
        pages = [  # rows ready for COPY, built before the clock starts: the database alone
            [
                tuple(
                    json.dumps(v) if isinstance(v, list | dict) else v
                    for v in store.to_row(d, instance_id=instance_id, tz=tz, now=NOW).values()
                )
                for d in page
            ]
            for page in batches
        ]
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        cpu_before = process_cpu_seconds(backend)
        commits: list[float] = []
        started = time.perf_counter()
        for rows in pages:
            t0 = time.perf_counter()
            async with connection.transaction():
                await connection.execute(
                    "CREATE TEMP TABLE incoming (LIKE dossiers INCLUDING DEFAULTS) ON COMMIT DROP"
                )
                await connection.copy_records_to_table("incoming", records=rows, columns=columns)
                await connection.execute(
                    f"INSERT INTO dossiers ({', '.join(columns)}) SELECT {', '.join(columns)}"
                    " FROM incoming ON CONFLICT (instance_id, external_id) DO UPDATE SET "
                    f"{updates} WHERE dossiers.source_updated_at <= excluded.source_updated_at"
                )
            commits.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        backend_cpu = process_cpu_seconds(backend) - cpu_before
    finally:
        await connection.close()
    figures = summary(batches, commits, elapsed)
    figures["postgresql_cpu_us_per_record"] = round(backend_cpu / figures["records"] * 1e6, 1)
    return figures


def summary(batches: list[list[Dossier]], commits: list[float], elapsed: float) -> dict[str, float]:
    records = sum(len(b) for b in batches)
    return {
        "records": records,
        "seconds": round(elapsed, 3),
        "records_per_second": round(records / elapsed),
        "batch_commit_ms_p50": round(percentile(commits, 50) * 1000, 1),
        "batch_commit_ms_p99": round(percentile(commits, 99) * 1000, 1),
        "batch_commit_ms_max": round(max(commits) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    communes = [r["code"] for r in province_rows(PROVINCE) if r["level"] == "commune"]
    batches = make_batches(args.batches, args.batch_size, communes)
    results: dict[str, object] = {
        "machine": machine(),
        "batches": args.batches,
        "batch_size": args.batch_size,
        "updates_share": 0.5,
    }
    for name, runner in (
        ("raw_postgres_upsert", lambda url, dsn: run_raw(dsn, batches, "Asia/Ho_Chi_Minh")),
        ("ioc_ingest", lambda url, dsn: run_ioc(url, batches, with_kpis=False)),
        ("ioc_ingest_with_kpi_recompute", lambda url, dsn: run_ioc(url, batches, with_kpis=True)),
    ):
        with fresh_postgres() as (url, dsn):
            upgrade(url)
            results[name] = asyncio.run(runner(url, dsn))
    raw = results["raw_postgres_upsert"]["records_per_second"]
    ours = results["ioc_ingest"]["records_per_second"]
    results["ioc_to_raw_ratio"] = round(ours / raw, 3)
    results["targets"] = {"records_per_second": 50_000, "batch_commit_ms_p99": 400}
    write_results("ingest", results)


if __name__ == "__main__":
    main()
