"""The connector SDK: the only module a connector imports from `ioc`.

Importable without FastAPI or a database. A connector maps one upstream system to canonical
records and returns them in a `Batch` with the cursor that covers them; the runtime stores the
records and advances the cursor in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Batch",
    "Channel",
    "Connector",
    "ConnectorAuthError",
    "ConnectorError",
    "ConnectorRateLimited",
    "ConnectorUnavailable",
    "Cursor",
    "Dossier",
    "DossierStatus",
    "Record",
    "RecordRejected",
    "Rejected",
    "describe_validation_error",
]

Cursor = dict[str, Any]
"""A connector's state: small JSON, opaque to the runtime, advanced only after a commit."""


# ---------------------------------------------------------------- errors


class ConnectorError(Exception):
    """Base class of the errors a connector raises; the runtime maps each to a health state."""


class ConnectorUnavailable(ConnectorError):
    """The upstream could not be reached, timed out or answered with a server error."""


class ConnectorAuthError(ConnectorError):
    """The upstream refused our credentials."""


class ConnectorRateLimited(ConnectorError):
    """The upstream asked us to slow down; `retry_after` is in seconds when it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecordRejected(Exception):
    """One upstream record cannot be mapped; raised by a mapping function with the reason."""


# ---------------------------------------------------------------- records


class Record(BaseModel):
    """Fields every canonical record has."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_type: ClassVar[str]

    external_id: str = Field(min_length=1, max_length=128)
    unit_code: str = Field(min_length=2, max_length=10, description="Commune or province code")
    source_updated_at: datetime

    @field_validator("*", mode="after")
    @classmethod
    def _datetimes_are_aware(cls, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("timestamp has no UTC offset")
        return value


class Channel(StrEnum):
    """How a dossier was submitted (KenhThucHien 1/2/3)."""

    DIRECT = "direct"
    ONLINE = "online"
    POSTAL = "postal"


class DossierStatus(IntEnum):
    """TrangThaiHoSo as synced to the national public service portal."""

    REGISTERED = 1
    RECEIVED = 2
    NOT_ACCEPTED = 3
    PROCESSING = 4
    SUPPLEMENT_REQUESTED = 5
    AWAITING_PAYMENT = 6
    WITHDRAWN = 7
    STOPPED = 8
    PROCESSED = 9
    RETURNED = 10

    @property
    def is_cancelled(self) -> bool:
        """Not accepted, withdrawn or stopped: counted neither on time nor late."""
        return self in CANCELLED_STATUSES


CANCELLED_STATUSES = frozenset(
    {DossierStatus.NOT_ACCEPTED, DossierStatus.WITHDRAWN, DossierStatus.STOPPED}
)


class Dossier(Record):
    """An administrative-procedure dossier (hồ sơ thủ tục hành chính)."""

    record_type: ClassVar[str] = "dossier"

    procedure_code: str = Field(min_length=1, max_length=64)
    procedure_name: str = ""
    field_code: str = Field(min_length=1, max_length=64, description="lĩnh vực")
    field_name: str = ""
    agency_code: str = Field(default="", max_length=64)
    agency_name: str = ""
    channel: Channel
    status: DossierStatus
    received_at: datetime
    due_at: datetime | None = None
    resolved_at: datetime | None = Field(default=None, description="NgayKetThucXuLy")
    returned_at: datetime | None = Field(default=None, description="NgayTra")
    paid_online: bool = False
    synced_to_portal: bool = False
    apology_issued: bool = False
    original_unit_code: str | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> Dossier:
        if self.due_at is not None and self.due_at < self.received_at:
            raise ValueError("due date (NgayHenTra) is before the receipt date (NgayTiepNhan)")
        if self.resolved_at is not None and self.resolved_at < self.received_at:
            raise ValueError("processing ended (NgayKetThucXuLy) before it was received")
        return self

    @property
    def is_open(self) -> bool:
        """Still being handled: not ended and not cancelled."""
        return self.resolved_at is None and not self.status.is_cancelled


# ---------------------------------------------------------------- batches


class Rejected(BaseModel):
    """An upstream record kept aside with the reason it could not be used."""

    model_config = ConfigDict(frozen=True)

    external_id: str | None
    reason: str
    payload: dict[str, Any]


class Batch(BaseModel):
    """What one poll returns: records, rejects, and the cursor that covers both."""

    records: list[Record] = Field(default_factory=list)
    rejected: list[Rejected] = Field(default_factory=list)
    cursor: Cursor = Field(default_factory=dict)
    has_more: bool = False
    fetched: int = 0

    @classmethod
    def from_payloads(
        cls,
        payloads: Iterable[Mapping[str, Any]],
        mapper: Callable[[Mapping[str, Any]], Record],
        *,
        cursor: Cursor,
        has_more: bool = False,
        id_field: str | None = None,
    ) -> Batch:
        """Map raw upstream payloads; a payload that fails to map becomes a `Rejected`."""
        records: list[Record] = []
        rejected: list[Rejected] = []
        count = 0
        for payload in payloads:
            count += 1
            try:
                records.append(mapper(payload))
            except (RecordRejected, ValidationError, ValueError, TypeError, KeyError) as exc:
                raw_id = payload.get(id_field) if id_field else None
                rejected.append(
                    Rejected(
                        external_id=str(raw_id) if raw_id not in (None, "") else None,
                        reason=describe_validation_error(exc),
                        payload=dict(payload),
                    )
                )
        return cls(
            records=records, rejected=rejected, cursor=cursor, has_more=has_more, fetched=count
        )


def describe_validation_error(exc: Exception) -> str:
    """A one-line, human-readable reason for a record that failed to map."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
        return "; ".join(parts)
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------- connector


class Connector:
    """Base class of every connector plugin, built-in or third-party.

    Subclasses set `kind`, a pydantic `Config`, and implement `poll`. They never touch the
    database: the runtime stores what `poll` returns and persists the cursor afterwards.
    """

    kind: ClassVar[str]
    title: ClassVar[str] = ""
    record_types: ClassVar[tuple[type[Record], ...]] = ()

    class Config(BaseModel):
        """Instance configuration; subclasses replace it with their own model."""

        model_config = ConfigDict(extra="forbid")

    def __init__(self, config: Config) -> None:
        self.config = config

    async def poll(self, cursor: Cursor) -> Batch:
        """Fetch what changed since `cursor` (empty on the first poll)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release network resources; called by the runtime when the instance stops."""
