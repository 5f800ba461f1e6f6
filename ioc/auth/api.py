"""Routes for administrators: tokens and the audit log (the router is gated with ADMIN)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status

from ioc.auth import service
from ioc.auth.deps import PrincipalDep, client_address
from ioc.auth.schemas import AuditPage, AuditRead, TokenCreate, TokenCreated, TokenRead
from ioc.deps import ContextDep, SessionDep
from ioc.kit.clock import utcnow
from ioc.kit.params import Offset, TokenIdPath

router = APIRouter(prefix="/api/v1", tags=["access"])


@router.get("/tokens", response_model=list[TokenRead])
async def get_tokens(session: SessionDep) -> list[TokenRead]:
    """Every token (never its value), newest first."""
    return [TokenRead.model_validate(row) for row in await service.list_tokens(session)]


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
async def create_token(
    data: TokenCreate, session: SessionDep, principal: PrincipalDep, request: Request
) -> TokenCreated:
    """Create a token; its value is in this answer only and is never shown again."""
    now = utcnow()
    created = await service.create_token(session, data, created_by=principal.subject, now=now)
    await service.record_audit(
        session,
        principal,
        "token.create",
        f"token:{created.row.id}",
        after=service.token_snapshot(created.row),
        client=client_address(request),
        now=now,
    )
    return TokenCreated(**service.token_snapshot(created.row), token=created.secret)


@router.post("/tokens/{token_id}/revoke", response_model=TokenRead)
async def revoke_token(
    token_id: TokenIdPath,
    session: SessionDep,
    ctx: ContextDep,
    principal: PrincipalDep,
    request: Request,
) -> TokenRead:
    """Revoke a token for good (it stops working on this replica at once, on others within
    IOC_AUTH_CACHE_SECONDS)."""
    now = utcnow()
    try:
        row = await service.get_token(session, token_id)
    except service.TokenNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    before = service.token_snapshot(row)
    await service.revoke_token(session, token_id, now=now)
    await service.record_audit(
        session,
        principal,
        "token.revoke",
        f"token:{row.id}",
        before=before,
        after=service.token_snapshot(row),
        client=client_address(request),
        now=now,
    )
    await session.commit()
    if ctx.auth is not None:
        ctx.auth.forget_tokens()
    return TokenRead.model_validate(row)


@router.get("/audit", response_model=AuditPage)
async def get_audit(
    session: SessionDep,
    actor: Annotated[str | None, Query(description="Subject, e.g. token:3 or oidc:<sub>")] = None,
    action: Annotated[
        str | None, Query(description="e.g. connector.update; `connector.*` for a prefix")
    ] = None,
    target: Annotated[
        str | None, Query(description="e.g. connector:5; `connector:*` for a prefix")
    ] = None,
    since: Annotated[datetime | None, Query(description="From this time, included")] = None,
    until: Annotated[datetime | None, Query(description="Before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_AUDIT_LIMIT)] = 50,
    offset: Offset = 0,
) -> AuditPage:
    """Audited mutations, newest first, filtered and paginated."""
    for moment, name in ((since, "since"), (until, "until")):
        if moment is not None and moment.tzinfo is None:
            raise HTTPException(422, f"{name} needs a time zone (e.g. 2026-11-25T00:00:00Z)")
    rows, total = await service.list_audit(
        session,
        actor=actor,
        action=action,
        target=target,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return AuditPage(
        items=[AuditRead.model_validate(row) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )
