"""Ingest apart from serving: a worker (or any other process) recomputes, and every API process
on the same PostgreSQL updates its clients and drops its cached KPI series."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest
import websockets
from sqlalchemy import delete

from ioc.app import create_app, create_worker_app
from ioc.config import Settings
from ioc.context import AppContext
from ioc.kit.clock import local_date
from ioc.kpi import reads
from ioc.kpi.catalog import get_kpi
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.publish import publish_changes
from ioc.kpi.reads import SeriesCache, SeriesKey
from ioc.kpi.service import CellValue
from ioc.live.fanout import MAX_PAYLOAD_BYTES, pack_changed
from tests.faults.conftest import eventually, seed_file
from tests.live.test_fanout import receive
from tests.support.factories import store_count_cell
from tests.support.servers import serve_app
from tests.support.upstream import instance_for, running_upstream

ROOT = Path(__file__).resolve().parents[2]
BACKLOG = "onestop.backlog"
COMMUNE = "26068"


@pytest.fixture
def postgres_settings(settings: Settings) -> Settings:
    if not settings.is_postgres:
        pytest.skip("processes share updates through PostgreSQL LISTEN/NOTIFY")
    return settings


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


async def series(http: httpx.AsyncClient, unit: str) -> tuple[list[Any], str]:
    """The day series of the backlog for `unit` (last 30 days) and whether it was a cache hit."""
    response = await http.get(
        f"/api/v1/kpis/{BACKLOG}/series", params={"unit": unit, "period": "day"}
    )
    response.raise_for_status()
    return [p["numerator"] for p in response.json()["points"]], response.headers["X-Cache"]


def test_changed_topics_are_packed_under_the_notify_limit() -> None:
    topics = [f"kpi:onestop.backlog:{n:05d}" for n in range(1000)]
    payloads = pack_changed("origin", topics)
    assert len(payloads) > 1
    assert all(len(p.encode()) < MAX_PAYLOAD_BYTES for p in payloads)
    assert [t for p in payloads for t in orjson.loads(p)["c"]] == topics
    assert all("u" not in orjson.loads(p) for p in payloads)


def test_a_kpi_topic_drops_the_cached_series_of_its_kpi_and_unit_only() -> None:
    cache = SeriesCache()
    day = datetime(2026, 11, 1, tzinfo=UTC).date()
    mine, other = (
        SeriesKey(BACKLOG, COMMUNE, "day", day, day),
        SeriesKey(BACKLOG, "75", "day", day, day),
    )
    for key in (mine, other):
        cache.put(key, b"[]", cache.ticket(key))
    ticket = cache.ticket(mine)
    cache.invalidate_topic(f"kpi:{BACKLOG}:{COMMUNE}")
    cache.invalidate_topic("layout:default")  # not a KPI topic: nothing happens
    assert cache.get(mine) is None
    assert cache.get(other) == b"[]"
    cache.put(mine, b"stale", ticket)  # read before the change: refused
    assert cache.get(mine) is None


async def test_a_recompute_in_one_process_patches_the_cached_series_of_another(
    postgres_settings: Settings, ctx: AppContext
) -> None:
    a, b = create_app(postgres_settings), create_app(postgres_settings)
    async for upstream in running_upstream():
        instance_id = await instance_for(ctx, upstream)
        async with (
            serve_app(a) as url_a,
            serve_app(b) as url_b,
            httpx.AsyncClient(base_url=url_a, timeout=30) as http_a,
            httpx.AsyncClient(base_url=url_b, timeout=30) as http_b,
        ):
            before, _ = await series(http_b, "75")
            again, cache = await series(http_b, "75")
            assert (again, cache) == (before, "hit")
            run = await http_a.post(f"/api/v1/connectors/{instance_id}/run")
            assert run.json()["stored"] > 0
            fresh, _ = await series(http_a, "75")  # A dropped its own entry when it recomputed
            answers: list[str] = []

            async def b_agrees(expected: list[Any] = fresh, answers: list[str] = answers) -> bool:
                points, cache = await series(http_b, "75")
                answers.append(cache)
                return points == expected

            await eventually(b_agrees)
    assert fresh != before and any(fresh)
    assert answers[-1] == "hit"  # B patched its entry with the cells A published


async def test_a_change_nobody_follows_in_its_process_reaches_the_followers_of_another(
    postgres_settings: Settings, ctx: AppContext
) -> None:
    """A worker has no clients: a recomputed cell of a past period (not the headline, so no
    update is published) is still named to the API processes, which re-read the topic for their
    clients and drop their cached series."""
    topic = f"kpi:{BACKLOG}:{COMMUNE}"
    kpi = get_kpi(BACKLOG)
    now = datetime.now(UTC)
    yesterday = Period.containing(
        PeriodKind.DAY, local_date(now, postgres_settings.tz) - timedelta(days=1)
    )
    worker, api = create_app(postgres_settings), create_app(postgres_settings)
    async with (
        serve_app(worker),
        serve_app(api) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        websockets.connect(ws_url(url)) as ws,
    ):
        await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
        await receive(ws, kind="snapshot", topic=topic)
        before, _ = await series(http, COMMUNE)
        assert (await series(http, COMMUNE))[1] == "hit"
        await store_count_cell(ctx, BACKLOG, COMMUNE, yesterday.start, 7.0, at=now)
        cell = CellValue(kpi, COMMUNE, yesterday, 7.0, None, now)
        worker_ctx: AppContext = worker.state.ctx
        assert not worker_ctx.hub.subscribers
        await publish_changes(worker_ctx, [cell])
        update = await receive(ws, kind="update", topic=topic)  # the API re-read the headline

        async def dropped() -> bool:
            return (await series(http, COMMUNE))[0] != before

        await eventually(dropped)
        after, _ = await series(http, COMMUNE)
        async with ctx.sessionmaker() as session, session.begin():
            await session.execute(delete(KpiValue))
    assert update["data"]["kpi"] == BACKLOG and update["data"]["unit"] == COMMUNE
    assert after[-2] == 7.0 and before[-2] == 0.0


async def test_a_worker_polls_and_the_clients_of_an_api_process_see_it(
    postgres_settings: Settings, ctx: AppContext
) -> None:
    topic = f"kpi:{BACKLOG}:75"
    api = create_app(postgres_settings)
    async for upstream in running_upstream():
        await instance_for(ctx, upstream)
        async with (
            serve_app(api) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
            websockets.connect(ws_url(url)) as ws,
        ):
            await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
            snapshot = await receive(ws, kind="snapshot", topic=topic)
            worker = create_worker_app(postgres_settings)  # polls at once: the instance exists
            async with (
                serve_app(worker) as worker_url,
                httpx.AsyncClient(base_url=worker_url, timeout=30) as worker_http,
            ):
                update = await receive(ws, kind="update", topic=topic)
                ready = (await worker_http.get("/readyz")).json()
                api_route = await worker_http.get("/api/v1/kpis")
                worker_ctx: AppContext = worker.state.ctx
                clients, sent = worker_ctx.hub.client_count(), worker_ctx.fanout.sent
            current = (await http.get("/api/v1/kpis", params={"kpi": BACKLOG})).json()[0]
    assert snapshot["data"]["value"] == 0
    assert update["data"]["value"] > 0
    assert current["value"] >= update["data"]["value"]
    assert ready["checks"]["scheduler"] == {"ok": True, "detail": "running"}
    assert api_route.status_code == 404  # the worker serves no API
    assert clients == 0 and sent > 0


def test_the_worker_role_answers_only_health_and_metrics() -> None:
    settings = Settings(
        database_url="postgresql+asyncpg://ioc@db.invalid/ioc", scheduler_enabled=False
    )
    worker = create_worker_app(settings)
    assert set(worker.openapi()["paths"]) == {"/healthz", "/readyz", "/metrics"}


def test_the_worker_role_refuses_sqlite(tmp_path: Any) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        create_worker_app(settings)


async def _gather_epochs(url: str, topic: str, want: int, limit: int) -> list[Any]:
    """Connect clients until their snapshots come from `want` different processes (hub epochs)."""
    clients: list[Any] = []
    epochs: set[str] = set()
    while len(epochs) < want and len(clients) < limit:
        ws = await websockets.connect(ws_url(url))
        await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
        snapshot = await receive(ws, kind="snapshot", topic=topic)
        epochs.add(snapshot["epoch"])
        clients.append(ws)
    return clients


async def _all_updated(clients: list[Any], topic: str) -> list[dict[str, Any]]:
    return await asyncio.gather(*(receive(ws, kind="update", topic=topic) for ws in clients))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # stderr goes to a file, not a pipe: nobody reads a pipe while the process runs, and a
    # process whose logs fill it (64 kB) blocks on its next write and never exits.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the process runs)
    process = subprocess.Popen(
        [sys.executable, "-m", "ioc", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    _LOGS[process.pid] = log
    return process


_LOGS: dict[int, IO[bytes]] = {}
"""The stderr file of each process started, by pid."""


def _errors(process: subprocess.Popen[bytes]) -> str:
    """What the process wrote to its stderr file."""
    log = _LOGS[process.pid]
    log.seek(0)
    return log.read().decode(errors="replace")


async def _up(url: str, process: subprocess.Popen[bytes]) -> None:
    async def answers() -> bool:
        assert process.poll() is None, _errors(process)
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(url)).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(answers, within=120)


async def test_a_worker_process_updates_the_clients_of_every_api_worker_process(
    postgres_settings: Settings, ctx: AppContext, tmp_path: Path
) -> None:
    """The deployed topology: `ioc worker` polls; `ioc serve --workers 2` serves. Clients land
    on both API processes (two hub epochs) and every one of them gets the worker's update."""
    topic = f"kpi:{BACKLOG}:75"
    common = {
        "IOC_DATABASE_URL": postgres_settings.database_url,
        "IOC_ENVIRONMENT": "development",
        "IOC_AUTH_DISABLED": "true",
        "IOC_LOG_LEVEL": "WARNING",
    }
    port, worker_port = _free_port(), _free_port()
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[Any] = []
    async for upstream in running_upstream():
        seed = seed_file(tmp_path, ("onestop", upstream.url))
        try:
            api = _start(
                ["serve", "--workers", "2", "--port", str(port)],
                {**common, "IOC_SCHEDULER_ENABLED": "false"},
            )
            processes.append(api)
            url = f"http://127.0.0.1:{port}"
            await _up(f"{url}/healthz", api)
            clients = await _gather_epochs(url, topic, want=2, limit=100)
            epochs = {ws.messages_seen[-1]["epoch"] for ws in clients}
            worker = _start(
                ["worker", "--port", str(worker_port)],
                {**common, "IOC_CONNECTORS_FILE": str(seed)},
            )
            processes.append(worker)
            updates = await _all_updated(clients, topic)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                ready = (await http.get("/readyz")).json()
        finally:
            for ws in clients:
                await ws.close()
            for process in processes:
                process.terminate()
            for process in processes:
                # in a thread: this loop serves the upstream the worker may be reading from
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.kill()  # fail, but leave no process behind to skew what runs next
                    raise
    assert len(epochs) == 2, "connections spread over both API processes"
    assert all(u["data"]["value"] > 0 for u in updates)
    assert ready["checks"]["scheduler"]["detail"].startswith("disabled")


