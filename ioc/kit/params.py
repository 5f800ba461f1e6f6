"""Bounds of numbers clients send, so an out-of-range value is a 422, never a database error."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

MAX_ROW_ID = 2**31 - 1
"""Largest id an `integer` primary key holds (PostgreSQL int4)."""

MAX_OFFSET = 2**31 - 1
"""Largest page offset a query accepts."""

RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
"""A row id inside a request body."""

InstanceIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Connector instance id")]
IncidentIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Incident id")]
RuleIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Incident rule id")]
TokenIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Token id")]
InstanceIdQuery = Annotated[
    int | None, Query(ge=1, le=MAX_ROW_ID, description="Only this connector instance")
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip")]
