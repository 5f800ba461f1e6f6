"""docker-compose.yml and the Dockerfile, checked by reading (no Docker engine runs here)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from ioc.cli import _simulators, demo_ports
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


def test_compose_runs_a_simulator_per_seeded_connector_and_the_urls_match() -> None:
    services = compose()["services"]
    seeds = read_seed_file(ROOT / "deploy" / "connectors.toml", ConnectorRegistry())
    assert {s.kind for s in seeds} == {"onestop", "fhir", "open311", "education"}
    for seed in seeds:
        command = services[f"{seed.kind}-sim"]["command"]
        assert command[:3] == ["ioc", "simulate", seed.kind] and seed.kind in _simulators()
        port = command[command.index("--port") + 1]
        assert seed.config["base_url"] == f"http://{seed.kind}-sim:{port}"
        depends = services["ioc-worker"]["depends_on"]  # the worker polls them
        assert f"{seed.kind}-sim" in depends


def test_compose_polls_in_the_worker_and_serves_in_several_api_processes() -> None:
    services = compose()["services"]
    worker, api = services["ioc-worker"], services["ioc"]
    assert "exec ioc worker" in worker["command"][-1] and "ioc migrate" in worker["command"][-1]
    assert worker["environment"]["IOC_CONNECTORS_FILE"] == "/etc/ioc/connectors.toml"
    port = worker["environment"]["IOC_WORKER_PORT"]
    assert f"127.0.0.1:{port}/healthz" in worker["healthcheck"]["test"][-1]
    assert api["environment"]["IOC_SCHEDULER_ENABLED"] == "false"
    workers = Settings(
        workers=api["environment"]["IOC_WORKERS"].split(":-")[-1].rstrip("}")
    ).workers
    assert workers > 1
    assert api["environment"]["IOC_DATABASE_URL"] == worker["environment"]["IOC_DATABASE_URL"]


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
    assert [s.kind for s in seeds] == ["onestop", "fhir", "open311", "education"]
    ports = demo_ports({kind: None for kind in _simulators()}, first=8101)
    by_kind = dict(zip(_simulators(), ports, strict=True))
    assert {s.kind: s.config["base_url"] for s in seeds} == {
        kind: f"http://127.0.0.1:{by_kind[kind]}" for kind in by_kind
    }
    assert tomllib.loads((ROOT / "demo" / "connectors.toml").read_text())
