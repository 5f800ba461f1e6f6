"""Small factories for canonical records and connector instances."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import count
from typing import Any

from ioc.context import AppContext
from ioc.ingest.instances import upsert_instance
from ioc.ingest.schemas import ConnectorInstanceSeed
from ioc.kpi.models import KpiValue
from ioc.kpi.publish import publish_changes
from ioc.kpi.service import CellValue
from ioc.scheduler.runner import store_batch, write_transaction
from ioc.sdk import Batch, Channel, Dossier, DossierStatus

_ids = count(1)
BIEN_HOA = "26068"
TRAN_BIEN = "26041"


def make_dossier(**overrides: Any) -> Dossier:
    """A valid dossier received 2026-11-02 09:00 local, due five days later; override anything."""
    received = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "external_id": f"H{next(_ids):06d}",
        "unit_code": BIEN_HOA,
        "procedure_code": "1.004227",
        "procedure_name": "Đăng ký biến động quyền sử dụng đất",
        "field_code": "DD",
        "field_name": "Đất đai",
        "agency_code": "SNNMT",
        "agency_name": "Sở Nông nghiệp và Môi trường",
        "channel": Channel.ONLINE,
        "status": DossierStatus.PROCESSING,
        "received_at": received,
        "due_at": received + timedelta(days=5),
        "source_updated_at": received,
    }
    values.update(overrides)
    return Dossier(**values)


async def make_instance(ctx: AppContext, **overrides: Any) -> int:
    """A stored connector instance; returns its id."""
    values: dict[str, Any] = {
        "name": f"test-{next(_ids)}",
        "kind": "onestop",
        "config": {"base_url": "http://127.0.0.1:9"},
    }
    values.update(overrides)
    async with ctx.sessionmaker() as session, session.begin():
        instance = await upsert_instance(
            session, ConnectorInstanceSeed(**values), now=datetime.now(UTC)
        )
        return instance.id


async def ingest_dossiers(
    ctx: AppContext, records: list[Dossier], *, instance_id: int
) -> list[CellValue]:
    """Store dossiers as a poll page does (one transaction), then publish the changed cells;
    returns them."""
    async with write_transaction(ctx) as session:
        result = await store_batch(
            ctx,
            session,
            instance_id=instance_id,
            batch=Batch(records=records),
            record_type="dossier",
        )
    await publish_changes(ctx, result.changed_cells)
    return result.changed_cells


def count_cell(kpi_id: str, unit_code: str, day: date, value: float, *, at: datetime) -> KpiValue:
    """A day cell of a count KPI, computed `at`."""
    return KpiValue(
        kpi=kpi_id,
        unit_code=unit_code,
        period_kind="day",
        period_start=day,
        numerator=value,
        denominator=None,
        value=value,
        computed_at=at,
    )


async def store_count_cell(
    ctx: AppContext, kpi_id: str, unit_code: str, day: date, value: float, *, at: datetime
) -> None:
    """Store a day cell of a count KPI directly, as if a recompute had (no update published)."""
    async with ctx.sessionmaker() as session, session.begin():
        session.add(count_cell(kpi_id, unit_code, day, value, at=at))
