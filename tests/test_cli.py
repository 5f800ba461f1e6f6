"""The `ioc` command as a user runs it: migrate a database, run a simulator."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx


def ioc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ioc", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_migrate_creates_the_schema_in_the_configured_database(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    result = ioc("migrate", env={"IOC_DATABASE_URL": f"sqlite+aiosqlite:///{path}"})
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        units = db.execute("select count(*) from admin_units").fetchone()[0]
    assert {"dossiers", "kpi_values", "connector_instances"} <= tables
    assert units == 96, "Đồng Nai and its 95 communes"


def test_simulate_serves_the_onestop_upstream_on_the_given_port() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ioc", "simulate", "onestop", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/v1/dossiers?limit=5")
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert len(response.json()["items"]) == 5
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_simulate_an_unknown_kind_fails_with_the_available_ones() -> None:
    result = ioc("simulate", "weather")
    assert result.returncode != 0
    assert "available:" in result.stderr and "onestop" in result.stderr


def test_connectors_add_list_test_and_run_against_a_live_simulator(tmp_path: Path) -> None:
    env = {"IOC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    assert ioc("migrate", env=env).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ioc", "simulate", "onestop", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", process)
        refused = ioc(
            "connectors", "add", "bad", "onestop", "--config", '{"base_url": "x"}', env=env
        )
        assert refused.returncode == 2 and "base_url" in refused.stderr
        config = f'{{"base_url": "http://127.0.0.1:{port}", "api_key": "s3cret"}}'
        added = ioc("connectors", "add", "motcua", "onestop", "--config", config, env=env)
        assert added.returncode == 0, added.stderr
        assert ioc("connectors", "test", "motcua", env=env).stdout.startswith("ok")
        ran = ioc("connectors", "run", "motcua", env=env)
        assert ran.returncode == 0 and ran.stdout.startswith("ok:"), ran.stdout + ran.stderr
        assert "rejected 0" in ran.stdout and "stored 0" not in ran.stdout
        listed = ioc("connectors", "list", env=env)
        assert "motcua" in listed.stdout and "onestop" in listed.stdout and " ok " in listed.stdout
        assert "s3cret" not in listed.stdout + ran.stdout + ran.stderr
        missing = ioc("connectors", "run", "nope", env=env)
        assert missing.returncode == 2 and "no connector instance 'nope'" in missing.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url).raise_for_status()
            return
        except httpx.TransportError:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)


def test_kpi_rebuild_recomputes_every_cell_from_the_records(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    env = {"IOC_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    assert ioc("migrate", env=env).returncode == 0
    with sqlite3.connect(db) as connection:  # a stale cell that no record supports
        connection.execute(
            "insert into kpi_values values ('onestop.backlog', '26068', 'day', '2026-11-02',"
            " 7, null, 7, '2026-11-02 00:00:00')"
        )
    rebuilt = ioc("kpi", "rebuild", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("rebuilt 0 KPI cells")
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from kpi_values").fetchone()[0] == 0
