"""End to end: simulator on a real port → scheduled poll → stored dossiers → KPIs equal to an
independent computation from the simulator's own data → a live tile updated over WebSocket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import websockets
from sqlalchemy import func, select

from connectors.onestop.simulator import create_app as create_simulator
from ioc.app import create_app
from ioc.config import Settings
from ioc.db import create_engine, create_sessionmaker
from ioc.records.models import DossierRow
from tests.support.expected import (
    HCM,
    current_commune,
    on_time_rate_for_month,
    overdue_open_now,
)
from tests.support.servers import serve_app

# 10:00 local time on Tuesday 10 November 2026; the simulator's clock stands still unless advanced.
START = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def test_dossiers_flow_from_simulator_to_kpis_and_a_live_tile(
    settings: Settings, tmp_path: Path, ctx: object
) -> None:
    simulator_app = create_simulator(
        seed=11, rate_per_day=80, history_days=25, start=START, speed=0
    )
    simulator = simulator_app.state.simulator
    async with serve_app(simulator_app) as simulator_url:
        seed = tmp_path / "connectors.toml"
        seed.write_text(
            "[[connector]]\n"
            'name = "onestop-e2e"\nkind = "onestop"\ninterval_seconds = 1\n'
            f'[connector.config]\nbase_url = "{simulator_url}"\npage_size = 200\n'
        )
        app = create_app(
            settings.model_copy(
                update={
                    "scheduler_enabled": True,
                    "connectors_file": seed,
                    "kpi_refresh_seconds": 1,
                }
            ),
            clock=simulator.now,
        )
        engine = create_engine(settings.database_url)
        sessions = create_sessionmaker(engine)

        async def stored_count() -> int:
            async with sessions() as session:
                return await session.scalar(select(func.count()).select_from(DossierRow)) or 0

        try:
            async with serve_app(app) as ioc_url, httpx.AsyncClient(base_url=ioc_url) as http:
                truth = simulator.dossiers_as_of(simulator.now())
                assert len(truth) > 500
                await eventually(lambda: _equals(stored_count, len(truth)))

                now = simulator.now()
                kpis = await _kpis(http, "75")
                on_time, due = on_time_rate_for_month(
                    truth, month=now.astimezone(HCM).date(), now=now
                )
                assert (
                    kpis["onestop.on_time_rate"]["numerator"],
                    kpis["onestop.on_time_rate"]["denominator"],
                ) == (on_time, due)
                assert kpis["onestop.on_time_rate"]["value"] == round(100 * on_time / due, 4)
                assert kpis["onestop.overdue_open"]["value"] == overdue_open_now(truth, now=now)
                assert 0 < on_time < due, "the simulator's data has late dossiers"
                legacy = [d for d in truth if current_commune(d) != d["MaDiaBan"]]
                assert legacy, "the upstream sends some pre-2025 commune codes"
                commune = current_commune(legacy[0])
                commune_kpis = await _kpis(http, commune)
                assert commune_kpis["onestop.overdue_open"]["value"] == overdue_open_now(
                    truth, now=now, unit=commune
                )

                topic = "kpi:onestop.on_time_rate:75"
                ws_url = ioc_url.replace("http://", "ws://") + "/ws"
                async with websockets.connect(ws_url) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
                    snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert snapshot["type"] == "snapshot" and snapshot["topic"] == topic
                    assert snapshot["data"]["numerator"] == on_time

                    # New upstream data: a working day passes at the simulated one-stop shop.
                    response = await httpx.AsyncClient().post(
                        f"{simulator_url}/_sim/advance", json={"seconds": 8 * 3600}
                    )
                    response.raise_for_status()
                    update = await _next_update(ws, topic)

                now = simulator.now()
                truth = simulator.dossiers_as_of(now)
                await eventually(lambda: _equals(stored_count, len(truth)))
                on_time, due = on_time_rate_for_month(
                    truth, month=now.astimezone(HCM).date(), now=now
                )
                assert update["seq"] > snapshot["seq"]
                await eventually(lambda: _kpi_is(http, (on_time, due)))
                # Fresh means a success within three intervals: on a loaded machine one poll
                # can outlast that, so wait for the next success rather than read it once.
                await eventually(lambda: _connector_is_fresh(http, "onestop-e2e"))
                connectors = (await http.get("/api/v1/connectors")).json()
                assert connectors[0]["config"]["base_url"] == simulator_url
        finally:
            await engine.dispose()


async def _equals(count: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await count() == expected


async def _kpis(http: httpx.AsyncClient, unit: str) -> dict[str, dict]:
    response = await http.get("/api/v1/kpis", params={"unit": unit})
    response.raise_for_status()
    return {item["kpi"]: item for item in response.json()}


async def _kpi_is(http: httpx.AsyncClient, expected: tuple[int, int]) -> bool:
    rate = (await _kpis(http, "75"))["onestop.on_time_rate"]
    return (rate["numerator"], rate["denominator"]) == expected


async def _connector_is_fresh(http: httpx.AsyncClient, name: str) -> bool:
    connectors = (await http.get("/api/v1/connectors")).json()
    return [(c["name"], c["health"], c["stale"]) for c in connectors] == [(name, "ok", False)]


async def _next_update(ws: websockets.ClientConnection, topic: str) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if message["type"] == "update" and message["topic"] == topic:
            return message
