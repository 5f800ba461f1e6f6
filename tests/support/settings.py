"""Settings shared by tests that build their own service."""

from __future__ import annotations

from typing import Any

OPEN_ACCESS: dict[str, Any] = {"environment": "development", "auth_disabled": True}
"""No tokens: for tests about other domains (tests/auth checks every route's gate)."""
