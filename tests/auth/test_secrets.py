"""Connector secrets encrypted at rest with IOC_SECRETS_KEY, opened only to build a connector."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from ioc.auth.secrets import PREFIX, SecretBox, SecretsUnavailable, new_key
from ioc.config import Settings
from ioc.context import AppContext
from ioc.ingest.instances import create_instance, get_instance, to_read, update_instance
from ioc.ingest.registry import ConnectorRegistry
from ioc.ingest.schemas import ConnectorInstanceCreate, ConnectorInstanceUpdate

KEY = new_key()
NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"secrets_key": SecretStr(KEY)})


async def create(ctx: AppContext, api_key: str) -> int:
    data = ConnectorInstanceCreate(
        name="motcua",
        kind="onestop",
        config={"base_url": "http://127.0.0.1:9", "api_key": api_key},
    )
    async with ctx.sessionmaker() as session, session.begin():
        return (await create_instance(session, ctx.registry, data, now=NOW)).id


async def stored_config(ctx: AppContext, instance_id: int) -> dict:
    async with ctx.sessionmaker() as session:
        return (await get_instance(session, instance_id)).config


async def test_a_secret_is_stored_encrypted_and_opened_to_build_the_connector(
    ctx: AppContext,
) -> None:
    instance_id = await create(ctx, "s3cret-key")
    config = await stored_config(ctx, instance_id)
    assert config["api_key"].startswith(PREFIX) and "s3cret" not in str(config)
    assert config["base_url"] == "http://127.0.0.1:9"  # only secret fields are encrypted
    connector = ctx.registry.create("onestop", config)
    assert connector.config.api_key.get_secret_value() == "s3cret-key"


async def test_an_update_keeps_an_unsent_secret_and_encrypts_a_new_one(ctx: AppContext) -> None:
    instance_id = await create(ctx, "first")
    first = (await stored_config(ctx, instance_id))["api_key"]
    async with ctx.sessionmaker() as session, session.begin():
        update = ConnectorInstanceUpdate(config={"base_url": "http://127.0.0.1:10"})
        instance = await update_instance(session, ctx.registry, instance_id, update)
        assert to_read(instance, ctx.registry, now=NOW).config["api_key"] == "********"
    assert (await stored_config(ctx, instance_id))["api_key"] == first
    async with ctx.sessionmaker() as session, session.begin():
        update = ConnectorInstanceUpdate(config={"base_url": "http://x", "api_key": "second"})
        await update_instance(session, ctx.registry, instance_id, update)
    config = await stored_config(ctx, instance_id)
    assert config["api_key"].startswith(PREFIX) and config["api_key"] != first
    assert ctx.registry.create("onestop", config).config.api_key.get_secret_value() == "second"


async def test_without_the_key_an_encrypted_secret_fails_with_a_clear_error(
    ctx: AppContext,
) -> None:
    config = await stored_config(ctx, await create(ctx, "s3cret-key"))
    with pytest.raises(SecretsUnavailable, match="IOC_SECRETS_KEY is not set"):
        ConnectorRegistry(ctx.registry.classes).create("onestop", config)


def test_keys_rotate_the_first_encrypts_and_any_decrypts() -> None:
    old, new = new_key(), new_key()
    sealed_with_old = SecretBox(old).seal("s3cret")
    rotated = SecretBox(f"{new},{old}")
    assert rotated.open(sealed_with_old) == "s3cret"
    assert SecretBox(new).open(rotated.seal("s3cret")) == "s3cret"
    with pytest.raises(SecretsUnavailable, match="another IOC_SECRETS_KEY"):
        SecretBox(new_key()).open(sealed_with_old)


def test_a_secret_stored_in_clear_before_a_key_was_set_still_opens() -> None:
    assert SecretBox(KEY).open("plain-old-secret") == "plain-old-secret"


def test_a_malformed_key_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ValueError, match="ioc secrets-key"):
        SecretBox("not-a-key")
