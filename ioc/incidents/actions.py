"""What people do to an incident: acknowledge, assign, note and resolve, each on its timeline."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.common import Conflict, IncidentChanges, timeline_event
from ioc.incidents.models import RESOLVED, Incident
from ioc.incidents.queries import active_items, get_incident, item
from ioc.incidents.response_times import update_response_kpis


async def acknowledge(
    session: AsyncSession, incident_id: int, *, actor: str, note: str | None, now: datetime
) -> Incident:
    """open → acknowledged."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status != "open":
        raise Conflict(
            f"incident {incident_id} is {incident.status}"
            + (f" (by {incident.acknowledged_by})" if incident.status == "acknowledged" else "")
            + "; only an open incident can be acknowledged"
        )
    incident.status = "acknowledged"
    incident.acknowledged_at, incident.acknowledged_by = now, actor
    incident.updated_at = now
    timeline_event(session, incident, now, "acknowledged", actor, note or "")
    await session.flush()
    return incident


async def assign(
    session: AsyncSession,
    incident_id: int,
    *,
    actor: str,
    assignee: str,
    agency_code: str | None,
    now: datetime,
) -> Incident:
    """Give an active incident to a person or an agency."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status == RESOLVED:
        raise Conflict(f"incident {incident_id} is resolved; re-opening happens on relapse")
    before = incident.assignee
    incident.assignee = assignee
    if agency_code is not None:
        incident.agency_code = agency_code
    incident.updated_at = now
    timeline_event(
        session,
        incident,
        now,
        "assigned",
        actor,
        f"assigned to {assignee}" + (f" (was {before})" if before else ""),
        {"assignee": assignee, "agency_code": agency_code, "previous": before},
    )
    await session.flush()
    return incident


async def add_note(
    session: AsyncSession, incident_id: int, *, actor: str, text: str, now: datetime
) -> Incident:
    """Add a note to the timeline."""
    incident = await get_incident(session, incident_id)
    incident.updated_at = now
    timeline_event(session, incident, now, "note", actor, text)
    await session.flush()
    return incident


async def resolve(
    session: AsyncSession, incident_id: int, *, actor: str, note: str | None, now: datetime
) -> Incident:
    """Resolve by hand; a breach within the relapse window re-opens it."""
    incident = await get_incident(session, incident_id, lock=True)
    if incident.status == RESOLVED:
        raise Conflict(f"incident {incident_id} is resolved already (by {incident.resolved_by})")
    incident.status = RESOLVED
    incident.resolved_at, incident.resolved_by = now, actor
    incident.cleared_since = None
    incident.updated_at = now
    timeline_event(session, incident, now, "resolved", actor, note or "")
    await session.flush()
    return incident


async def action_changes(
    session: AsyncSession, incident: Incident, *, province: str, tz: ZoneInfo, now: datetime
) -> IncidentChanges:
    """What to publish after a human action on `incident`."""
    cells = []
    if incident.acknowledged_at == now or incident.resolved_at == now:
        cells = await update_response_kpis(
            session, incidents=[incident], province=province, tz=tz, now=now
        )
    return IncidentChanges(
        incidents=[item(incident)], active=await active_items(session), response_cells=cells
    )
