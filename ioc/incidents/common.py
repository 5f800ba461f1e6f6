"""What the incident modules share: the rules' actor, the live topic, typed errors, what an
evaluation or action changed, and the timeline entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ioc.incidents.models import Incident, IncidentEvent
from ioc.incidents.schemas import IncidentItem
from ioc.kpi.schemas import KpiRead

SYSTEM = "system"
"""The actor of what the rules do by themselves."""
LIVE_TOPIC = "incidents"
MAX_LIVE_ITEMS = 200
"""Active incidents a live message carries (most severe, then most recent, first)."""


class IncidentNotFound(LookupError):
    """No incident (or rule) with this id."""


class InvalidRule(ValueError):
    """A rule that cannot be evaluated as written."""


class Conflict(ValueError):
    """An action that the incident's (or rule's) state does not allow."""


@dataclass
class IncidentChanges:
    """What an evaluation or an action changed, to publish after the commit."""

    incidents: list[IncidentItem] = field(default_factory=list)
    active: list[IncidentItem] = field(default_factory=list)
    response_cells: list[KpiRead] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.incidents or self.response_cells)


def timeline_event(
    session: AsyncSession,
    incident: Incident,
    at: datetime,
    kind: str,
    actor: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    """Add an entry to an incident's timeline."""
    session.add(
        IncidentEvent(
            incident_id=incident.id, at=at, kind=kind, actor=actor, message=message, data=data or {}
        )
    )
