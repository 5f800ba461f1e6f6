"""Tokens (create, find, revoke) and the audit log; takes the session first, never commits.

Tokens are 256 random bits (`secrets.token_urlsafe(32)`) and only their SHA-256 is stored. A slow
password hash (bcrypt, argon2) protects guessable secrets; nothing here is guessable, so one
SHA-256 is as safe and lets a request find its token through the unique index on the hash.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.auth.models import ApiToken, AuditEntry
from ioc.auth.permissions import Principal, Role
from ioc.auth.schemas import TokenCreate, TokenRead

TOKEN_PREFIX = "ioc_"
"""Every IOC token starts with this, so secret scanners and people recognise one."""

MAX_AUDIT_LIMIT = 500


class TokenNotFound(LookupError):
    """No token with that id or name."""


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token row just added and its secret value, shown once."""

    row: ApiToken
    secret: str


def hash_token(token: str) -> str:
    """The stored form of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    """A fresh token value: the prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(
    session: AsyncSession, data: TokenCreate, *, created_by: str, now: datetime
) -> NewToken:
    """Add a token; the returned secret is not stored anywhere."""
    secret = new_secret()
    row = ApiToken(
        name=data.name,
        token_hash=hash_token(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 4],
        roles=[str(role) for role in data.roles],
        created_at=now,
        created_by=created_by,
        expires_at=data.expires_at,
    )
    session.add(row)
    await session.flush()
    return NewToken(row=row, secret=secret)


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    """Every token, newest first (revoked ones too, for the record)."""
    return list((await session.scalars(select(ApiToken).order_by(ApiToken.id.desc()))).all())


async def get_token(session: AsyncSession, key: int | str) -> ApiToken:
    """A token by id, or by name (the newest of that name)."""
    if isinstance(key, int) or key.isdigit():
        row = await session.get(ApiToken, int(key))
    else:
        row = await session.scalar(
            select(ApiToken).where(ApiToken.name == key).order_by(ApiToken.id.desc()).limit(1)
        )
    if row is None:
        raise TokenNotFound(f"no token {key!r}")
    return row


async def revoke_token(session: AsyncSession, key: int | str, *, now: datetime) -> ApiToken:
    """Revoke a token for good; revoking a revoked token changes nothing."""
    row = await get_token(session, key)
    if row.revoked_at is None:
        row.revoked_at = now
        await session.flush()
    return row


async def find_active_token(
    session: AsyncSession, secret: str, *, now: datetime
) -> ApiToken | None:
    """The unrevoked, unexpired token with this value, or None."""
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return row


async def touch_token(session: AsyncSession, token_id: int, *, now: datetime) -> None:
    """Set a token's last use (one UPDATE, so it can open its own transaction)."""
    await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


def principal_of(row: ApiToken) -> Principal:
    """The principal a token acts as; role names no longer known are ignored."""
    known = {role.value for role in Role}
    return Principal(
        subject=f"token:{row.id}",
        name=row.name,
        roles=frozenset(Role(role) for role in row.roles if role in known),
        token_id=row.id,
    )


def token_snapshot(row: ApiToken) -> dict[str, Any]:
    """A token as the audit log keeps it (never its hash)."""
    return TokenRead.model_validate(row).model_dump(mode="json")


async def record_audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    detail: str | None = None,
    client: str | None = None,
    now: datetime,
) -> AuditEntry:
    """Write one mutation to the audit log, in the caller's transaction (commits with it).

    `before` and `after` are JSON-safe dicts or pydantic models (dumped in JSON mode); give
    masked forms of anything secret.
    """
    entry = AuditEntry(
        at=now,
        actor=principal.subject,
        actor_name=principal.name,
        action=action,
        target=target,
        before=_json(before),
        after=_json(after),
        detail=detail,
        client=client,
    )
    session.add(entry)
    await session.flush()
    return entry


def _json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return dict(value)


async def list_audit(
    session: AsyncSession,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEntry], int]:
    """Audit entries matching every given condition, newest first, and how many match.

    `action` and `target` ending in `*` match by prefix (`connector.*`, `connector:5`).
    """
    conditions = []
    if actor is not None:
        conditions.append(AuditEntry.actor == actor)
    for column, value in ((AuditEntry.action, action), (AuditEntry.target, target)):
        if value is None:
            continue
        if value.endswith("*"):
            conditions.append(column.startswith(value[:-1], autoescape=True))
        else:
            conditions.append(column == value)
    if since is not None:
        conditions.append(AuditEntry.at >= since)
    if until is not None:
        conditions.append(AuditEntry.at < until)
    total = await session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions))
    rows = await session.scalars(
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.all()), total or 0
