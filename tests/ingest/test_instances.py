"""Connector discovery through entry points and instance seeding from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.onestop.connector import OnestopConnector
from ioc.context import AppContext
from ioc.ingest.instances import InvalidSeedFile, read_seed_file, upsert_instance
from ioc.ingest.models import ConnectorInstance
from ioc.ingest.registry import ConnectorRegistry, UnknownConnectorKind
from ioc.kit.clock import utcnow

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
