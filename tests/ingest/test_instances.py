"""Connector discovery through entry points and instance seeding from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.onestop.connector import OnestopConnector
from ioc.context import AppContext
from ioc.ingest.instances import (
    InvalidInstance,
    InvalidSeedFile,
    create_instance,
    read_seed_file,
    update_instance,
    upsert_instance,
)
from ioc.ingest.models import ConnectorInstance
from ioc.ingest.registry import ConnectorRegistry, UnknownConnectorKind
from ioc.ingest.schemas import ConnectorInstanceCreate, ConnectorInstanceUpdate
from ioc.kit.clock import utcnow
from tests.support.races import lose_the_race

SEED = """
[[connector]]
name = "onestop-a"
kind = "onestop"
interval_seconds = 15
[connector.config]
base_url = "http://127.0.0.1:8101"
"""


def test_builtin_connectors_are_found_through_the_entry_point_group() -> None:
    assert ConnectorRegistry().get("onestop") is OnestopConnector


def test_unknown_kind_names_the_installed_ones() -> None:
    with pytest.raises(UnknownConnectorKind, match=r"installed: .*onestop"):
        ConnectorRegistry().get("weather")


def test_seed_file_with_an_invalid_config_is_refused_with_where_and_why(tmp_path: Path) -> None:
    path = tmp_path / "connectors.toml"
    path.write_text(SEED.replace("http://127.0.0.1:8101", "ftp://nowhere"))
    with pytest.raises(InvalidSeedFile, match=r"connector #1: .*base_url"):
        read_seed_file(path, ConnectorRegistry())


async def test_reseeding_updates_config_and_keeps_cursor_and_health(
    ctx: AppContext, tmp_path: Path
) -> None:
    path = tmp_path / "connectors.toml"
    path.write_text(SEED)
    (seed,) = read_seed_file(path, ctx.registry)
    async with ctx.sessionmaker() as session, session.begin():
        instance = await upsert_instance(session, seed, now=utcnow())
        instance.cursor = {"after_id": "X"}
    path.write_text(SEED.replace("interval_seconds = 15", "interval_seconds = 30"))
    (changed,) = read_seed_file(path, ctx.registry)
    async with ctx.sessionmaker() as session, session.begin():
        await upsert_instance(session, changed, now=utcnow())
    async with ctx.sessionmaker() as session:
        (stored,) = (await session.scalars(select(ConnectorInstance))).all()
    assert (stored.interval_seconds, stored.cursor, stored.health) == (30, {"after_id": "X"}, "ok")


def onestop(name: str) -> ConnectorInstanceCreate:
    return ConnectorInstanceCreate(
        name=name, kind="onestop", config={"base_url": "http://127.0.0.1:8101"}
    )


async def test_an_instance_created_under_a_name_taken_meanwhile_is_refused_as_invalid(
    ctx: AppContext,
) -> None:
    async def create(session: AsyncSession) -> None:
        await create_instance(session, ctx.registry, onestop("onestop-a"), now=utcnow())

    lost = await lose_the_race(ctx, take=create, attempt=create)

    assert isinstance(lost, InvalidInstance)
    assert "'onestop-a' already exists" in str(lost)
    async with ctx.sessionmaker() as session:
        count = select(func.count()).where(ConnectorInstance.name == "onestop-a")
        assert await session.scalar(count) == 1


async def test_an_instance_renamed_to_a_name_taken_meanwhile_is_refused_as_invalid(
    ctx: AppContext,
) -> None:
    async with ctx.sessionmaker() as session, session.begin():
        renamed = await create_instance(session, ctx.registry, onestop("old"), now=utcnow())

    async def create(session: AsyncSession) -> None:
        await create_instance(session, ctx.registry, onestop("new"), now=utcnow())

    async def rename(session: AsyncSession) -> None:
        await update_instance(
            session, ctx.registry, renamed.id, ConnectorInstanceUpdate(name="new")
        )

    lost = await lose_the_race(ctx, take=create, attempt=rename)

    assert isinstance(lost, InvalidInstance)
    assert "'new' already exists" in str(lost)
