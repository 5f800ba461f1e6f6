"""CPU cost per request of the soak's REST mix, in process, on PostgreSQL.

    python bench/api_cost.py [--pages 20] [--requests 200]

A fresh database gets `--pages` pages of 1,000 open dossiers (the soak's shape: received in the
last weeks, due in five days, spread over the province's communes) stored through the real
ingest and KPI recompute. Then the API (`create_app`, its lifespan, no scheduler, open access) is
called in this process through `httpx.ASGITransport`, each route of `bench/soak.py`'s mix
`--requests` times one after another, and this process's CPU time (user + system: Python, not
PostgreSQL's) is divided by the requests. Each route twice: with its cached answer dropped
before every request (`miss`: what it costs while the worker's recompute keeps invalidating
it, as in the soak) and with the cache left alone (`hit`). A last figure is the cost of the
fan-out receiving one page's NOTIFY payloads (the updates a recompute of one soak page
publishes), with and without clients following its topics.
Writes bench/results/api_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_postgres, machine, write_results
from bench.soak import PROVINCE, _rest_paths
from ioc.app import create_app
from ioc.config import Settings
from ioc.context import build_context
from ioc.ingest.service import ingest_batch
from ioc.kpi.publish import publish_changes
from ioc.kpi.service import CellValue, recompute
from ioc.live.fanout import pack
from ioc.live.hub import Client, Hub
from ioc.migrations import upgrade
from ioc.sdk import Batch, Channel, Dossier, DossierStatus
from ioc.units.service import province_rows, sync_units, unit_codes
from tests.support.factories import make_instance


def settings_for(url: str) -> Settings:
    """The soak's API settings: no scheduler, no tokens, no rate limit in the way."""
    return Settings(
        database_url=url,
        province=PROVINCE,
        scheduler_enabled=False,
        environment="development",
        auth_disabled=True,
        rate_limit_per_minute=1e12,
        rate_limit_burst=10**9,
    )


def soak_page(serial: int, size: int, communes: list[str], now: datetime) -> list[Dossier]:
    """`size` open dossiers shaped like the soak's, numbered from `serial`."""
    rng = random.Random(serial)
    page = []
    for n in range(serial, serial + size):
        received = now - timedelta(days=rng.randint(0, 20), minutes=rng.randint(0, 600))
        page.append(
            Dossier(
                external_id=f"SOAK-{n:010d}",
                unit_code=communes[n % len(communes)],
                procedure_code="2.000815",
                procedure_name="Chứng thực bản sao từ bản chính giấy tờ, văn bản",
                field_code="G09-TP02",
                field_name="Chứng thực",
                agency_code=f"UBND-{communes[n % len(communes)]}",
                agency_name="UBND",
                channel=Channel.ONLINE,
                status=DossierStatus.RECEIVED,
                received_at=received,
                due_at=received + timedelta(days=5),
                source_updated_at=now,
            )
        )
    return page


async def load(url: str, *, pages: int) -> list[CellValue]:
    """Store the pages through ingest + recompute; returns the cells the last page changed."""
    ctx = build_context(settings_for(url))
    communes = sorted(str(r["code"]) for r in province_rows(PROVINCE) if r["level"] != "province")
    changed: list[CellValue] = []
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await sync_units(session, PROVINCE)
        instance_id = await make_instance(ctx, name="api-cost")
        async with ctx.sessionmaker() as session:
            known = await unit_codes(session)
        for index in range(pages):
            now = datetime.now(UTC)
            async with ctx.sessionmaker() as session, session.begin():
                result = await ingest_batch(
                    session,
                    instance_id=instance_id,
                    batch=Batch(records=soak_page(index * 1000, 1000, communes, now)),
                    known_units=known,
                    tz=ctx.settings.tz,
                    now=now,
                )
                changed = await recompute(
                    session,
                    changes=result.changes,
                    province_code=str(PROVINCE),
                    tz=ctx.settings.tz,
                    now=now,
                )
    finally:
        await ctx.engine.dispose()
    return changed


