"""PostgreSQL "restarted" under the service (every connection dropped, new ones refused for a
while, through a TCP proxy; the machine's server itself keeps running): polling and the live
endpoint recover on their own, and nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
import websockets
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ioc.app import create_app
from ioc.config import Settings
from ioc.db import create_engine, create_sessionmaker
from ioc.migrations import upgrade
from ioc.records.models import DossierRow
from tests.faults.conftest import eventually, seed_file
from tests.support.databases import empty_database, require_backend
from tests.support.proxy import TcpProxy, tcp_proxy
from tests.support.servers import serve_app
from tests.support.settings import OPEN_ACCESS
from tests.support.upstream import Upstream, running_upstream

TOPIC = "kpi:onestop.backlog:75"

# One service for the module's tests (starting it and its first full poll take seconds).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Service:
    url: str
    proxy: TcpProxy
    upstream: Upstream

    async def stored(self) -> tuple[int, int]:
        """(rows, distinct external ids) of dossiers, read directly, not through the proxy."""
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(func.count(), func.count(func.distinct(DossierRow.external_id)))
                )
            ).one()
        return row[0], row[1]

    async def complete(self) -> bool:
        return await self.stored() == (self.upstream.visible(), self.upstream.visible())


@pytest.fixture(scope="module")
def module_postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this module."""
    require_backend("postgresql")
    with empty_database("postgresql", tmp_path_factory.mktemp("restart")) as url:
        upgrade(url)
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(
    module_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    """The service with its scheduler, reaching PostgreSQL through a proxy, polling a simulator."""
    postgres_url = module_postgres_url
    tmp_path = tmp_path_factory.mktemp("seed")
    direct = make_url(postgres_url)
    async for upstream in running_upstream():
        async with tcp_proxy(direct.host or "127.0.0.1", direct.port or 5432) as proxy:
            proxied = direct.set(host="127.0.0.1", port=proxy.port)
            settings = Settings(
                database_url=proxied.render_as_string(hide_password=False),
                connectors_file=seed_file(tmp_path, ("onestop-dn", upstream.url)),
                kpi_refresh_seconds=1,
                **OPEN_ACCESS,
            )
            engine = create_engine(postgres_url)
            try:
                async with serve_app(create_app(settings)) as url:
                    served = Service(url, proxy, upstream)
                    served.sessions = create_sessionmaker(engine)  # type: ignore[attr-defined]
                    await eventually(served.complete)
                    yield served
            finally:
                await engine.dispose()


async def advance_upstream(upstream: Upstream, seconds: float) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{upstream.url}/_sim/advance", json={"seconds": seconds})
        response.raise_for_status()


async def test_polling_resumes_after_a_database_restart_with_every_dossier_stored_once(
    service: Service,
) -> None:
    before = service.upstream.visible()
    service.proxy.cut()
    await advance_upstream(service.upstream, 86400)  # a day of new dossiers while it is down
    async with httpx.AsyncClient(base_url=service.url) as http:
        down = await http.get("/readyz")
        assert down.status_code == 503 and "database" in down.json()["failed"]
        refused = service.proxy.refused
        await eventually(_more_than(service.proxy, refused + 2))  # scheduled polls keep trying
        service.proxy.restore()
        await eventually(service.complete)
        assert (await http.get("/readyz")).status_code == 200
        connectors = (await http.get("/api/v1/connectors")).json()
    assert service.upstream.visible() > before
    rows, distinct = await service.stored()
    assert rows == distinct == service.upstream.visible()
    assert connectors[0]["health"] == "ok"


async def test_websocket_clients_stay_connected_through_a_restart_and_get_later_updates(
    service: Service,
) -> None:
    ws_url = service.url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws_url) as watcher:
        await watcher.send(json.dumps({"type": "subscribe", "topics": [TOPIC]}))
        snapshot = json.loads(await asyncio.wait_for(watcher.recv(), 5))
        assert snapshot["type"] == "snapshot"
        service.proxy.cut()
        async with websockets.connect(ws_url) as newcomer:  # subscribes while the database is down
            await newcomer.send(json.dumps({"type": "subscribe", "topics": [TOPIC]}))
            refused = json.loads(await asyncio.wait_for(newcomer.recv(), 10))
            assert refused["type"] == "error" and refused["topic"] == TOPIC
            assert "try again" in refused["message"]
            await advance_upstream(service.upstream, 86400)
            service.proxy.restore()
            await newcomer.send(json.dumps({"type": "subscribe", "topics": [TOPIC]}))
            assert json.loads(await asyncio.wait_for(newcomer.recv(), 10))["type"] == "snapshot"
        await eventually(service.complete)
        async with httpx.AsyncClient(base_url=service.url) as http:
            response = await http.get("/api/v1/kpis", params={"kpi": "onestop.backlog"})
        current = response.json()[0]["value"]
        assert current != snapshot["data"]["value"], "the new dossiers changed the backlog"
        update = await _update_with_value(watcher, current)
    rows, distinct = await service.stored()
    assert rows == distinct == service.upstream.visible()
    assert update["seq"] > snapshot["seq"]


def _more_than(proxy: TcpProxy, refused: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return proxy.refused > refused

    return check


async def _update_with_value(ws: websockets.ClientConnection, value: float) -> dict:
    """The first update of the topic showing `value` (the client converges on the stored state)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if message["type"] == "update" and message["data"]["value"] == value:
            return message
