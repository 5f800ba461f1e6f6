"""Independent recomputation of the one-stop-shop KPIs from a simulator's own records.

Deliberately shares no code with `ioc.kpi`: it reads the upstream JSON fields directly (only
the published mapping of pre-2025 commune codes is borrowed from the connector).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from connectors.onestop.units import to_current_unit

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
CANCELLED = {3, 7, 8}


def parse(value: str | None) -> datetime | None:
    """`yyyyMMddHHmmss` local time as an aware datetime."""
    if not value:
        return None
    return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=HCM)


def current_commune(dossier: Mapping[str, Any]) -> str:
    """The commune a dossier counts in: pre-2025 codes belong to today's commune."""
    return to_current_unit(dossier["MaDiaBan"])[0]


def _counted(dossiers: Iterable[Mapping[str, Any]], unit: str | None) -> list[Mapping[str, Any]]:
    return [
        d
        for d in dossiers
        if d["TrangThaiHoSo"] not in CANCELLED
        and d.get("NgayHenTra")
        and (unit is None or current_commune(d) == unit)
    ]


def on_time_rate_for_month(
    dossiers: Iterable[Mapping[str, Any]], *, month: date, now: datetime, unit: str | None = None
) -> tuple[int, int]:
    """(on time, due) among dossiers due in the local calendar month of `month`."""
    on_time = due = 0
    for d in _counted(dossiers, unit):
        due_at = parse(d["NgayHenTra"])
        assert due_at is not None
        if (due_at.year, due_at.month) != (month.year, month.month):
            continue
        due += 1
        ended = parse(d.get("NgayKetThucXuLy"))
        on_time += (ended <= due_at) if ended is not None else (now <= due_at)
    return on_time, due


def overdue_open_now(
    dossiers: Iterable[Mapping[str, Any]], *, now: datetime, unit: str | None = None
) -> int:
    """Dossiers received, past due and not ended at `now`."""
    count = 0
    for d in _counted(dossiers, unit):
        received, due_at, ended = (
            parse(d["NgayTiepNhan"]),
            parse(d["NgayHenTra"]),
            parse(d.get("NgayKetThucXuLy")),
        )
        assert received is not None and due_at is not None
        if received <= now and due_at < now and (ended is None or ended > now):
            count += 1
    return count
