"""Reading incidents: items, the live topic's message, filtered lists, detail, the records
behind an incident and counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.common import (
    LIVE_TOPIC,
    MAX_LIVE_ITEMS,
    IncidentChanges,
    IncidentNotFound,
    InvalidRule,
)
from ioc.incidents.models import ACTIVE_STATUSES, Incident, IncidentEvent, IncidentRecord
from ioc.incidents.rules import RECORD_KINDS, unit_names
from ioc.incidents.schemas import (
    CountRow,
    CountsRead,
    EventRead,
    IncidentDetail,
    IncidentItem,
    IncidentPage,
    IncidentRecordsPage,
)
from ioc.kpi.catalog import KPIS
from ioc.kpi.periods import Period
from ioc.kpi.reads import records_behind
from ioc.records.service import RecordQuery, query_records, units_under
from ioc.records.stores import STORES


def item(incident: Incident) -> IncidentItem:
    """An incident as lists and live messages show it."""
    return IncidentItem(
        id=incident.id,
        title=incident.title,
        title_en=incident.title_en,
        severity=incident.severity,  # type: ignore[arg-type]
        status=incident.status,  # type: ignore[arg-type]
        domain=incident.domain,
        unit_code=incident.unit_code,
        unit_name=incident.unit_name,
        agency_code=incident.agency_code,
        kpi=incident.kpi,
        rule_id=incident.rule_id,
        rule_kind=incident.rule_kind,
        value=incident.value,
        peak_value=incident.peak_value,
        threshold=incident.threshold,
        breach_count=incident.breach_count,
        reopen_count=incident.reopen_count,
        assignee=incident.assignee,
        opened_at=incident.opened_at,
        last_seen_at=incident.last_seen_at,
        acknowledged_at=incident.acknowledged_at,
        resolved_at=incident.resolved_at,
    )


async def active_items(session: AsyncSession, *, limit: int = MAX_LIVE_ITEMS) -> list[IncidentItem]:
    """Open and acknowledged incidents, critical first, then the most recently seen."""
    critical_first = case((Incident.severity == "critical", 0), else_=1)
    rows = await session.scalars(
        select(Incident)
        .where(Incident.status.in_(ACTIVE_STATUSES))
        .order_by(critical_first, Incident.last_seen_at.desc(), Incident.id.desc())
        .limit(limit)
    )
    return [item(i) for i in rows]


def live_message(active: Sequence[IncidentItem], changed: Sequence[IncidentItem]) -> dict[str, Any]:
    """The `incidents` topic's data: the active list (whole, so a conflated update loses
    nothing) and the incidents this message is about."""
    return {
        "items": [i.model_dump(mode="json") for i in active],
        "changed": [i.model_dump(mode="json") for i in changed],
    }


async def snapshot(session: AsyncSession) -> dict[str, Any]:
    """The `incidents` topic's current state."""
    return live_message(await active_items(session), [])


def publish(hub: Any, changes: IncidentChanges) -> None:
    """Push changed incidents and response-time cells to the live hub (after the commit)."""
    if hub is None or not changes:
        return
    if changes.incidents:
        hub.publish(LIVE_TOPIC, live_message(changes.active, changes.incidents))
    for cell in changes.response_cells:
        hub.publish(f"kpi:{cell.kpi}:{cell.unit}", cell.model_dump(mode="json"))


@dataclass(frozen=True)
class IncidentFilter:
    """What a list of incidents is narrowed to."""

    status: Sequence[str] = ()
    severity: Sequence[str] = ()
    domain: Sequence[str] = ()
    unit: str | None = None
    agency: Sequence[str] = ()
    kpi: Sequence[str] = ()
    rule_id: int | None = None
    active_from: datetime | None = None
    active_to: datetime | None = None


STATUSES = ("open", "acknowledged", "resolved")
SEVERITIES = ("warn", "critical")
SORTS = {
    "opened_at": Incident.opened_at,
    "last_seen_at": Incident.last_seen_at,
    "resolved_at": Incident.resolved_at,
    "id": Incident.id,
}


def _filtered(f: IncidentFilter) -> Select[Any]:
    statuses = set(f.status)
    if "active" in statuses:
        statuses = (statuses - {"active"}) | set(ACTIVE_STATUSES)
    bad = statuses - set(STATUSES)
    if bad:
        raise InvalidRule(f"status must be active, {', '.join(STATUSES)}; not {sorted(bad)}")
    bad = set(f.severity) - set(SEVERITIES)
    if bad:
        raise InvalidRule(f"severity must be warn or critical, not {sorted(bad)}")
    if f.active_from and f.active_to and f.active_from > f.active_to:
        raise InvalidRule("from is after to")
    query = select(Incident)
    if statuses:
        query = query.where(Incident.status.in_(statuses))
    if f.severity:
        query = query.where(Incident.severity.in_(f.severity))
    if f.domain:
        query = query.where(Incident.domain.in_(f.domain))
    if f.unit is not None:
        query = query.where(Incident.unit_code.in_(units_under(f.unit)))
    if f.agency:
        query = query.where(Incident.agency_code.in_(f.agency))
    if f.kpi:
        query = query.where(Incident.kpi.in_(f.kpi))
    if f.rule_id is not None:
        query = query.where(Incident.rule_id == f.rule_id)
    if f.active_to is not None:
        query = query.where(Incident.opened_at <= f.active_to)
    if f.active_from is not None:
        query = query.where(
            or_(Incident.resolved_at.is_(None), Incident.resolved_at >= f.active_from)
        )
    return query


