"""Connector instance payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ConnectorInstanceSeed(BaseModel):
    """One `[[connector]]` entry of the seed TOML file."""

    name: str = Field(min_length=1, max_length=100)
    kind: str = Field(min_length=1, max_length=50)
    enabled: bool = True
    interval_seconds: int = Field(default=60, ge=1, le=86_400)
    config: dict[str, Any] = Field(default_factory=dict)


class ConnectorInstanceRead(BaseModel):
    """A connector instance as the API shows it: health, never secrets."""

    id: int
    name: str
    kind: str
    title: str
    enabled: bool
    interval_seconds: int
    health: str
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    stale: bool = Field(description="No successful poll within 3 intervals")
    cursor: dict[str, Any]
