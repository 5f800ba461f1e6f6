"""`ioc tokens create | list | revoke` against the configured database."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select
from typer.testing import CliRunner, Result

from ioc.auth.models import AuditEntry
from ioc.cli import app as cli
from ioc.context import AppContext
from tests.auth.conftest import bearer


async def ioc(ctx: AppContext, *args: str) -> Result:
    """Run the command in a thread (it runs its own event loop) against the test database."""
    runner = CliRunner()
    env = {"IOC_DATABASE_URL": ctx.settings.database_url}
    return await asyncio.to_thread(runner.invoke, cli, list(args), env=env)


async def test_tokens_create_prints_a_working_token_once_and_list_never_shows_it(
    ctx: AppContext, http: httpx.AsyncClient
) -> None:
    created = await ioc(ctx, "tokens", "create", "hall-a", "--role", "viewer", "--role", "operator")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("ioc_")
    assert (await http.get("/api/v1/kpis", headers=bearer(secret))).status_code == 200
    listed = await ioc(ctx, "tokens", "list")
    assert "hall-a" in listed.stdout and "operator,viewer" in listed.stdout
    assert secret not in listed.stdout and secret[:8] in listed.stdout


async def test_tokens_revoke_by_name_stops_the_token_and_is_audited(
    ctx: AppContext, http: httpx.AsyncClient
) -> None:
    secret = (await ioc(ctx, "tokens", "create", "old", "--role", "leader")).stdout.split()[-1]
    revoked = await ioc(ctx, "tokens", "revoke", "old")
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert (await http.get("/api/v1/kpis", headers=bearer(secret))).status_code == 401
    async with ctx.sessionmaker() as session:
        actions = (await session.execute(select(AuditEntry.action, AuditEntry.actor))).all()
    assert [action for action, _ in actions] == ["token.create", "token.revoke"]
    assert all(actor.startswith("cli:") for _, actor in actions)


async def test_tokens_create_refuses_an_unknown_role(ctx: AppContext) -> None:
    result = await ioc(ctx, "tokens", "create", "x", "--role", "root")
    assert result.exit_code != 0
    assert "viewer" in result.output  # the message lists the valid roles


async def test_tokens_revoke_of_an_unknown_token_fails_with_a_message(ctx: AppContext) -> None:
    result = await ioc(ctx, "tokens", "revoke", "nobody")
    assert result.exit_code == 2 and "no token 'nobody'" in result.output
