"""Rejected records: listed with reasons and payloads, re-ingested once a connector is fixed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.onestop.connector import OnestopConnector
from ioc.app import create_app
from ioc.context import AppContext
from ioc.ingest.registry import ConnectorRegistry
from ioc.records.models import DossierRow
from ioc.scheduler.runner import poll_instance
from ioc.sdk import Dossier
from tests.support.upstream import Upstream, count, instance_for, running_upstream


class FixedOnestop(OnestopConnector):
    """A later release of the connector that also reads ISO 8601 receipt times."""

    def parse(self, payload: Mapping[str, Any]) -> Dossier:
        received = payload.get("NgayTiepNhan")
        if isinstance(received, str) and "T" in received:
            moment = datetime.fromisoformat(received)
            payload = {**payload, "NgayTiepNhan": moment.strftime("%Y%m%d%H%M%S")}
        return super().parse(payload)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async for served in running_upstream():
        yield served


async def test_rejects_are_listed_and_a_fixed_connector_reingests_what_it_can(
    ctx: AppContext, upstream: Upstream
) -> None:
    instance_id = await instance_for(ctx, upstream)
    await upstream.set_faults(malformed=4)  # one of each: no id, due<receipt, unit, ISO time
    assert (await poll_instance(ctx, instance_id, force=True)).rejected == 4
    stored_before = await count(ctx, DossierRow)

    ctx.registry = ConnectorRegistry({"onestop": FixedOnestop})
    app = create_app(ctx.settings, registry=ctx.registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ioc") as http:
            pending = await http.get("/api/v1/rejected", params={"instance_id": instance_id})
            reasons = sorted(r["reason"] for r in pending.json())
            result = await http.post("/api/v1/rejected/reingest", json={"instance_id": instance_id})
            after = (await http.get("/api/v1/rejected")).json()
            history = (await http.get("/api/v1/rejected", params={"pending": False})).json()
            refused = await http.post("/api/v1/rejected/reingest", json={})

    assert len(reasons) == 4 and any("yyyyMMddHHmmss" in r for r in reasons)
    assert result.json() == {"tried": 4, "stored": 1, "still_rejected": 3}
    assert await count(ctx, DossierRow) == stored_before + 1
    assert len(after) == 3 and all(r["resolved_at"] is None for r in after)
    assert sum(r["resolved_at"] is not None for r in history) == 1
    assert refused.status_code == 422
    async with ctx.sessionmaker() as session:
        ids = set((await session.scalars(select(DossierRow.external_id))).all())
    fixed = next(r for r in history if r["resolved_at"] is not None)
    assert fixed["payload"]["MaHoSo"] in ids
