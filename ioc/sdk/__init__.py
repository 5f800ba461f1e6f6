"""The connector SDK: the only module a connector imports from `ioc`.

Importable without FastAPI or a database. A connector maps one upstream system to canonical
records and returns them in a `Batch` with the cursor that covers them; the runtime stores the
records and advances the cursor in one transaction.
"""

from ioc.sdk.batch import Batch, Cursor, Rejected, describe_validation_error
from ioc.sdk.connector import Connector
from ioc.sdk.cursor import advance_watermark, read_time, with_time
from ioc.sdk.errors import (
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorUnavailable,
    RecordRejected,
)
from ioc.sdk.http import HttpConfig, HttpConnector, raise_for_upstream, retry_after_seconds
from ioc.sdk.records import (
    CANCELLED_STATUSES,
    RECORD_TYPES,
    BedCensus,
    Channel,
    Dossier,
    DossierStatus,
    Encounter,
    EncounterClass,
    FeedbackReport,
    FeedbackStatus,
    Observation,
    PeriodKindName,
    Record,
    SchoolDay,
    SchoolLevel,
    SupplementRequest,
)

__all__ = [
    "CANCELLED_STATUSES",
    "RECORD_TYPES",
    "Batch",
    "BedCensus",
    "Channel",
    "Connector",
    "ConnectorAuthError",
    "ConnectorError",
    "ConnectorRateLimited",
    "ConnectorUnavailable",
    "Cursor",
    "Dossier",
    "DossierStatus",
    "Encounter",
    "EncounterClass",
    "FeedbackReport",
    "FeedbackStatus",
    "HttpConfig",
    "HttpConnector",
    "Observation",
    "PeriodKindName",
    "Record",
    "RecordRejected",
    "Rejected",
    "SchoolDay",
    "SchoolLevel",
    "SupplementRequest",
    "advance_watermark",
    "describe_validation_error",
    "raise_for_upstream",
    "read_time",
    "retry_after_seconds",
    "with_time",
]
