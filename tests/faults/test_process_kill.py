"""`ioc serve` killed with SIGKILL in the middle of an ingest transaction: after a restart the
cursor and the stored data agree, and the upstream's dossiers are all stored, each once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import asyncpg
from sqlalchemy import select

from ioc.config import Settings
from ioc.context import build_context
from ioc.ingest.models import ConnectorInstance
from ioc.records.models import DossierRow
from tests.faults.conftest import eventually, seed_file
from tests.support.upstream import Upstream, running_upstream

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(database_url: str, seed: Path) -> subprocess.Popen[bytes]:
    """`ioc serve` in its own process, polling the seeded connector every second."""
    env = {
        **os.environ,
        "IOC_DATABASE_URL": database_url,
        "IOC_CONNECTORS_FILE": str(seed),
        "IOC_PORT": str(free_port()),
        "IOC_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ioc", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def kill_inside_a_transaction(process: subprocess.Popen[bytes], database_url: str) -> bool:
    """SIGKILL the process while one of its sessions has a transaction open and some, not all,
    dossiers are stored; returns whether a transaction was seen open at the kill."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    probe = await asyncpg.connect(dsn)
    try:
        for _ in range(3000):
            open_transaction = await probe.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
                "AND query ILIKE '%dossiers%'"
            )
            stored = await probe.fetchval("SELECT count(*) FROM dossiers")
            if open_transaction and stored > 0:
                process.send_signal(signal.SIGKILL)
                process.wait(5)
                return True
            await asyncio.sleep(0.002)
        return False
    finally:
        await probe.close()


async def test_a_process_killed_mid_batch_resumes_with_cursor_and_data_agreeing(
    postgres_url: str, tmp_path: Path
) -> None:
    async for upstream in running_upstream():
        seed = seed_file(tmp_path, ("onestop-dn", upstream.url))
        seed.write_text(seed.read_text().replace("page_size = 50", "page_size = 100"))
        ctx = build_context(Settings(database_url=postgres_url, scheduler_enabled=False))
        first = serve(postgres_url, seed)
        try:
            assert await kill_inside_a_transaction(first, postgres_url), "never saw a batch open"
            assert first.returncode == -signal.SIGKILL
            stored, cursor = await _stored_and_cursor(ctx)
            covered = _covered_by(upstream, cursor)
            assert 0 < len(stored) < upstream.visible(), "killed in the middle of the poll"
            assert stored == covered, "the cursor and the stored dossiers disagree"

            second = serve(postgres_url, seed)
            try:
                await eventually(lambda c=ctx, u=upstream: _all_stored(c, u), within=60)
            finally:
                second.terminate()
                second.wait(10)
            async with ctx.sessionmaker() as session:
                rows = (await session.scalars(select(DossierRow.external_id))).all()
        finally:
            if first.poll() is None:
                first.kill()
            await ctx.engine.dispose()
    truth = {d["MaHoSo"] for d in upstream.simulator.dossiers_as_of(upstream.simulator.now())}
    assert len(rows) == len(set(rows)) == len(truth), "no duplicates, no gaps"
    assert set(rows) == truth


async def _stored_and_cursor(ctx) -> tuple[set[str], dict]:
    async with ctx.sessionmaker() as session:
        stored = set((await session.scalars(select(DossierRow.external_id))).all())
        instance = await session.scalar(select(ConnectorInstance))
        assert instance is not None
        return stored, instance.cursor


def _covered_by(upstream: Upstream, cursor: dict) -> set[str]:
    """The upstream's dossiers at or before the cursor's keyset position."""
    if not cursor:
        return set()
    position = (datetime.fromisoformat(cursor["updated_after"]), cursor["after_id"])
    pairs = upstream.simulator.page(upstream.simulator.now(), None, limit=10**9)
    return {record["MaHoSo"] for key, record in pairs if key <= position}


async def _all_stored(ctx, upstream: Upstream) -> bool:
    stored, _ = await _stored_and_cursor(ctx)
    return len(stored) == upstream.visible()
