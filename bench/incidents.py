"""Incident rules benchmark: what judging the rules adds to each ingest transaction, and what
the periodic pass over every rule costs, on PostgreSQL with the default rules.

Each page is stored as the runtime stores it (ingest, KPI recompute of the touched cells, then the
incident rules on what changed, one transaction); the rules' share is timed on its own. Then the
periodic pass (every enabled rule, every unit, as the refresh job runs it) is timed several times.

    python bench/incidents.py [--batches 20] [--batch-size 2000] [--passes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from bench.common import fresh_postgres, machine, percentile, write_results
from bench.ingest import NOW, PROVINCE, make_batches
from ioc.config import Settings
from ioc.context import build_context
from ioc.incidents.lifecycle import Evaluation, evaluate_after_ingest, evaluate_all
from ioc.incidents.models import Incident
from ioc.incidents.ruleset import seed_default_rules
from ioc.ingest.service import ingest_batch
from ioc.kit.clock import utcnow
from ioc.kpi.service import recompute
from ioc.migrations import upgrade
from ioc.sdk import Batch
from ioc.units.service import province_rows, sync_units, unit_codes
from tests.support.factories import make_instance


def ms(values: list[float], pct: float) -> float:
    return round(percentile(values, pct) * 1000, 1)


async def run(url: str, batches: list, passes: int) -> dict[str, object]:
    ctx = build_context(Settings(database_url=url, province=PROVINCE))
    env = Evaluation(
        now=NOW,
        real_now=utcnow(),
        tz=ctx.settings.tz,
        calendar=ctx.settings.calendar,
        province="75",
    )
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await sync_units(session, PROVINCE)
            rules = await seed_default_rules(session, now=NOW)
        instance_id = await make_instance(ctx, name="bench")
        async with ctx.sessionmaker() as session:
            known = await unit_codes(session)
        store, judge = [], []
        for page in batches:
            async with ctx.sessionmaker() as session, session.begin():
                t0 = time.perf_counter()
                result = await ingest_batch(
                    session,
                    instance_id=instance_id,
                    batch=Batch(records=page),
                    known_units=known,
                    tz=ctx.settings.tz,
                    now=NOW,  # the recompute's moment: the difference engine pairs versions then
                    calendar=ctx.settings.calendar,
                )
                cells = await recompute(
                    session, changes=result.changes, province_code="75", tz=ctx.settings.tz, now=NOW
                )
                t1 = time.perf_counter()
                await evaluate_after_ingest(session, changes=result.changes, cells=cells, env=env)
                t2 = time.perf_counter()
            store.append(t1 - t0)
            judge.append(t2 - t1)
        periodic = []
        for _ in range(passes):
            async with ctx.sessionmaker() as session, session.begin():
                t0 = time.perf_counter()
                await evaluate_all(session, env=env)
                periodic.append(time.perf_counter() - t0)
        async with ctx.sessionmaker() as session:
            opened = await session.scalar(select(func.count()).select_from(Incident))
    finally:
        await ctx.engine.dispose()
    return {
        "default_rules": rules,
        "incidents_open_at_end": opened,
        "page_ingest_and_kpis_ms_p50": ms(store, 50),
        "page_rules_ms_p50": ms(judge, 50),
        "page_rules_ms_p99": ms(judge, 99),
        "rules_share_of_page_p50": round(percentile(judge, 50) / percentile(store, 50), 3),
        "periodic_pass_ms_p50": ms(periodic, 50),
        "periodic_pass_ms_max": round(max(periodic) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    communes = [r["code"] for r in province_rows(PROVINCE) if r["level"] == "commune"]
    batches = make_batches(args.batches, args.batch_size, communes)
    with fresh_postgres() as (url, _dsn):
        upgrade(url)
        figures = asyncio.run(run(url, batches, args.passes))
    write_results(
        "incidents",
        {
            "machine": machine(),
            "batches": args.batches,
            "batch_size": args.batch_size,
            "passes": args.passes,
            **figures,
        },
    )


if __name__ == "__main__":
    main()
