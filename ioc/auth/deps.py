"""FastAPI dependencies of access control: `PrincipalDep`, `require(permission)`, and the
WebSocket handshake.

Gate a router when including it (`dependencies=[require(Permission.READ)]`) and each mutation
on its route (`principal: Annotated[Principal, require(Permission.CONNECTORS)]`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request, WebSocket, WebSocketDisconnect, status
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.auth.authenticator import Authenticator, RateLimited
from ioc.auth.limits import retry_after_header
from ioc.auth.oidc import InvalidCredentials
from ioc.auth.permissions import Permission, Principal, roles_with
from ioc.auth.service import record_audit
from ioc.context import AppContext
from ioc.deps import SessionDep
from ioc.kit.clock import utcnow

WS_AUTH_TIMEOUT_SECONDS = 10.0
"""How long a WebSocket client may take to send its `auth` message."""

WS_POLICY_VIOLATION = 1008
"""WebSocket close code for a refused credential (RFC 6455)."""


def bearer_of(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer …` header, or None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def _authenticator(ctx: AppContext) -> Authenticator:
    assert ctx.auth is not None
    return ctx.auth


BEARER = HTTPBearer(
    auto_error=False,
    description="An IOC token (`ioc tokens create`) or, with OpenID Connect, a JWT",
)
"""Reads the Authorization header, and declares the scheme in the OpenAPI document."""


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """Who the request acts as; 401 without a valid credential, 429 past its rate limit."""
    ctx: AppContext = request.app.state.ctx
    try:
        principal = await _authenticator(ctx).authenticate(
            credentials.credentials if credentials is not None else None
        )
    except InvalidCredentials as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None
    except RateLimited as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            str(exc),
            headers={"Retry-After": retry_after_header(exc.retry_after)},
        ) from None
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(permission: Permission) -> DependsParam:
    """A dependency answering 403 unless the principal holds `permission`; yields the principal.

    Use it in a router's `dependencies=[…]` or as `Annotated[Principal, require(…)]`.
    """

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.can(permission):
            roles = ", ".join(roles_with(permission))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {permission} permission (roles: {roles}); "
                f"{principal.name!r} has {', '.join(sorted(principal.roles)) or 'no role'}",
            )
        return principal

    check.__name__ = f"require_{permission}"
    return Depends(check)


def client_address(request: Request) -> str | None:
    """The client's address as the server saw it, for the audit log."""
    return request.client.host if request.client is not None else None


async def accept_websocket(websocket: WebSocket) -> Principal | None:
    """Accept a WebSocket if it authenticates with READ permission; else close it, None.

    The credential comes from an `Authorization: Bearer` header, a `token` query parameter, or
    (browsers cannot set headers, and query strings end up in access logs) a first message
    `{"type": "auth", "token": "…"}`, answered with `{"type": "auth", "ok": true}`.
    """
    ctx: AppContext = websocket.app.state.ctx
    authenticator = _authenticator(ctx)
    await websocket.accept()
    credential = bearer_of(websocket.headers.get("authorization")) or websocket.query_params.get(
        "token"
    )
    by_message = credential is None and not authenticator.open
    if by_message:
        credential = await _auth_message(websocket)
    try:
        principal = await authenticator.authenticate(credential)
        if not principal.can(Permission.READ):
            raise InvalidCredentials(f"{principal.name!r} may not read live topics")
    except (InvalidCredentials, RateLimited) as exc:
        await _refuse(websocket, str(exc))
        return None
    if by_message:
        await websocket.send_text('{"type":"auth","ok":true}')
    return principal


async def _auth_message(websocket: WebSocket) -> str | None:
    try:
        async with asyncio.timeout(WS_AUTH_TIMEOUT_SECONDS):
            raw = await websocket.receive_text()
        message: Any = orjson.loads(raw) if len(raw) <= 8192 else None
    except (TimeoutError, WebSocketDisconnect, orjson.JSONDecodeError, RuntimeError, KeyError):
        return None
    if isinstance(message, dict) and message.get("type") == "auth":
        token = message.get("token")
        return token if isinstance(token, str) else None
    return None


async def _refuse(websocket: WebSocket, reason: str) -> None:
    try:
        await websocket.send_text(orjson.dumps({"type": "error", "message": reason}).decode())
        await websocket.close(code=WS_POLICY_VIOLATION, reason=reason[:120])
    except Exception:  # the client left already
        return


class Audit:
    """Writes audit entries for the request's principal, in the request's transaction."""

    def __init__(self, session: AsyncSession, principal: Principal, client: str | None) -> None:
        self.session = session
        self.principal = principal
        self.client = client

    async def __call__(
        self,
        action: str,
        target: str,
        *,
        before: Any = None,
        after: Any = None,
        detail: str | None = None,
    ) -> None:
        """Record one mutation: `await audit("connector.update", "connector:5", before=…)`."""
        await record_audit(
            self.session,
            self.principal,
            action,
            target,
            before=before,
            after=after,
            detail=detail,
            client=self.client,
            now=utcnow(),
        )


async def get_audit(session: SessionDep, principal: PrincipalDep, request: Request) -> Audit:
    """The request's audit writer."""
    return Audit(session, principal, client_address(request))


AuditDep = Annotated[Audit, Depends(get_audit)]
"""One parameter and one line per mutation: `await audit(action, target, before=…, after=…)`."""
