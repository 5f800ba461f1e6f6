"""Read and write models of tokens and audit entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from ioc.auth.permissions import Role


class TokenCreate(BaseModel):
    """A new token: a name saying who or what holds it, its roles, and when it expires."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["wall-display-hall-a"])
    roles: list[Role] = Field(
        min_length=1, description="viewer, operator, leader, integrator, admin"
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the token stops working; never by default"
    )

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[Role]) -> list[Role]:
        return sorted(set(roles))


class TokenRead(BaseModel):
    """A token as listed: never the token itself, which is shown once at creation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it")
    roles: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    last_used_at: datetime | None = Field(
        description="Last use, to within IOC_AUTH_CACHE_SECONDS per replica"
    )
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    """A token just created, with its secret value: store it now, it is never shown again."""

    token: str


class AuditRead(BaseModel):
    """One audited mutation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor: str
    actor_name: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: str | None
    client: str | None


class AuditPage(BaseModel):
    """One page of the audit log, newest first, and how many entries match."""

    items: list[AuditRead]
    total: int
    limit: int
    offset: int
