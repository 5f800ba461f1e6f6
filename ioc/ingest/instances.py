"""Connector instances: create, update, seed from TOML, read with health; secrets write-only."""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.auth.secrets import SecretsUnavailable, open_config, seal_config
from ioc.db import unique_or
from ioc.ingest.models import ConnectorInstance, PollRun
from ioc.ingest.registry import ConnectorRegistry
from ioc.ingest.schemas import (
    SECRET_MASK,
    ConnectorInstanceCreate,
    ConnectorInstanceRead,
    ConnectorInstanceUpdate,
    ConnectorKindRead,
)
from ioc.sdk import Connector, describe_validation_error

STALE_AFTER_INTERVALS = 3
DISABLED = "disabled"


class InvalidSeedFile(ValueError):
    """The connectors TOML file cannot be used; the message says where and why."""


class InvalidInstance(ValueError):
    """An instance definition that cannot be used: unknown kind, bad config, taken name."""


class InstanceNotFound(LookupError):
    """No connector instance with this id."""


def read_seed_file(path: Path, registry: ConnectorRegistry) -> list[ConnectorInstanceCreate]:
    """Parse and validate `[[connector]]` entries, each config against its connector's schema."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidSeedFile(f"{path}: {exc}") from exc
    seeds = []
    for index, entry in enumerate(data.get("connector", []), start=1):
        try:
            seed = ConnectorInstanceCreate.model_validate(entry)
            validate_config(registry, seed.kind, seed.config)
        except (ValidationError, InvalidInstance) as exc:
            reason = describe_validation_error(exc) if isinstance(exc, ValidationError) else exc
            raise InvalidSeedFile(f"{path}: connector #{index}: {reason}") from exc
        seeds.append(seed)
    return seeds


def validate_config(registry: ConnectorRegistry, kind: str, config: dict[str, Any]) -> None:
    """Check a config against the connector's schema, or raise `InvalidInstance` saying why."""
    try:
        cls = registry.get(kind)
    except LookupError as exc:
        raise InvalidInstance(str(exc)) from None
    try:
        cls.Config.model_validate(config)
    except ValidationError as exc:
        raise InvalidInstance(f"config: {describe_validation_error(exc)}") from None


def secret_fields(config_model: type[BaseModel]) -> list[str]:
    """Config keys that hold secrets (typed SecretStr): written, never read back."""
    return [
        name
        for name, field in config_model.model_fields.items()
        if SecretStr in (field.annotation, *typing.get_args(field.annotation))
    ]


