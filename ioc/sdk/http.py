"""Helpers that make an HTTP connector mostly declarations: config, client, error mapping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
from pydantic import Field, SecretStr, field_validator

from ioc.sdk.connector import Connector
from ioc.sdk.errors import (
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorUnavailable,
)

MAX_ERROR_BODY = 300


class HttpConfig(Connector.Config):
    """Configuration shared by HTTP connectors."""

    base_url: str = Field(description="Root URL of the upstream API, http:// or https://")
    timeout_seconds: float = Field(default=10, gt=0, le=300)
    api_key: SecretStr | None = Field(default=None, description="Secret: never returned")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value


class HttpConnector(Connector):
    """A connector that reads JSON over HTTP; subclasses implement `poll` with `get_json`."""

    Config = HttpConfig
    config: HttpConfig

    def __init__(self, config: HttpConfig, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config, clock=clock)
        self._client: httpx.AsyncClient | None = None

    def headers(self) -> dict[str, str]:
        """Request headers; by default a bearer token when an api_key is configured."""
        if self.config.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}

    @property
    def client(self) -> httpx.AsyncClient:
        """One client per connector instance, created on first use."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.config.timeout_seconds, headers=self.headers()
            )
        return self._client

    async def get_json(self, path_or_url: str, params: dict[str, Any] | None = None) -> Any:
        """GET a JSON document; upstream faults become typed connector errors."""
        url = path_or_url if "://" in path_or_url else f"{self.config.base_url}{path_or_url}"
        try:
            response = await self.client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise ConnectorUnavailable(f"timed out after {self.config.timeout_seconds}s") from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise_for_upstream(response)
        return decode_json(response)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def decode_json(response: httpx.Response) -> Any:
    """The JSON body of an answer: orjson (several times faster on large pages) for UTF-8
    bodies, else what the standard library accepts (other encodings, NaN); invalid JSON is a
    `ConnectorError`."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        pass
    try:
        return response.json()
    except ValueError as exc:
        raise ConnectorError(f"upstream answered with invalid JSON: {exc}") from exc


def raise_for_upstream(response: httpx.Response) -> None:
    """Map an HTTP error status to the connector error the runtime understands."""
    status = response.status_code
    if status < 400:
        return
    body = response.text[:MAX_ERROR_BODY]
    if status in (401, 403):
        raise ConnectorAuthError(f"HTTP {status}: credentials refused")
    if status == 429:
        raise ConnectorRateLimited(
            f"HTTP 429: {body}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise ConnectorUnavailable(f"HTTP {status}: {body}")
    raise ConnectorError(f"HTTP {status}: {body}")


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
