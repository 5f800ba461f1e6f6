"""Finds connector classes through the `ioc.connectors` entry-point group."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

from ioc.auth.secrets import SecretBox, open_config
from ioc.sdk import Connector

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ioc.connectors"


class UnknownConnectorKind(LookupError):
    """No installed connector declares this kind."""


def discover(broken: dict[str, str] | None = None) -> dict[str, type[Connector]]:
    """Every installed connector class by its `kind`, built-in and third-party alike.

    A plugin that fails to load is logged and left out (its reason put in `broken`), so one
    broken package never stops the others.
    """
    found: dict[str, type[Connector]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, Connector)):
                raise TypeError(f"{entry.value} is not a Connector subclass")
        except Exception as exc:
            log.error("connector plugin %r cannot be loaded: %s", entry.name, exc)
            if broken is not None:
                broken[entry.name] = f"{type(exc).__name__}: {exc}"
            continue
        found[cls.kind] = cls
    return found


class ConnectorRegistry:
    """The connector classes this process can run."""

    def __init__(self, classes: dict[str, type[Connector]] | None = None) -> None:
        self.broken: dict[str, str] = {}
        self.classes = discover(self.broken) if classes is None else dict(classes)
        self.secret_box: SecretBox | None = None
        """Encrypts connector secrets at rest (IOC_SECRETS_KEY); None stores them in clear."""

    def get(self, kind: str) -> type[Connector]:
        """The class for `kind`, or `UnknownConnectorKind`."""
        try:
            return self.classes[kind]
        except KeyError:
            known = ", ".join(sorted(self.classes)) or "none"
            raise UnknownConnectorKind(
                f"no connector of kind {kind!r} is installed (installed: {known})"
            ) from None

    def create(
        self, kind: str, config: dict[str, Any], *, clock: Callable[[], datetime] | None = None
    ) -> Connector:
        """A connector of `kind` with its config validated against the connector's schema."""
        cls = self.get(kind)
        connector = cls(cls.Config.model_validate(open_config(self.secret_box, config)))
        if clock is not None:  # set after construction: plugins may override __init__
            connector.clock = clock
        return connector
