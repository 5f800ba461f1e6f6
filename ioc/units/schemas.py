"""Administrative unit payloads."""

from __future__ import annotations

from pydantic import BaseModel, Field


class UnitNode(BaseModel):
    """A unit with its children: the province at the root, communes below."""

    code: str
    name: str
    division_type: str
    level: str
    children: list[UnitNode] = Field(default_factory=list)
