"""WebSocket fan-out when every client follows several topics that move together.

    python bench/ws_coalesce.py [--clients 1000] [--topics 3] [--turns 40] [--rate 2]

A wall follows a province's backlog and on-time rate and its commune's backlog; one ingest batch
moves all three, and the hub delivers them in one event-loop turn. This process serves the IOC
(`create_app`, SQLite, `/ws`); a client process (`bench/ws_client.py`) holds `--clients`
connections, each subscribed to `--topics` topics. Every turn publishes one update of each
topic, `--rate` turns a second. Two runs with the same clients: the hub as it is (the frames of
a turn written to each socket in one write, `ioc.live.frames.FrameBatch`) and with every frame
written at once (`HELD_BYTES = 0`). Measured: this process's CPU per frame delivered (user and
system: the kernel's `send` is the larger part), socket writes, and every frame's delivery
(publish → read by a client). Prints and writes bench/results/ws_coalesce.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import live_bench_settings, machine, percentile, write_results

TOPIC = "kpi:onestop.backlog:{}"


def topics_of(topics: int) -> list[str]:
    """The province's backlog, then communes'."""
    from ioc.units.service import province_rows

    communes = sorted(str(r["code"]) for r in province_rows(75) if r["level"] == "commune")
    return [TOPIC.format(code) for code in ["75", *communes][:topics]]


async def client_process(args: argparse.Namespace) -> None:
    """`--client`: hold the connections; print delivery latencies (ms) when told to stop."""
    import orjson

    from bench.ws_client import connect

    delays: list[float] = []
    snapshots = args.clients * args.topics
    all_ready = asyncio.Event()

    def on_message(raw: bytes, received: float) -> None:
        nonlocal snapshots
        message = orjson.loads(raw)
        if message.get("type") in ("snapshot", "error"):  # an error: it would never be ready
            snapshots -= 1
            if not snapshots:
                all_ready.set()
        elif message.get("type") == "update":
            delays.append((received - message["data"]["t"]) * 1000)

    subscribe = json.dumps({"type": "subscribe", "topics": topics_of(args.topics)})
    for n in range(args.clients):
        connection = await connect("127.0.0.1", args.port, "/ws", on_message)
        connection.send_text(subscribe)
        if n % 100 == 99:
            await asyncio.sleep(0.01)
    await all_ready.wait()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(delays), flush=True)


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def run(args: argparse.Namespace, *, coalesce: bool) -> dict[str, Any]:
    from ioc.app import create_app
    from ioc.live import frames
    from ioc.migrations import upgrade
    from tests.support.servers import serve_app

    frames.HELD_BYTES = 65_536 if coalesce else 0
    writes = 0
    write = frames.DirectWriter.flush

    def counted(self: Any) -> None:
        nonlocal writes
        writes += bool(self.held)
        write(self)

    frames.DirectWriter.flush = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/ioc.db"
        await asyncio.to_thread(upgrade, url)
        app = create_app(live_bench_settings(url))
        async with serve_app(app, ws_ping_interval=None) as url:
            port = int(url.rsplit(":", 1)[1])
            clients = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                "--port",
                str(port),
                "--clients",
                str(args.clients),
                "--topics",
                str(args.topics),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                limit=1 << 26,  # the latencies come back as one line
            )
            assert clients.stdout is not None and clients.stdin is not None
            assert (await clients.stdout.readline()).strip() == b"ready"
            hub = app.state.ctx.hub
            names = topics_of(args.topics)
            writes = 0
            before = cpu()
            for _ in range(args.turns):
                now = time.time()
                for topic in names:  # one turn: no await between the updates
                    hub.publish(topic, {"t": now, "value": 1})
                await asyncio.sleep(1 / args.rate)
            after = cpu()
            clients.stdin.write(b"\n")
            await clients.stdin.drain()
            delays = json.loads(await clients.stdout.readline())
            await clients.wait()
    frames.DirectWriter.flush = write  # type: ignore[method-assign]
    delivered = len(delays)
    user, system = after[0] - before[0], after[1] - before[1]
    return {
        "frames_delivered": delivered,
        "frames_expected": args.clients * args.topics * args.turns,
        "socket_writes": writes,
        "server_cpu_us_per_frame": round((user + system) / max(1, delivered) * 1e6, 2),
        "of_which_system_us": round(system / max(1, delivered) * 1e6, 2),
        "delivery_ms_p50": round(percentile(delays, 50), 1),
        "delivery_ms_p99": round(percentile(delays, 99), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=3)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_process(args))
        return
    os.environ.setdefault("IOC_LOG_LEVEL", "WARNING")
    results = {
        mode: asyncio.run(run(args, coalesce=mode == "one write per turn"))
        for mode in ("a write per frame", "one write per turn", "a write per frame (again)")
    }
    write_results(
        "ws_coalesce",
        {
            "benchmark": "ws_coalesce",
            "machine": machine(),
            "clients": args.clients,
            "topics_per_client": args.topics,
            "turns": args.turns,
            "runs": results,
        },
    )


if __name__ == "__main__":
    main()
