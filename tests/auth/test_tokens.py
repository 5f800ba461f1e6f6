"""Token lifecycle over REST: created once, stored hashed, used, listed, revoked, expired."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from ioc.auth.models import ApiToken, AuditEntry
from ioc.auth.permissions import Role
from ioc.context import AppContext
from tests.auth.conftest import MakeToken, bearer


async def create(http: httpx.AsyncClient, admin: str, **body: object) -> httpx.Response:
    return await http.post("/api/v1/tokens", json=body, headers=bearer(admin))


async def test_a_created_token_is_shown_once_and_stored_only_as_its_hash(
    http: httpx.AsyncClient, make_token: MakeToken, ctx: AppContext
) -> None:
    admin = await make_token(Role.ADMIN)
    response = await create(http, admin, name="wall-hall-a", roles=["viewer"])
    assert response.status_code == 201
    secret = response.json()["token"]
    assert secret.startswith("ioc_") and len(secret) > 40
    async with ctx.sessionmaker() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "wall-hall-a"))
    assert row is not None and row.roles == ["viewer"]
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    listed = (await http.get("/api/v1/tokens", headers=bearer(admin))).json()
    assert secret not in str(listed) and row.token_hash not in str(listed)
    assert {t["name"]: t["prefix"] for t in listed}["wall-hall-a"] == secret[:8]


async def test_a_new_token_works_with_its_roles_and_its_use_is_recorded(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    admin = await make_token(Role.ADMIN)
    secret = (await create(http, admin, name="wall", roles=["viewer"])).json()["token"]
    assert (await http.get("/api/v1/kpis", headers=bearer(secret))).status_code == 200
    assert (await http.get("/api/v1/records/dossier", headers=bearer(secret))).status_code == 403
    listed = (await http.get("/api/v1/tokens", headers=bearer(admin))).json()
    assert {t["name"]: t["last_used_at"] for t in listed}["wall"] is not None


async def test_a_revoked_token_is_refused_at_once(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    admin = await make_token(Role.ADMIN)
    created = (await create(http, admin, name="lost-laptop", roles=["leader"])).json()
    assert (await http.get("/api/v1/kpis", headers=bearer(created["token"]))).status_code == 200
    revoked = await http.post(f"/api/v1/tokens/{created['id']}/revoke", headers=bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = await http.get("/api/v1/kpis", headers=bearer(created["token"]))
    assert response.status_code == 401


async def test_an_expired_token_is_refused(http: httpx.AsyncClient, make_token: MakeToken) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    secret = await make_token(Role.VIEWER, expires_at=past)
    response = await http.get("/api/v1/kpis", headers=bearer(secret))
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown, revoked or expired token"


async def test_a_token_with_an_unknown_role_or_no_role_is_refused_with_422(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    admin = await make_token(Role.ADMIN)
    assert (await create(http, admin, name="x", roles=["superuser"])).status_code == 422
    assert (await create(http, admin, name="x", roles=[])).status_code == 422


async def test_revoking_an_unknown_token_answers_404(
    http: httpx.AsyncClient, make_token: MakeToken
) -> None:
    admin = await make_token(Role.ADMIN)
    response = await http.post("/api/v1/tokens/424242/revoke", headers=bearer(admin))
    assert response.status_code == 404 and "no token" in response.json()["detail"]


async def test_creating_and_revoking_tokens_is_audited_without_the_secret(
    http: httpx.AsyncClient, make_token: MakeToken, ctx: AppContext
) -> None:
    admin = await make_token(Role.ADMIN, name="root")
    created = (await create(http, admin, name="wall", roles=["viewer"])).json()
    await http.post(f"/api/v1/tokens/{created['id']}/revoke", headers=bearer(admin))
    async with ctx.sessionmaker() as session:
        entries = (await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [(e.action, e.target, e.actor_name) for e in entries] == [
        ("token.create", f"token:{created['id']}", "root"),
        ("token.revoke", f"token:{created['id']}", "root"),
    ]
    assert entries[1].before["revoked_at"] is None and entries[1].after["revoked_at"] is not None
    assert entries[0].client == "10.0.0.7"
    assert created["token"] not in str([(e.before, e.after) for e in entries])
