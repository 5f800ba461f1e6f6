"""HTTP load generator for the benchmarks: many keep-alive HTTP/1.1 connections on loopback.

Runs in its own process (so the server's event loop and this one do not share a core's time
slices in one interpreter) and prints one JSON object with the figures. Two modes:

* closed loop (`--rate 0`): every connection sends its next request as soon as the previous
  answer is read; gives the highest rate the server sustains (latency is then mostly queueing:
  about connections ÷ rate);
* open loop (`--rate R`): requests are scheduled at R per second spread over the connections,
  and each latency is counted from the scheduled time, so a slow server is not hidden by the
  client waiting (no coordinated omission).

The client is a minimal asyncio protocol (request line, headers, Content-Length or chunked
body) rather than httpx or aiohttp: those cost more CPU per request than the server under test.

    python bench/load_client.py --port 8000 --urls urls.txt [--connections 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import time
from pathlib import Path


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GET requests one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        """Connect to host:port."""
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        return cls(reader, writer)

    async def get(self, request: bytes) -> tuple[int, int]:
        """Send a prepared request; returns (status, body length)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            return status, await self._chunked()
        if length:
            await self.reader.readexactly(length)
        return status, length

    async def _chunked(self) -> int:
        total = 0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await self.reader.readexactly(size + 2)
            total += size
            if size == 0:
                return total

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


def prepare(path: str, host: str, port: int, headers: tuple[str, ...] = ()) -> bytes:
    """The bytes of a GET request for `path`, with extra `Name: value` headers."""
    extra = "".join(f"{header}\r\n" for header in headers)
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
        f"{extra}Connection: keep-alive\r\n\r\n"
    ).encode()


async def run(
    *,
    host: str,
    port: int,
    paths: list[str],
    connections: int,
    seconds: float,
    rate: float,
    headers: tuple[str, ...] = (),
) -> dict[str, object]:
    """Drive the server for `seconds`; returns counts, rate and latency percentiles."""
    requests = [prepare(p, host, port, headers) for p in paths]
    pool = [await Connection.open(host, port) for _ in range(connections)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    body_bytes = 0
    unsent = 0
    rng = random.Random(7)
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(index: int, connection: Connection) -> None:
        nonlocal body_bytes, unsent
        sent = 0
        while True:
            if rate > 0:  # this connection's share of an evenly spaced schedule
                scheduled = started + (index + sent * connections) / rate
                if scheduled >= deadline:
                    return
                if time.perf_counter() > deadline:  # bounded: what is still queued is unsent
                    unsent += int((deadline - scheduled) * rate / connections) + 1
                    return
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                scheduled = time.perf_counter()
                if scheduled >= deadline:
                    return
            request = requests[rng.randrange(len(requests))] if len(requests) > 1 else requests[0]
            status, length = await connection.get(request)
            latencies.append(time.perf_counter() - scheduled)
            statuses[status] = statuses.get(status, 0) + 1
            body_bytes += length
            sent += 1

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(pool)))
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for connection in pool:
        connection.close()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 2)

    return {
        "mode": f"open loop at {rate:g} req/s" if rate > 0 else "closed loop",
        "connections": connections,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "scheduled_but_unsent_at_deadline": unsent,
        "requests_per_second": round(len(latencies) / elapsed),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "mean_body_bytes": round(body_bytes / max(1, len(latencies))),
        "distinct_urls": len(paths),
        "latency_ms_p50": pct(50),
        "latency_ms_p99": pct(99),
        "latency_ms_max": round(ordered[-1] * 1000, 2) if ordered else None,
        "latency_ms_mean": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
        "client_cpu_share": round((usage.ru_utime + usage.ru_stime) / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--urls", type=Path, required=True, help="a file of paths, one a line")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="req/s, open loop; 0: closed")
    parser.add_argument(
        "--header", action="append", default=[], help="an extra 'Name: value' header; repeatable"
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback only")
    paths = [p for p in args.urls.read_text().splitlines() if p]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(
        run(
            host=args.host,
            port=args.port,
            paths=paths,
            connections=args.connections,
            seconds=args.seconds,
            rate=args.rate,
            headers=tuple(args.header),
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
