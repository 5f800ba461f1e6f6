"""The education connector passes the integrators' contract kit in each of its three modes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from connectors.education.connector import EducationConnector
from connectors.education.simulator import Simulator, create_app
from ioc.testing import ConnectorContract
from tests.connectors.education.support import START

API_KEY = "education-contract-key"
SMALL: dict[str, Any] = {"seed": 5, "history_days": 2, "start": START, "speed": 0}


@pytest.fixture(scope="module")
def education_url() -> Iterator[str]:
    """A frozen simulator with two days of history and an API key, shared by the module's
    read-only tests: served from a thread, so it outlives each test's event loop."""
    app = create_app(**SMALL, api_key=API_KEY)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="education-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "simulator did not start"
        time.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


class TestEducationApiContract(ConnectorContract):
    """JSON API mode."""

    connector_class = EducationConnector

    @pytest.fixture
    def config(self, education_url: str) -> dict[str, Any]:
        return {"source": "api", "base_url": education_url, "page_size": 300, "api_key": API_KEY}

    @pytest.fixture
    def auth_failing_config(self, education_url: str) -> dict[str, Any]:
        return {"source": "api", "base_url": education_url, "api_key": "not-the-key"}


class TestEducationCsvUrlContract(ConnectorContract):
    """CSV exports listed at a URL."""

    connector_class = EducationConnector

    @pytest.fixture
    def config(self, education_url: str) -> dict[str, Any]:
        return {"source": "csv", "csv_url": f"{education_url}/exports", "api_key": API_KEY}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"source": "csv", "csv_url": "http://127.0.0.1:9/exports", "timeout_seconds": 2}

    @pytest.fixture
    def auth_failing_config(self, education_url: str) -> dict[str, Any]:
        return {"source": "csv", "csv_url": f"{education_url}/exports", "api_key": "wrong"}


class TestEducationCsvFolderContract(ConnectorContract):
    """CSV exports dropped in a folder."""

    connector_class = EducationConnector

    @pytest.fixture
    def config(self, tmp_path: Path) -> dict[str, Any]:
        simulator = Simulator(**SMALL)
        for export in simulator.exports(simulator.now()):
            (tmp_path / export.name).write_bytes(export.content)
        return {"source": "csv", "csv_folder": str(tmp_path)}

    @pytest.fixture
    def unreachable_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"source": "csv", "csv_folder": str(tmp_path / "unmounted")}
