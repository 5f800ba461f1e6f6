"""What one poll returns: records, rejects and the cursor that covers both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ioc.sdk.errors import RecordRejected
from ioc.sdk.records import Record

Cursor = dict[str, Any]
"""A connector's state: small JSON, opaque to the runtime, advanced only after a commit."""


class Rejected(BaseModel):
    """An upstream record kept aside with the reason it could not be used."""

    model_config = ConfigDict(frozen=True)

    external_id: str | None
    reason: str
    payload: dict[str, Any]


class Batch(BaseModel):
    """What one poll returns: records, rejects, and the cursor that covers them."""

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
