"""A third-party connector package is a peer of the built-ins: installed outside this repository,
it is discovered through the `ioc.connectors` entry points, polled by the runtime and passes the
same contract kit."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(__file__).parent / "ioc-example-plugin"
REPOSITORY = Path(__file__).resolve().parents[2]
DOCUMENT = PLUGIN / "tests" / "indices.json"

# Run in a separate interpreter that sees the plugin only through PYTHONPATH=<site>.
RUNTIME_SCRIPT = r"""
import asyncio, dataclasses, json, sys, threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import distribution, entry_points
from pathlib import Path

document, database = Path(sys.argv[1]).read_bytes(), sys.argv[2]


class Portal(BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = (200, document) if self.path == "/indices.json" else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


from sqlalchemy import func, inspect, select, text

import ioc_example_plugin
from ioc.config import Settings
from ioc.context import build_context
from ioc.ingest.instances import upsert_instance
from ioc.ingest.models import ConnectorInstance
from ioc.ingest.schemas import ConnectorInstanceSeed
from ioc.migrations import upgrade
from ioc.scheduler.runner import poll_instance
from ioc.units.service import sync_units

url = f"sqlite+aiosqlite:///{database}"
upgrade(url)


async def main(portal):
    ctx = build_context(Settings(database_url=url, province=75, scheduler_enabled=False))
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await sync_units(session, 75)
            seed = ConnectorInstanceSeed(
                name="chi-so-quan-tri", kind="parindex", config={"base_url": portal}
            )
            instance = await upsert_instance(session, seed, now=datetime.now(UTC))
            instance_id = instance.id
        outcome = await poll_instance(ctx, instance_id)
        async with ctx.sessionmaker() as session:
            stored = await session.get(ConnectorInstance, instance_id)
            tables = await session.run_sync(lambda s: inspect(s.connection()).get_table_names())
            observations = None
            if "observations" in tables:
                observations = await session.scalar(text("SELECT count(*) FROM observations"))
            reasons = (await session.execute(text(
                "SELECT reason, count(*) FROM rejected_records GROUP BY reason"
            ))).all()
        kinds = {kind: cls.__module__ for kind, cls in ctx.registry.classes.items()}
        return {
            "kinds": kinds,
            "broken": ctx.registry.broken,
            "outcome": dataclasses.asdict(outcome),
            "health": stored.health,
            "cursor": stored.cursor,
            "observations": observations,
            "rejected_reasons": {reason: count for reason, count in reasons},
        }
    finally:
        await ctx.engine.dispose()


server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
try:
    facts = asyncio.run(main(f"http://127.0.0.1:{server.server_address[1]}"))
finally:
    server.shutdown()
entry = next(e for e in entry_points(group="ioc.connectors") if e.name == "parindex")
facts["plugin"] = {
    "module_file": ioc_example_plugin.__file__,
    "entry_point": entry.value,
    "distribution": entry.dist.name,
    "dist_location": str(distribution("ioc-example-plugin").locate_file("")),
}
print("FACTS " + json.dumps(facts, default=str))
"""


def run(command: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run a command; fail the test with its output when it fails."""
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command[:4])} … failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin built by hatchling and installed into a directory of its own."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.fail("hatchling is missing: it comes with the dev extra (pip install -e '.[dev]')")
    target = tmp_path_factory.mktemp("plugin") / "site"
    run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
            str(PLUGIN),
        ],
        env=dict(os.environ),
        cwd=target.parent,
        timeout=120,
    )  # fmt: skip
    return target


def plugin_env(site: Path) -> dict[str, str]:
    """This interpreter's environment with the plugin's site directory on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env["PYTHONPATH"] = str(site)
    return env


@pytest.fixture(scope="module")
def facts(site: Path) -> dict[str, Any]:
    """What the runtime, in a separate interpreter, saw and did with the installed plugin."""
    script = site.parent / "runtime_probe.py"
    script.write_text(RUNTIME_SCRIPT, encoding="utf-8")
    database = site.parent / "ioc.db"
    output = run(
        [sys.executable, str(script), str(DOCUMENT), str(database)],
        env=plugin_env(site),
        cwd=site.parent,
        timeout=60,
    )
    line = next(line for line in output.splitlines() if line.startswith("FACTS "))
    return json.loads(line.removeprefix("FACTS "))


def test_plugin_is_installed_outside_this_repository(facts: dict[str, Any], site: Path) -> None:
    plugin = facts["plugin"]

    assert plugin["distribution"] == "ioc-example-plugin"
    assert plugin["entry_point"] == "ioc_example_plugin.connector:ParIndexConnector"
    for where in (plugin["module_file"], plugin["dist_location"]):
        assert Path(where).resolve().is_relative_to(site.resolve())
        assert not Path(where).resolve().is_relative_to(REPOSITORY)


def test_registry_lists_the_plugin_next_to_the_built_ins(facts: dict[str, Any]) -> None:
    assert facts["kinds"]["parindex"] == "ioc_example_plugin.connector"
    assert facts["kinds"]["onestop"] == "connectors.onestop.connector"
    assert "parindex" not in facts["broken"]


def test_runtime_polls_the_plugin_to_the_end_and_advances_its_cursor(
    facts: dict[str, Any],
) -> None:
    entries = json.loads(DOCUMENT.read_text(encoding="utf-8"))["indices"]
    outcome = facts["outcome"]

    assert (outcome["ok"], outcome["error"], outcome["pages"]) == (True, None, 1)
    assert outcome["fetched"] == len(entries)
    assert outcome["stored"] + outcome["rejected"] == len(entries)
    assert facts["cursor"] == {
        "published_after": "2025-05-20T01:30:00+00:00",
        "after_id": "PCI-2024",
    }


def test_plugin_observations_are_stored(facts: dict[str, Any]) -> None:
    entries = json.loads(DOCUMENT.read_text(encoding="utf-8"))["indices"]
    if facts["observations"] is None:
        # Until the `observations` table lands, the ingest keeps them as rejects with a reason.
        assert sum(facts["rejected_reasons"].values()) == len(entries)
        return
    assert facts["observations"] == len(entries)
    assert (facts["outcome"]["stored"], facts["outcome"]["rejected"]) == (len(entries), 0)
    assert facts["health"] == "ok"


def test_plugin_passes_the_contract_kit_in_its_own_test_suite(site: Path) -> None:
    output = run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-c", str(PLUGIN / "pyproject.toml"), "--rootdir", str(PLUGIN), str(PLUGIN / "tests"),
        ],
        env=plugin_env(site),
        cwd=PLUGIN,
        timeout=120,
    )  # fmt: skip

    assert " passed" in output and "failed" not in output and "skipped" not in output