def sealed(registry: ConnectorRegistry, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The config as stored: secret fields encrypted when IOC_SECRETS_KEY is set."""
    cls = registry.classes.get(kind)
    secrets = secret_fields(cls.Config) if cls is not None else []
    return seal_config(registry.secret_box, config, secrets)


async def upsert_instance(
    session: AsyncSession,
    seed: ConnectorInstanceCreate,
    *,
    now: datetime,
    registry: ConnectorRegistry | None = None,
) -> ConnectorInstance:
    """Create the named instance or update it from a seed (the TOML file's re-read at start).

    The cursor and health of an existing instance are kept, so restarts resume where they were.
    With a registry, secrets are stored as it seals them.
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
    instance.config = sealed(registry, seed.kind, seed.config) if registry else seed.config
    instance.interval_seconds = seed.interval_seconds
    instance.timeout_seconds = seed.timeout_seconds
    instance.max_backoff_seconds = seed.max_backoff_seconds
    _set_enabled(instance, seed.enabled)
    await session.flush()
    return instance


async def create_instance(
    session: AsyncSession,
    registry: ConnectorRegistry,
    data: ConnectorInstanceCreate,
    *,
    now: datetime,
) -> ConnectorInstance:
    """A new instance, its config validated against its connector's schema."""
    validate_config(registry, data.kind, data.config)
    taken = _name_taken(data.name)
    if await _by_name(session, data.name) is not None:
        raise taken
    with unique_or(taken):
        return await upsert_instance(session, data, now=now, registry=registry)


async def update_instance(
    session: AsyncSession,
    registry: ConnectorRegistry,
    instance_id: int,
    data: ConnectorInstanceUpdate,
) -> ConnectorInstance:
    """Apply a partial update; secrets not sent (or sent as the mask) keep their value."""
    instance = await get_instance(session, instance_id)
    changes = data.model_dump(exclude_unset=True)
    if "config" in changes and changes["config"] is not None:
        config = _merge_secrets(registry, instance, changes["config"])
        try:
            validate_config(registry, instance.kind, open_config(registry.secret_box, config))
        except SecretsUnavailable as exc:
            raise InvalidInstance(f"config: {exc}; send the secrets again") from None
        instance.config = sealed(registry, instance.kind, config)
    if changes.get("name") not in (None, instance.name):
        if await _by_name(session, changes["name"]) is not None:
            raise _name_taken(changes["name"])
        instance.name = changes["name"]
    for key in ("interval_seconds", "timeout_seconds", "max_backoff_seconds"):
        if changes.get(key) is not None:
            setattr(instance, key, changes[key])
    if changes.get("enabled") is not None:
        _set_enabled(instance, changes["enabled"])
    with unique_or(_name_taken(instance.name)):
        await session.flush()
    return instance


async def get_instance(session: AsyncSession, instance_id: int) -> ConnectorInstance:
    """The instance with this id, or `InstanceNotFound`."""
    instance = await session.get(ConnectorInstance, instance_id)
    if instance is None:
        raise InstanceNotFound(f"no connector instance with id {instance_id}")
    return instance


async def list_instances(session: AsyncSession) -> Sequence[ConnectorInstance]:
    """Every instance, by name."""
    return (await session.scalars(select(ConnectorInstance).order_by(ConnectorInstance.name))).all()


async def recent_runs(session: AsyncSession, instance_id: int, *, limit: int) -> list[PollRun]:
    """The instance's last poll runs, newest first."""
    query = (
        select(PollRun)
        .where(PollRun.instance_id == instance_id)
        .order_by(PollRun.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


def is_stale(instance: ConnectorInstance, *, now: datetime) -> bool:
    """No successful poll within the last few intervals (operational, real time)."""
    if instance.last_success_at is None:
        return True
    age = (now - instance.last_success_at).total_seconds()
    return age > STALE_AFTER_INTERVALS * instance.interval_seconds


def to_read(
    instance: ConnectorInstance, registry: ConnectorRegistry, *, now: datetime
) -> ConnectorInstanceRead:
    """An instance as presented, its secrets masked."""
    cls = registry.classes.get(instance.kind)
    return ConnectorInstanceRead(
        id=instance.id,
        name=instance.name,
        kind=instance.kind,
        title=(cls.title if cls is not None and cls.title else instance.kind),
        enabled=instance.enabled,
        interval_seconds=instance.interval_seconds,
        timeout_seconds=instance.timeout_seconds,
        max_backoff_seconds=instance.max_backoff_seconds,
        config=public_config(instance.config, cls),
        health=instance.health,
        last_success_at=instance.last_success_at,
        last_error=instance.last_error,
        last_error_at=instance.last_error_at,
        consecutive_failures=instance.consecutive_failures,
        next_attempt_at=instance.next_attempt_at,
        stale=instance.enabled and is_stale(instance, now=now),
        cursor=instance.cursor,
    )


def public_config(config: dict[str, Any], cls: type[Connector] | None) -> dict[str, Any]:
    """The config with secret values replaced by the mask (all values, if the kind is unknown)."""
    if cls is None:
        return dict.fromkeys(config, SECRET_MASK)
    secrets = set(secret_fields(cls.Config))
    return {k: (SECRET_MASK if k in secrets and v is not None else v) for k, v in config.items()}


def kind_read(cls: type[Connector]) -> ConnectorKindRead:
    """An installed connector kind with its config schema."""
    return ConnectorKindRead(
        kind=cls.kind,
        title=cls.title or cls.kind,
        record_types=[r.record_type for r in cls.record_types],
        config_schema=cls.Config.model_json_schema(),
        secret_fields=secret_fields(cls.Config),
    )


def _merge_secrets(
    registry: ConnectorRegistry, instance: ConnectorInstance, config: dict[str, Any]
) -> dict[str, Any]:
    cls = registry.classes.get(instance.kind)
    secrets = secret_fields(cls.Config) if cls is not None else []
    merged = dict(config)
    for name in secrets:
        if merged.get(name, SECRET_MASK) == SECRET_MASK and name in instance.config:
            merged[name] = instance.config[name]
    return merged


def _set_enabled(instance: ConnectorInstance, enabled: bool) -> None:
    instance.enabled = enabled
    if not enabled:
        instance.health = DISABLED
    elif instance.health == DISABLED:
        instance.health = "ok"
        instance.next_attempt_at = None


def _name_taken(name: str) -> InvalidInstance:
    return InvalidInstance(f"a connector instance named {name!r} already exists")


async def _by_name(session: AsyncSession, name: str) -> ConnectorInstance | None:
    return await session.scalar(select(ConnectorInstance).where(ConnectorInstance.name == name))
