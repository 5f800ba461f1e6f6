"""Connector instances: seeding from TOML, listing with health."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.ingest.models import ConnectorInstance
from ioc.ingest.registry import ConnectorRegistry
from ioc.ingest.schemas import ConnectorInstanceRead, ConnectorInstanceSeed
from ioc.sdk import describe_validation_error


class InvalidSeedFile(ValueError):
    """The connectors TOML file cannot be used; the message says where and why."""


def read_seed_file(path: Path, registry: ConnectorRegistry) -> list[ConnectorInstanceSeed]:
    """Parse and validate `[[connector]]` entries, each config against its connector's schema."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidSeedFile(f"{path}: {exc}") from exc
    seeds = []
    for index, entry in enumerate(data.get("connector", []), start=1):
        try:
            seed = ConnectorInstanceSeed.model_validate(entry)
            registry.get(seed.kind).Config.model_validate(seed.config)
        except (ValidationError, LookupError) as exc:
            reason = describe_validation_error(exc) if isinstance(exc, ValidationError) else exc
            raise InvalidSeedFile(f"{path}: connector #{index}: {reason}") from exc
        seeds.append(seed)
    return seeds


async def upsert_instance(
    session: AsyncSession, seed: ConnectorInstanceSeed, *, now: datetime
) -> ConnectorInstance:
    """Create the named instance or update its kind, config, interval and enabled flag.

    The cursor and health of an existing instance are kept, so restarts resume where they were.
    """
    instance = await session.scalar(
        select(ConnectorInstance).where(ConnectorInstance.name == seed.name)
    )
    if instance is None:
        instance = ConnectorInstance(
            name=seed.name, cursor={}, health="ok", consecutive_failures=0, created_at=now
        )
        session.add(instance)
    instance.kind = seed.kind
    instance.config = seed.config
    instance.interval_seconds = seed.interval_seconds
    instance.enabled = seed.enabled
    if not seed.enabled:
        instance.health = "disabled"
    await session.flush()
    return instance


async def list_instances(session: AsyncSession) -> Sequence[ConnectorInstance]:
    """Every instance, by name."""
    return (await session.scalars(select(ConnectorInstance).order_by(ConnectorInstance.name))).all()


STALE_AFTER_INTERVALS = 3


def is_stale(instance: ConnectorInstance, *, now: datetime) -> bool:
    """No successful poll within the last few intervals (operational, real time)."""
    if instance.last_success_at is None:
        return True
    age = (now - instance.last_success_at).total_seconds()
    return age > STALE_AFTER_INTERVALS * instance.interval_seconds


def to_read(
    instance: ConnectorInstance, registry: ConnectorRegistry, *, now: datetime
) -> ConnectorInstanceRead:
    """An instance as presented (config withheld: it may hold secrets)."""
    cls = registry.classes.get(instance.kind)
    return ConnectorInstanceRead(
        id=instance.id,
        name=instance.name,
        kind=instance.kind,
        title=(cls.title if cls is not None and cls.title else instance.kind),
        enabled=instance.enabled,
        interval_seconds=instance.interval_seconds,
        health=instance.health,
        last_success_at=instance.last_success_at,
        last_error=instance.last_error,
        last_error_at=instance.last_error_at,
        consecutive_failures=instance.consecutive_failures,
        stale=instance.enabled and is_stale(instance, now=now),
        cursor=instance.cursor,
    )
