"""Connector instance, poll run and rejected record payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ioc.kit.params import RowId

SECRET_MASK = "********"
"""What a secret config value reads as; sending it back in an update keeps the stored value."""


class ConnectorInstanceCreate(BaseModel):
    """A new connector instance (also one `[[connector]]` entry of the seed TOML file)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.-]+$")
    kind: str = Field(min_length=1, max_length=50)
    enabled: bool = True
    interval_seconds: int = Field(default=60, ge=1, le=86_400)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    max_backoff_seconds: int = Field(default=900, ge=1, le=86_400)
    config: dict[str, Any] = Field(default_factory=dict)


ConnectorInstanceSeed = ConnectorInstanceCreate


class ConnectorInstanceUpdate(BaseModel):
    """A partial update; keys left out keep their value, secrets sent as the mask too."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[\w.-]+$")
    enabled: bool | None = None
    interval_seconds: int | None = Field(default=None, ge=1, le=86_400)
    timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    max_backoff_seconds: int | None = Field(default=None, ge=1, le=86_400)
    config: dict[str, Any] | None = None


class ConnectorInstanceRead(BaseModel):
    """A connector instance as the API shows it: health and config, secrets masked."""

    id: int
    name: str
    kind: str
    title: str
    enabled: bool
    interval_seconds: int
    timeout_seconds: float
    max_backoff_seconds: int
    config: dict[str, Any]
    health: str
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    next_attempt_at: datetime | None
    stale: bool = Field(description="No successful poll within 3 intervals")
    cursor: dict[str, Any]


class ConnectorKindRead(BaseModel):
    """An installed connector kind and the JSON schema of its config."""

    kind: str
    title: str
    record_types: list[str]
    config_schema: dict[str, Any]
    secret_fields: list[str]


class PollOutcomeRead(BaseModel):
    """What a poll did (a manual run's answer)."""

    ok: bool
    skipped: str | None = None
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    rejected: int = 0
    error: str | None = None


class CheckRead(BaseModel):
    """Whether the instance's config works against the live source."""

    ok: bool
    error: str | None = None


class PollRunRead(BaseModel):
    """One poll run in an instance's history."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    pages: int
    fetched: int
    stored: int
    rejected: int
    error: str | None


class RejectedRead(BaseModel):
    """A rejected record with its reason and payload."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    instance_id: int
    record_type: str
    stage: str
    external_id: str | None
    reason: str
    payload: dict[str, Any]
    rejected_at: datetime
    resolved_at: datetime | None


class ReingestRequest(BaseModel):
    """Which rejected records to try again: given ids, or all pending of an instance."""

    model_config = ConfigDict(extra="forbid")

    instance_id: RowId | None = None
    ids: list[RowId] | None = Field(default=None, max_length=10_000)


class ReingestResult(BaseModel):
    """How a re-ingest went."""

    tried: int
    stored: int
    still_rejected: int