async def list_incidents(
    session: AsyncSession,
    f: IncidentFilter,
    *,
    sort: str = "-last_seen_at",
    limit: int,
    offset: int,
) -> IncidentPage:
    """One page of incidents matching `f`, with the total."""
    name = sort.removeprefix("-")
    if name not in SORTS:
        raise InvalidRule(f"sort must be one of {', '.join(SORTS)} (- first to descend)")
    column = SORTS[name]
    order = column.desc() if sort.startswith("-") else column.asc()
    query = _filtered(f)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(
        query.order_by(order.nulls_last(), Incident.id.desc()).limit(limit).offset(offset)
    )
    return IncidentPage(items=[item(i) for i in rows], total=total, limit=limit, offset=offset)


async def get_incident(session: AsyncSession, incident_id: int, *, lock: bool = False) -> Incident:
    """An incident, or `IncidentNotFound`."""
    incident = await session.get(Incident, incident_id, with_for_update=lock)
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return incident


async def detail(session: AsyncSession, incident: Incident) -> IncidentDetail:
    """An incident with its timeline (oldest first)."""
    events = await session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident.id)
        .order_by(IncidentEvent.at, IncidentEvent.id)
    )
    return IncidentDetail(
        **item(incident).model_dump(),
        dedup_key=incident.dedup_key,
        subject=incident.subject,
        acknowledged_by=incident.acknowledged_by,
        resolved_by=incident.resolved_by,
        cleared_since=incident.cleared_since,
        evidence=incident.evidence,
        timeline=[
            EventRead(at=e.at, kind=e.kind, actor=e.actor, message=e.message, data=e.data)
            for e in events
        ],
    )


async def incident_records(
    session: AsyncSession,
    incident: Incident,
    *,
    now: datetime,
    tz: ZoneInfo,
    filters: Mapping[str, Sequence[str | int]],
    q: str | None,
    sort: str | Sequence[str],
    limit: int,
    offset: int,
) -> IncidentRecordsPage:
    """One page of the records behind an incident: the record ids its last breach found, or,
    for a KPI incident, the records behind its cell (as the evidence's query lists them)."""
    evidence = incident.evidence or {}
    record_type = evidence.get("record_type")
    if record_type is None:
        return IncidentRecordsPage(
            items=[], total=0, limit=limit, offset=offset, incident_id=incident.id, record_type=None
        )
    if incident.rule_kind in RECORD_KINDS:
        table = STORES[record_type].model
        ids = select(IncidentRecord.record_id).where(
            IncidentRecord.incident_id == incident.id, IncidentRecord.record_type == record_type
        )
        query = RecordQuery(
            record_type=record_type, filters=filters, q=q, sort=sort, limit=limit, offset=offset
        )
        page = await query_records(session, query, extra_conditions=[table.id.in_(ids)])
    else:
        cell = evidence["cells"][0]
        kpi = KPIS[cell["kpi"]]
        period = Period.parse(
            cell["period_kind"], datetime.fromisoformat(cell["period_start"]).date()
        )
        page = await records_behind(
            session,
            kpi,
            cell["unit"],
            period,
            side=evidence["side"],
            now=now,
            tz=tz,
            filters=filters,
            q=q,
            sort=sort,
            limit=limit,
            offset=offset,
        )
    return IncidentRecordsPage(
        items=page.items,
        total=page.total,
        limit=page.limit,
        offset=page.offset,
        incident_id=incident.id,
        record_type=record_type,
    )


async def counts(session: AsyncSession, *, statuses: Sequence[str]) -> CountsRead:
    """Incidents of these statuses by unit and severity."""
    query = _filtered(IncidentFilter(status=statuses)).subquery()
    rows = (
        await session.execute(
            select(query.c.unit_code, query.c.severity, func.count()).group_by(
                query.c.unit_code, query.c.severity
            )
        )
    ).all()
    by_unit: dict[str | None, dict[str, int]] = {}
    for unit, severity, n in rows:
        by_unit.setdefault(unit, {"warn": 0, "critical": 0})[severity] = n
    names = await unit_names(session, [u for u in by_unit if u is not None])
    units = [
        CountRow(
            unit_code=unit,
            unit_name=names.get(unit) if unit is not None else None,
            warn=c["warn"],
            critical=c["critical"],
            total=c["warn"] + c["critical"],
        )
        for unit, c in by_unit.items()
    ]
    units.sort(key=lambda r: (-r.critical, -r.total, r.unit_code or ""))
    return CountsRead(
        statuses=sorted(set(statuses)),
        warn=sum(r.warn for r in units),
        critical=sum(r.critical for r in units),
        total=sum(r.total for r in units),
        units=units,
    )
