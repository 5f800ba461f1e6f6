"""Finds connector classes through the `ioc.connectors` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ioc.sdk import Connector

ENTRY_POINT_GROUP = "ioc.connectors"


class UnknownConnectorKind(LookupError):
    """No installed connector declares this kind."""


def discover() -> dict[str, type[Connector]]:
    """Every installed connector class by its `kind`, built-in and third-party alike."""
    found: dict[str, type[Connector]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"entry point {entry.name!r} does not name a Connector subclass")
        found[cls.kind] = cls
    return found


class ConnectorRegistry:
    """The connector classes this process can run."""

    def __init__(self, classes: dict[str, type[Connector]] | None = None) -> None:
        self.classes = discover() if classes is None else dict(classes)

    def get(self, kind: str) -> type[Connector]:
        """The class for `kind`, or `UnknownConnectorKind`."""
        try:
            return self.classes[kind]
        except KeyError:
            known = ", ".join(sorted(self.classes)) or "none"
            raise UnknownConnectorKind(
                f"no connector of kind {kind!r} is installed (installed: {known})"
            ) from None

    def create(self, kind: str, config: dict[str, Any]) -> Connector:
        """A connector of `kind` with its config validated against the connector's schema."""
        cls = self.get(kind)
        return cls(cls.Config.model_validate(config))