def test_serve_refuses_several_workers_on_sqlite_or_with_the_scheduler(tmp_path: Path) -> None:
    env = {**os.environ, "IOC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"}
    on_sqlite = subprocess.run(
        [sys.executable, "-m", "ioc", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    env["IOC_DATABASE_URL"] = "postgresql+asyncpg://postgres@127.0.0.1:5432/unused"
    with_scheduler = subprocess.run(
        [sys.executable, "-m", "ioc", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert on_sqlite.returncode == 2 and "need PostgreSQL" in on_sqlite.stderr
    assert with_scheduler.returncode == 2 and "IOC_SCHEDULER_ENABLED=false" in with_scheduler.stderr


async def test_current_values_follow_another_process_recompute_without_being_read_again(
    postgres_settings: Settings, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B keeps serving its cached current values of the province, patched with the headline
    values A's recompute published: the same answer as B reading them again. (The one-stop
    KPIs: data freshness moves with each poll, not with a cell, and is read again after
    `CURRENT_VALUES_TTL_SECONDS`.)"""
    monkeypatch.setattr(reads, "CURRENT_VALUES_TTL_SECONDS", 600.0)  # no expiry meanwhile
    a, b = create_app(postgres_settings), create_app(postgres_settings)

    async def current(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get("/api/v1/kpis", params={"domain": "onestop"})

    def shown(response: httpx.Response) -> list[tuple[Any, ...]]:
        fields = ("kpi", "period_start", "value", "numerator", "denominator")
        return [tuple(v[f] for f in fields) for v in response.json()]

    async for upstream in running_upstream():
        instance_id = await instance_for(ctx, upstream)
        async with (
            serve_app(a) as url_a,
            serve_app(b) as url_b,
            httpx.AsyncClient(base_url=url_a, timeout=30) as http_a,
            httpx.AsyncClient(base_url=url_b, timeout=30) as http_b,
        ):
            before = await current(http_b)
            run = await http_a.post(f"/api/v1/connectors/{instance_id}/run")
            assert run.json()["stored"] > 0
            fresh = await current(http_a)  # A dropped its own entry

            async def b_agrees(expected: httpx.Response = fresh) -> bool:
                return shown(await current(http_b)) == shown(expected)

            await eventually(b_agrees)
            patched = await current(http_b)
            b.state.ctx.kpi_cache.clear()
            read_again = await current(http_b)
    assert shown(patched) != shown(before)
    assert (before.headers["x-cache"], patched.headers["x-cache"]) == ("miss", "hit")
    assert read_again.headers["x-cache"] == "miss"
    assert shown(patched) == shown(read_again)
    backlog = [[v for v in r.json() if v["kpi"] == BACKLOG] for r in (patched, read_again)]
    assert backlog[0] == backlog[1]  # computed_at too: the cell's, as stored
