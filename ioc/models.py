"""Every ORM model, imported in one place for Alembic and the test fixtures."""

from ioc.auth.models import ApiToken, AuditEntry
from ioc.db import Base
from ioc.incidents.models import (
    Incident,
    IncidentEvent,
    IncidentRecord,
    IncidentRule,
    RuleState,
)
from ioc.ingest.models import ConnectorInstance, PollRun, RejectedRecord
from ioc.kpi.models import KpiValue
from ioc.layouts.models import WallLayout
from ioc.records.models import (
    BedCensusRow,
    DossierRow,
    EncounterRow,
    FeedbackRow,
    ObservationRow,
    SchoolDayRow,
)
from ioc.units.models import AdminUnit

__all__ = [
    "AdminUnit",
    "ApiToken",
    "AuditEntry",
    "Base",
    "BedCensusRow",
    "ConnectorInstance",
    "DossierRow",
    "EncounterRow",
    "FeedbackRow",
    "Incident",
    "IncidentEvent",
    "IncidentRecord",
    "IncidentRule",
    "KpiValue",
    "ObservationRow",
    "PollRun",
    "RejectedRecord",
    "RuleState",
    "SchoolDayRow",
    "WallLayout",
]
