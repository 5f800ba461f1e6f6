"""Headless Chromium from the system (Debian's `chromium`) driven by Playwright."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("CI") == "true" or os.environ.get("IOC_REQUIRE_POSTGRES") == "1"


def chromium_path() -> str:
    """The system Chromium; skipped locally, a failure in CI, when it is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if path is None:
        missing = "chromium is not installed (apt-get install -y chromium; `make test` does it)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing is not None:
        if REQUIRE_BROWSER:
            pytest.fail(missing + " (CI requires the browser test)", pytrace=False)
        pytest.skip(missing)
    assert path is not None
    return path
