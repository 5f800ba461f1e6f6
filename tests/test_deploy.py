"""docker-compose.yml and the Dockerfile, checked by reading (no Docker engine runs here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from ioc.cli import _simulators
from ioc.config import Settings
from ioc.ingest.instances import read_seed_file
from ioc.ingest.registry import ConnectorRegistry

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_wires_postgres_the_service_and_the_simulator() -> None:
    services = compose()["services"]
    assert {"postgres", "ioc", "onestop-sim"} <= set(services)
    ioc = services["ioc"]
    assert ioc["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = ioc["environment"]["IOC_DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in url
    assert "8000:8000" in ioc["ports"]


def test_compose_sets_only_settings_the_service_knows() -> None:
    known = {f"IOC_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose()["services"].items():
        unknown = {k for k in service.get("environment", {}) if k.startswith("IOC_")} - known
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_compose_simulator_kind_exists_and_the_seed_file_points_at_it() -> None:
    service = compose()["services"]["onestop-sim"]
    command = service["command"]
    assert command[:2] == ["ioc", "simulate"] and command[2] in _simulators()
    port = command[command.index("--port") + 1]
    seeds = read_seed_file(ROOT / "deploy" / "connectors.toml", ConnectorRegistry())
    assert [s.config["base_url"] for s in seeds] == [f"http://onestop-sim:{port}"]


def test_dockerfile_migrates_then_serves_from_the_project_directory() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile
    assert 'CMD ["sh", "-c", "ioc migrate && exec ioc serve"]' in dockerfile
    assert "/healthz" in dockerfile
    # `ioc migrate` finds alembic.ini in the working directory: it must be copied in.
    assert "COPY . ." in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "alembic" not in ignored and "alembic.ini" not in ignored


def test_demo_seed_file_is_valid() -> None:
    seeds = read_seed_file(ROOT / "demo" / "connectors.toml", ConnectorRegistry())
    assert [s.kind for s in seeds] == ["onestop"]
    assert tomllib.loads((ROOT / "demo" / "connectors.toml").read_text())
