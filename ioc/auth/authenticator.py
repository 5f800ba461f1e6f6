"""From a bearer credential to a principal: IOC tokens, OpenID Connect JWTs, or open access.

A looked-up token is trusted for `IOC_AUTH_CACHE_SECONDS`, so the hot read paths (cached KPI
series) open no database session for it; `last_used_at` is written when the cache is refreshed.
A revocation clears this replica's cache at once and reaches other replicas within that time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ioc.auth.limits import RateLimiter
from ioc.auth.oidc import InvalidCredentials, OidcVerifier, looks_like_jwt
from ioc.auth.permissions import OPEN_PRINCIPAL, Principal
from ioc.auth.service import find_active_token, hash_token, principal_of, touch_token
from ioc.config import Settings
from ioc.kit.clock import utcnow

log = logging.getLogger(__name__)


class RateLimited(Exception):
    """The principal spent its request budget; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal | None
    expires_at: datetime | None
    fresh_until: float


class Authenticator:
    """Resolves credentials to principals and spends their request budget."""

    MAX_CACHED = 10_000

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.monotonic = monotonic
        self.limiter = RateLimiter(
            per_minute=settings.rate_limit_per_minute,
            burst=settings.rate_limit_burst,
            clock=monotonic,
        )
        self.oidc = OidcVerifier(settings) if settings.oidc_enabled else None
        self._cache: dict[str, _Cached] = {}

    @property
    def open(self) -> bool:
        """Whether every request is let in without a credential."""
        return self.settings.open_access

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal a credential stands for (rate limited); raises InvalidCredentials."""
        if self.open:
            return OPEN_PRINCIPAL
        if not credential:
            raise InvalidCredentials("a bearer token is required (Authorization: Bearer <token>)")
        if self.oidc is not None and looks_like_jwt(credential):
            principal = await self.oidc.verify(credential)
        else:
            principal = await self._token_principal(credential)
        wait = self.limiter.take(principal.subject)
        if wait is not None:
            raise RateLimited(wait)
        return principal

    def forget_tokens(self) -> None:
        """Drop every cached lookup (after a revocation)."""
        self._cache.clear()

    async def _token_principal(self, secret: str) -> Principal:
        key = hash_token(secret)
        now = utcnow()
        cached = self._cache.get(key)
        if cached is None or cached.fresh_until <= self.monotonic():
            cached = await self._look_up(secret, now)
            if len(self._cache) >= self.MAX_CACHED:
                self._cache.clear()
            self._cache[key] = cached
        if cached.principal is None or (cached.expires_at is not None and cached.expires_at <= now):
            raise InvalidCredentials("unknown, revoked or expired token")
        return cached.principal

    async def _look_up(self, secret: str, now: datetime) -> _Cached:
        async with self.sessionmaker() as session:
            row = await find_active_token(session, secret, now=now)
        fresh_until = self.monotonic() + self.settings.auth_cache_seconds
        if row is None:
            return _Cached(principal=None, expires_at=None, fresh_until=fresh_until)
        if row.last_used_at is None or (now - row.last_used_at).total_seconds() >= 60:
            await self._touch(row.id, now)
        return _Cached(
            principal=principal_of(row), expires_at=row.expires_at, fresh_until=fresh_until
        )

    async def _touch(self, token_id: int, now: datetime) -> None:
        """Record a use, to the minute; bookkeeping never fails the request it serves.

        Its own transaction, whose first statement writes: SQLite refuses to turn a read
        transaction into a write once another writer has committed.
        """
        try:
            async with self.sessionmaker() as session, session.begin():
                await touch_token(session, token_id, now=now)
        except SQLAlchemyError as exc:
            log.warning("could not record the use of token %s: %s", token_id, exc)