def route_of(path: str) -> str:
    """The soak mix's name for a request path."""
    if "/series" in path:
        return "series"
    if "/breakdown" in path:
        return "breakdown"
    if path.startswith("/api/v1/records"):
        return "records page"
    if path.startswith("/api/v1/connectors"):
        return "connectors"
    return "current values (?unit=)" if "unit=" in path else "current values (province)"


async def per_route(url: str, *, requests: int) -> dict[str, Any]:
    """CPU ms per request of each route of the soak mix, cache dropped (miss) or kept (hit)."""
    import httpx

    app = create_app(settings_for(url))
    paths = _rest_paths(
        sorted(str(r["code"]) for r in province_rows(PROVINCE) if r["level"] != "province"),
        datetime.now(UTC),
    )
    by_route: dict[str, list[str]] = {}
    for path in paths:
        by_route.setdefault(route_of(path), []).append(path)
    figures: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as client:
            for route, route_paths in by_route.items():
                for mode in ("miss", "hit"):
                    for path in route_paths:  # warm: statements prepared, cache filled
                        assert (await client.get(path)).status_code == 200, path
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    for n in range(requests):
                        if mode == "miss":
                            ctx.kpi_cache.clear()
                        response = await client.get(route_paths[n % len(route_paths)])
                        assert response.status_code == 200
                    cpu = time.process_time() - cpu0
                    wall = time.perf_counter() - wall0
                    figures.setdefault(route, {})[mode] = {
                        "cpu_ms": round(cpu / requests * 1000, 3),
                        "wall_ms": round(wall / requests * 1000, 3),
                        "share_of_mix": round(len(route_paths) / len(paths), 3),
                    }
    return figures


async def notify_cost(url: str, changed: list[CellValue], *, rounds: int = 20) -> dict[str, Any]:
    """CPU ms for one API process to handle one soak page's NOTIFY payloads."""
    from ioc.live.fanout import PgFanout

    ctx = build_context(settings_for(url))
    try:
        captured: list[tuple[str, Any]] = []
        hub = Hub()
        hub.relay = lambda topic, data: captured.append((topic, data))
        ctx.hub = hub
        await publish_changes(ctx, changed)
        payloads = pack("worker", captured)
        figures: dict[str, Any] = {
            "updates": len(captured),
            "payloads": len(payloads),
            "payload_bytes": sum(len(p) for p in payloads),
        }
        for label, clients in (("no clients", 0), ("1,000 clients, 3 topics each", 1000)):
            receiver = Hub()
            fanout = PgFanout(receiver, "postgresql://unused", origin="api")
            fanout.on_remote.append(ctx.kpi_cache.invalidate_topic)
            topics = [t for t, _ in captured if t.startswith("kpi:onestop.backlog:")][:96]
            for index in range(clients):
                client = Client(_Sink(), queue_limit=64)
                client.parked = True
                followed = ["kpi:onestop.backlog:75", "kpi:onestop.on_time_rate:75"]
                followed.append(topics[index % len(topics)] if topics else followed[0])
                for topic in followed:
                    receiver.subscribers.setdefault(topic, set()).add(client)
                    client.topics.add(topic)
            cpu0 = time.process_time()
            for _ in range(rounds):
                for payload in payloads:
                    fanout._on_notify(None, 0, "ioc_live", payload)
            figures[label] = round((time.process_time() - cpu0) / rounds * 1000, 2)
        return figures
    finally:
        await ctx.engine.dispose()


class _Sink:
    """A connection that takes every frame at once."""

    async def send_text(self, data: str) -> None:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, then measure."""
    with fresh_postgres() as (url, _dsn):
        upgrade(url)
        started = time.perf_counter()
        changed = asyncio.run(load(url, pages=args.pages))
        loaded = time.perf_counter() - started
        routes = asyncio.run(per_route(url, requests=args.requests))
        notify = asyncio.run(notify_cost(url, changed))
    return {
        "benchmark": "api_cost",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "dossiers": args.pages * 1000,
        "load_seconds": round(loaded, 1),
        "requests_per_figure": args.requests,
        "cpu_per_request": routes,
        "notify_page_cpu_ms": notify,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    result = run(args)
    write_results("api_cost", result)


if __name__ == "__main__":
    main()
