"""WebSocket fan-out: the IOC's live hub against a bare `websockets.broadcast` loop.

The server side runs in this process: the real IOC app (`create_app`, SQLite file, `/ws`, the
hub) served by uvicorn, and on another port a bare `websockets` server whose publisher calls
`websockets.broadcast`. The clients run in separate processes (`--client`), open their
connections, subscribe, and time every update from its publication (the payload carries the
publisher's `time.time()`) to its arrival. For each scenario the same clients follow first the
IOC, then the floor, with the same frames at the same rate:

- delivery: publish → frame read by a client (p50/p99 over every update of every client);
- publish → last socket write: on the server, from `Hub.publish` to the moment the last
  subscriber's frame was handed to its socket (the floor: the `broadcast()` call itself, which
  writes to every transport before returning);
- server CPU per frame written (this process's CPU time while publishing ÷ frames × clients):
  the figure least disturbed by a shared machine; split into user time (Python: what the hub
  or `broadcast()` does per client) and system time (the kernel's `send()` on loopback);
- server RSS with every client connected (this process, which also holds the idle floor server);
- Python work per client of one fan-out, without the kernel (`python_only`: every transport a
  sink, best of 20 rounds in one process): what the hub's fast path and `broadcast()` themselves
  cost, independent of who else runs on the machine.

uvicorn's keepalive pings and the hub's heartbeat are off, as the floor has neither.

    .venv/bin/python bench/ws_fanout.py                       # both scenarios, 25 s each
    .venv/bin/python bench/ws_fanout.py --scenario 1000x10 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

SCENARIOS = {"1000x10": (1000, 10.0), "5000x2": (5000, 2.0)}
TOPIC = "kpi:onestop.backlog:75"
CLIENT_PROCESSES = 4


def raise_open_files() -> int:
    """Lift the soft open-file limit to the hard one (each client is a socket)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mb() -> float:
    """This process's resident memory, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_times() -> tuple[float, float]:
    """This process's user and system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def per_frame(before: tuple[float, float], frames: int) -> dict[str, float]:
    """CPU microseconds per frame written since `before`: total, in Python (user), in the kernel."""
    user, system = (now - then for now, then in zip(cpu_times(), before, strict=True))
    return {
        "server_cpu_us_per_frame": round((user + system) / frames * 1e6, 1),
        "server_user_us_per_frame": round(user / frames * 1e6, 1),
        "server_system_us_per_frame": round(system / frames * 1e6, 1),
    }


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`, or NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# ---------------------------------------------------------------- clients


async def run_clients(url: str, count: int, *, subscribe: bool, deflate: bool = False) -> None:
    """`count` connections; prints `ready`, then on stdin's end the latencies as JSON."""
    import orjson
    import websockets
    from websockets.asyncio.client import connect

    raise_open_files()
    latencies: list[float] = []
    gaps = 0
    connections: list[Any] = []

    async def follow(ws: Any) -> None:
        nonlocal gaps
        last = None
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "update":
                    latencies.append(time.time() - message["data"]["t"])
                    seq = message["seq"]
                    if last is not None and seq != last + 1:
                        gaps += 1
                    last = seq
                elif kind == "snapshot":
                    last = message["seq"]
                elif kind == "ping":
                    await ws.send('{"type":"pong"}')
        except websockets.ConnectionClosed:
            return

    ready = asyncio.Event()
    readers: list[asyncio.Task[None]] = []
    for start in range(0, count, 100):  # in batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(
                connect(
                    url,
                    ping_interval=None,
                    max_queue=None,
                    compression="deflate" if deflate else None,
                )
                for _ in range(min(100, count - start))
            )
        )
        for ws in batch:
            if subscribe:
                await ws.send(json.dumps({"type": "subscribe", "topics": [TOPIC]}))
                snapshot = json.loads(await ws.recv())
                while snapshot["type"] == "ping":
                    snapshot = json.loads(await ws.recv())
                assert snapshot["type"] == "snapshot", snapshot
            readers.append(asyncio.create_task(follow(ws)))
        connections.extend(batch)
    ready.set()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the orchestrator says stop
    for ws in connections:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 1)
    for task in readers:
        task.cancel()
    print(json.dumps({"latencies": latencies, "gaps": gaps}), flush=True)


# ---------------------------------------------------------------- server side


class Clients:
    """The client processes of one phase."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, url: str, count: int, *, subscribe: bool, deflate: bool = False) -> None:
        per = [
            count // CLIENT_PROCESSES + (i < count % CLIENT_PROCESSES)
            for i in range(CLIENT_PROCESSES)
        ]
        for n in per:
            args = [sys.executable, __file__, "--client", url, "--count", str(n)]
            if not subscribe:
                args.append("--no-subscribe")
            if deflate:
                args.append("--deflate")
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=1 << 28,
                )
            )
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 300)
            assert line.strip() == b"ready", line

    async def stop(self) -> tuple[list[float], int]:
        latencies: list[float] = []
        gaps = 0
        for process in self.processes:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
        for process in self.processes:
            assert process.stdout is not None
            result = json.loads(await asyncio.wait_for(process.stdout.readline(), 120))
            latencies += result["latencies"]
            gaps += result["gaps"]
            await process.wait()
        return latencies, gaps


async def publish_for(
    seconds: float, rate: float, publish: Any, template: dict[str, Any]
) -> dict[int, float]:
    """Publish at `rate` per second for `seconds`; returns publish time (perf_counter) by seq."""
    published: dict[int, float] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while loop.time() - start < seconds:
        n += 1
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        data = dict(template, value=n, t=time.time())
        published[n] = time.perf_counter()
        publish(data, n)
    await asyncio.sleep(1.0)  # let the last frames reach the clients
    return published


async def ioc_phase(
    port: int, app: Any, count: int, rate: float, seconds: float, *, deflate: bool = False
) -> dict[str, Any]:
    """The IOC hub serving `count` clients at `rate` updates per second."""
    hub = app.state.ctx.hub
    written: dict[int, list[float]] = {}
    base = hub.seq.get(TOPIC, 0)

    def on_sent(topic: str, seq: int, count: int) -> None:
        entry = written.get(seq)
        if entry is None:
            written[seq] = [count, time.perf_counter()]
        else:
            entry[0] += count
            entry[1] = time.perf_counter()

    hub.on_sent = on_sent
    clients = Clients()
    await clients.start(f"ws://127.0.0.1:{port}/ws", count, subscribe=True, deflate=deflate)
    assert hub.client_count() == count, hub.client_count()
    rss_connected = rss_mb()
    template = await hub.topics(TOPIC)
    cpu_before = cpu_times()
    direct_before = hub.frames_written_directly
    published = await publish_for(seconds, rate, lambda data, n: hub.publish(TOPIC, data), template)
    cpu = per_frame(cpu_before, len(published) * count)
    direct = hub.frames_written_directly - direct_before
    rss_peak = max(rss_connected, rss_mb())
    latencies, gaps = await clients.stop()
    hub.on_sent = None
    to_last_write = [
        (written[base + n][1] - at) * 1000
        for n, at in published.items()
        if written.get(base + n, [0])[0] >= count
    ]
    return {
        "frames_published": len(published),
        "frames_fully_written": len(to_last_write),
        "publish_to_last_write_ms": {
            "p50": pct(to_last_write, 50),
            "p99": pct(to_last_write, 99),
            "max": max(to_last_write, default=float("nan")),
        },
        "delivery_ms": {
            "count": len(latencies),
            "expected": len(published) * count,
            "p50": pct([x * 1000 for x in latencies], 50),
            "p99": pct([x * 1000 for x in latencies], 99),
        },
        "seq_gaps_seen_by_clients": gaps,
        "server_rss_mb_connected": round(rss_connected, 1),
        "server_rss_mb_peak": round(rss_peak, 1),
        "frames_written_straight_to_socket": direct,
        "server_cpu_share_while_publishing": round(
            cpu["server_cpu_us_per_frame"] * len(published) * count / 1e6 / seconds, 2
        ),
        **cpu,
    }


async def floor_phase(
    count: int, rate: float, seconds: float, template: dict[str, Any]
) -> dict[str, Any]:
    """A bare websockets server and `broadcast()` loop sending the same frames."""
    import websockets
    from websockets.asyncio.server import serve

    connected: set[Any] = set()
    all_in = asyncio.Event()

    async def handler(ws: Any) -> None:
        connected.add(ws)
        if len(connected) >= count:
            all_in.set()
        try:
            await ws.wait_closed()
        finally:
            connected.discard(ws)

    async with serve(
        handler, "127.0.0.1", 0, ping_interval=None, compression=None, backlog=4096
    ) as server:
        port = server.sockets[0].getsockname()[1]
        clients = Clients()
        await clients.start(f"ws://127.0.0.1:{port}", count, subscribe=False)
        await asyncio.wait_for(all_in.wait(), 60)
        durations: list[float] = []

        def publish(data: dict[str, Any], n: int) -> None:
            frame = json.dumps({"type": "update", "topic": TOPIC, "seq": n, "data": data})
            began = time.perf_counter()
            websockets.broadcast(connected, frame)
            durations.append((time.perf_counter() - began) * 1000)

        cpu_before = cpu_times()
        published = await publish_for(seconds, rate, publish, template)
        cpu = per_frame(cpu_before, len(published) * count)
        latencies, _ = await clients.stop()
    return {
        "frames_published": len(published),
        **cpu,
        "publish_to_last_write_ms": {"p50": pct(durations, 50), "p99": pct(durations, 99)},
        "delivery_ms": {
            "count": len(latencies),
            "p50": pct([x * 1000 for x in latencies], 50),
            "p99": pct([x * 1000 for x in latencies], 99),
        },
    }


def python_only(count: int, template: dict[str, Any], *, repeat: int = 20) -> dict[str, float]:
    """The per-client Python work of one fan-out, without the kernel: every transport is a sink.

    The floor: `websockets.broadcast` over real `ServerConnection`s in the OPEN state. The IOC:
    `Hub.deliver` to clients whose `DirectWriter` stands over an object shaped like uvicorn's
    `websockets-sansio` protocol (the attributes the fast path reads) and a real
    `websockets.server.ServerProtocol`."""
    from types import SimpleNamespace

    import websockets
    from starlette.websockets import WebSocketState
    from websockets.asyncio.server import ServerConnection
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from ioc.live.frames import DirectWriter
    from ioc.live.hub import Client, Hub

    class Sink(asyncio.Transport):
        def write(self, data: Any) -> None:
            pass

        def is_closing(self) -> bool:
            return False

    def open_protocol() -> ServerProtocol:
        protocol = ServerProtocol()
        protocol.state = State.OPEN
        return protocol

    connections = []
    for _ in range(count):
        connection = ServerConnection(open_protocol(), None)  # type: ignore[arg-type]
        connection.transport = Sink()
        connections.append(connection)
    hub = Hub(None)
    for _ in range(count):
        writable = asyncio.Event()
        writable.set()
        server = SimpleNamespace(
            transport=Sink(),
            writable=writable,
            close_sent=False,
            disconnected=False,
            conn=open_protocol(),
        )
        app_side = SimpleNamespace(application_state=WebSocketState.CONNECTED)
        direct = DirectWriter(server, app_side, hub.frames)
        client = Client(None, queue_limit=10, direct=direct)  # type: ignore[arg-type]
        client.parked = True
        hub.attach(client)
        hub.subscribers.setdefault(TOPIC, set()).add(client)
        client.topics.add(TOPIC)
    message = json.dumps({"type": "update", "topic": TOPIC, "seq": 1, "data": template})

    def best(call: Any) -> float:
        call()
        times = []
        for _ in range(repeat):
            began = time.process_time()
            call()
            times.append(time.process_time() - began)
        return round(min(times) / count * 1e6, 2)

    def deliver() -> None:  # and the end of the turn, when the taken frames are written
        hub.deliver(TOPIC, template)
        hub.frames.flush()

    hub_us = best(deliver)
    floor_us = best(lambda: websockets.broadcast(connections, message))
    assert hub.frames_written_directly == (repeat + 1) * count
    return {"ioc_us_per_client": hub_us, "floor_us_per_client": floor_us}


async def run_server(
    scenarios: list[str], seconds: float, ws: str = "auto", *, deflate: bool = False
) -> dict[str, Any]:
    import uvicorn

    from bench.common import live_bench_settings
    from ioc.app import create_app
    from ioc.migrations import upgrade

    raise_open_files()
    directory = Path(tempfile.mkdtemp(prefix="ioc-ws-bench-"))
    url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    app = create_app(live_bench_settings(url))  # no heartbeat: the floor has none
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        backlog=4096,
        ws=ws,  # type: ignore[arg-type]
        ws_ping_interval=None,  # uvicorn's own keepalive pings: off too, as for the floor
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    results: dict[str, Any] = {"rss_mb_idle": round(rss_mb(), 1)}
    try:
        for name in scenarios:
            count, rate = SCENARIOS[name]
            print(
                f"{name}: IOC hub, {count} clients × {rate:g} updates/s for {seconds:g} s",
                flush=True,
            )
            ioc = await ioc_phase(port, app, count, rate, seconds, deflate=deflate)
            print(json.dumps(ioc), flush=True)
            template = await app.state.ctx.hub.topics(TOPIC)
            print(f"{name}: bare websockets.broadcast floor", flush=True)
            floor = await floor_phase(count, rate, seconds, template)
            print(json.dumps(floor), flush=True)
            python = python_only(count, template)
            print(json.dumps({"python_only": python}), flush=True)
            results[name] = {
                "clients": count,
                "updates_per_second": rate,
                "seconds": seconds,
                "ioc": ioc,
                "floor": floor,
                "ratio_delivery_p99": ioc["delivery_ms"]["p99"] / floor["delivery_ms"]["p99"],
                "ratio_last_write_p99": ioc["publish_to_last_write_ms"]["p99"]
                / floor["publish_to_last_write_ms"]["p99"],
                "ratio_cpu_per_frame": ioc["server_cpu_us_per_frame"]
                / floor["server_cpu_us_per_frame"],
                "ratio_user_cpu_per_frame": ioc["server_user_us_per_frame"]
                / floor["server_user_us_per_frame"],
                "python_only": python,
                "ratio_python_only": python["ioc_us_per_client"] / python["floor_us_per_client"],
            }
    finally:
        server.should_exit = True
        await serving
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument(
        "--ws", default="auto", help="uvicorn's WebSocket implementation (auto, websockets-sansio…)"
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="clients offer permessage-deflate, as browsers do (the IOC accepts it, the floor not)",
    )
    parser.add_argument("--no-subscribe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(
            run_clients(
                args.client, args.count, subscribe=not args.no_subscribe, deflate=args.deflate
            )
        )
        return
    from bench.common import machine, write_results

    scenarios = args.scenario or list(SCENARIOS)
    results = asyncio.run(run_server(scenarios, args.seconds, args.ws, deflate=args.deflate))
    results["machine"] = machine() | {"load_average": os.getloadavg()}
    write_results("ws_fanout_deflate" if args.deflate else "ws_fanout", results)


if __name__ == "__main__":
    main()
