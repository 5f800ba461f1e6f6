"""Typed errors a connector raises; the runtime maps each to a health state and a retry."""

from __future__ import annotations


class ConnectorError(Exception):
    """An upstream answered in a way the connector cannot use (a 4xx, a malformed page)."""


class ConnectorUnavailable(ConnectorError):
    """The upstream could not be reached, timed out or answered with a server error."""


class ConnectorAuthError(ConnectorError):
    """The upstream refused our credentials."""


class ConnectorRateLimited(ConnectorError):
    """The upstream asked us to slow down; `retry_after` is in seconds when it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RecordRejected(Exception):
    """One upstream record cannot be mapped; raised by a mapping function with the reason."""
