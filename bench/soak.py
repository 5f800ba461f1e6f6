"""Soak benchmark: everything at once on PostgreSQL for a long while.

    python bench/soak.py [--seconds 600] [--records-per-second 20000] [--ws-clients 2000]
                         [--rest-rate 500] [--drain-seconds 300]

Five processes on this machine:

* the **upstream**: a one-stop-shop dossier API (the `onestop` connector's protocol) that makes
  `--records-per-second` dossier versions per second, every other one an update of a recent
  dossier (received → processing, both open), the rest new dossiers; a version is served from
  the second after it was made (the protocol's times have one-second resolution);
* the **IOC**, as `--topology`:
  `split` (the default): `python -m ioc worker` (scheduler: polling every second, 1,000 dossiers
  a page, each page stored, recomputed and published in one transaction) and one API replica,
  `python -m ioc serve --workers N` (`--api-workers`, `IOC_SCHEDULER_ENABLED=false`), live
  updates going from the worker to the API processes through PostgreSQL LISTEN/NOTIFY;
  `single`: one `python -m ioc serve` process doing all of it (the first runs' layout);
* **WebSocket clients** (`--ws-clients` over `--ws-processes` asyncio processes, with
  `bench/ws_client.py`): each subscribes to the province's backlog and on-time rate and to one
  commune's backlog;
* **REST load** (open loop at `--rest-rate` req/s over 32 keep-alive connections, with
  `bench/load_client.py`'s HTTP client; a reset connection counts as an error and is reopened):
  KPI current values, series, breakdowns, records and connectors;
* this **controller**, sampling the resident memory of the IOC's processes every 5 s (summed,
  and per role) and reading their CPU time at the end.

After `--seconds` the upstream stops making versions and the controller waits (up to
`--drain-seconds`) until the IOC has stored every dossier, then compares counts.

Figures: REST p50/p99 (open loop, from the scheduled time); WebSocket delivery (client receipt
minus the cell's `computed_at`, i.e. commit + publish + fan-out; the part of it until the
NOTIFY, from a probe that LISTENs like an API process; and the server's own
publish→socket histogram from `/metrics`; with several API processes, one of them answers the
scrape); ingest-to-screen (client receipt of a province
backlog value N minus the moment dossier N was made upstream); the records/s the IOC stored;
memory over time; upstream vs stored counts. Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import json
import math
import os
import random
import resource
import socket
import subprocess
import sys
import time
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import fresh_postgres, machine, process_cpu_seconds, write_results

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
PROVINCE = 75
BACKLOG_FAMILY = "kpi:onestop.backlog:"
BACKLOG = f"{BACKLOG_FAMILY}{PROVINCE}"
ON_TIME = f"kpi:onestop.on_time_rate:{PROVINCE}"


# ---------------------------------------------------------------- upstream


class ChangeLog:
    """Version i is made at t0 + i/rate: even i a new dossier i/2, odd i an update of a recent
    one. Served by (update second, MaHoSo) keyset, from the second after it was made."""

    def __init__(self, *, t0: float, rate: float, communes: list[str]) -> None:
        self.t0 = t0
        self.rate = rate
        self.communes = communes
        self.frozen_at: int | None = None  # versions made when the run stopped
        self._seconds: dict[int, tuple[list[str], list[int]]] = {}

    def made(self, moment: float) -> int:
        """Versions made before `moment`."""
        count = max(0, math.ceil((moment - self.t0) * self.rate))
        return count if self.frozen_at is None else min(count, self.frozen_at)

    def dossiers(self, versions: int) -> int:
        """Distinct dossiers among the first `versions` versions."""
        return (versions + 1) // 2

    def _dossier_of(self, i: int) -> int:
        if i % 2 == 0:
            return i // 2
        newest = i // 2
        # A fixed pseudo-random pick among the 5,000 newest (a multiplicative hash of i: a
        # seeded `random.Random` per version cost more than the rest of the payload).
        return newest - ((i * 0x9E3779B1) >> 8) % (min(newest, 5000) + 1)

    def _second(self, second: int) -> tuple[list[str], list[int]]:
        """Ids (sorted) and the latest version of each, of the versions made in `second`."""
        cached = self._seconds.get(second)
        if cached is not None:
            return cached
        first, end = self.made(second), self.made(second + 1)
        latest: dict[str, int] = {}
        for i in range(first, end):
            latest[f"SOAK-{self._dossier_of(i):010d}"] = i
        ids = sorted(latest)
        entry = (ids, [latest[k] for k in ids])
        if end > first:  # only complete (or frozen) seconds are ever read
            self._seconds[second] = entry
            if len(self._seconds) > 64:
                self._seconds.pop(min(self._seconds))
        return entry

    def payload(self, i: int) -> dict[str, Any]:
        """Version i in the national portal's sync field names."""
        n = self._dossier_of(i)
        received = self.t0 + 2 * n / self.rate
        made = self.t0 + i / self.rate
        commune = self.communes[n % len(self.communes)]
        return {
            "MaHoSo": f"SOAK-{n:010d}",
            "MaTTHC": "2.000815",
            "TenTTHC": "Chứng thực bản sao từ bản chính giấy tờ, văn bản",
            "MaLinhVuc": "G09-TP02",
            "TenLinhVuc": "Chứng thực",
            "DonViXuLy": f"UBND-{commune}",
            "TenDonViXuLy": f"UBND {commune}",
            "MaDiaBan": commune,
            "KenhThucHien": 2,
            "NgayTiepNhan": _local(received),
            "NgayHenTra": _local(received + 5 * 86400),
            "NgayKetThucXuLy": None,
            "NgayTra": None,
            "TrangThaiHoSo": 2 if i % 2 == 0 else 4,
            "PhiLePhi": 0,
            "DuocThanhToanTrucTuyen": False,
            "DuocSoHoa": True,
            "DanhSachGiayTo": [],
            "CoKetQuaDienTu": False,
            "DanhSachGiayToKetQua": [],
            "DongBoDVCQG": True,
            "CoPhieuXinLoi": False,
            "LichSuBoSung": [],
            "NgayCapNhat": _local(made),
        }

    def page(self, after: tuple[int, str] | None, limit: int) -> tuple[list[dict], Any]:
        """Up to `limit` versions after the keyset position, from complete seconds only."""
        now_second = int(time.time())
        visible_end = now_second if self.frozen_at is None else now_second + 1
        second = int(self.t0) if after is None else after[0]
        items: list[dict[str, Any]] = []
        last: tuple[int, str] | None = None
        while second < visible_end and len(items) < limit:
            ids, versions = self._second(second)
            start = 0 if after is None or second > after[0] else bisect.bisect_right(ids, after[1])
            for k in range(start, len(ids)):
                items.append(self.payload(versions[k]))
                last = (second, ids[k])
                if len(items) == limit:
                    break
            if len(items) < limit:
                second += 1
        following = None
        if len(items) == limit and last is not None:
            following = {"updated_after": _iso(last[0]), "after_id": last[1]}
        return items, following


def _local(moment: float) -> str:
    return _local_second(math.floor(moment))


@functools.lru_cache(maxsize=8192)
def _local_second(second: int) -> str:
    """A second in the protocol's local `yyyyMMddHHmmss` (20,000 versions a second share few)."""
    return datetime.fromtimestamp(second, LOCAL).strftime("%Y%m%d%H%M%S")


def _iso(second: int) -> str:
    return datetime.fromtimestamp(second, LOCAL).isoformat()


def upstream_app(log: ChangeLog) -> Any:
    """The upstream as an ASGI app."""
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def dossiers(request: Request) -> Response:
        params = request.query_params
        limit = min(int(params.get("limit", 200)), 1000)
        after = None
        if params.get("updated_after"):
            moment = datetime.fromisoformat(params["updated_after"].replace(" ", "+"))
            after = (int(moment.timestamp()), params.get("after_id") or "")
        items, following = log.page(after, limit)
        body = {"items": items, "next": following, "server_time": _iso(int(time.time()))}
        return Response(orjson.dumps(body), media_type="application/json")

    async def freeze(request: Request) -> Response:
        log.frozen_at = log.made(time.time())
        made = log.frozen_at
        return Response(orjson.dumps({"versions": made, "dossiers": log.dossiers(made)}))

    return Starlette(
        routes=[
            Route("/api/v1/dossiers", dossiers),
            Route("/_soak/freeze", freeze, methods=["POST"]),
        ]
    )


def run_upstream(args: argparse.Namespace) -> None:
    """`--role upstream`: serve the change log."""
    import uvicorn

    from ioc.units.service import province_rows

    communes = sorted(str(r["code"]) for r in province_rows(PROVINCE) if r["level"] != "province")
    log = ChangeLog(t0=args.t0, rate=args.records_per_second, communes=communes)
    uvicorn.run(upstream_app(log), host="127.0.0.1", port=args.port, log_level="warning")


# ---------------------------------------------------------------- WebSocket clients


async def ws_clients(args: argparse.Namespace) -> dict[str, Any]:
    """`--role ws`: hold clients `--first-client` … + `--ws-clients` for the run (with
    `bench/ws_client.py`, its own CPU kept small); returns the counts and, under "samples",
    every delivery, ingest-to-screen and event-loop lag sample (written to `--samples`.* for
    the controller to merge)."""
    import orjson

    from bench.ws_client import connect
    from ioc.units.service import province_rows

    communes = sorted(str(r["code"]) for r in province_rows(PROVINCE) if r["level"] != "province")
    delivery = array("d")  # seconds: receipt − computed_at, every update
    screen = array("d")  # seconds: receipt of backlog N − when dossier N was made upstream
    counts = {"updates": 0, "snapshots": 0, "errors": 0, "disconnects": 0}
    receipts: list[tuple[str, float]] = []  # (update key, receipt) of the sampled clients

    async def client(index: int) -> None:
        topics = [BACKLOG, ON_TIME, f"kpi:onestop.backlog:{communes[index % len(communes)]}"]
        seen: set[str] = set()
        paired = index < PAIRED_CLIENTS

        def on_message(raw: bytes, received: float) -> None:
            message = orjson.loads(raw)
            kind = message.get("type")
            if kind == "ping":
                connection.send_text('{"type":"pong"}')
            elif kind == "snapshot":
                counts["snapshots"] += 1
            elif kind == "error":
                counts["errors"] += 1
            elif kind == "update":
                counts["updates"] += 1
                data = message["data"]
                computed = data.get("computed_at")
                if computed:
                    delivery.append(received - datetime.fromisoformat(computed).timestamp())
                    if paired:
                        key = _update_key(message["topic"], data)
                        if key not in seen:  # not a re-read
                            seen.add(key)
                            receipts.append((key, received))
                if message["topic"] == BACKLOG and data.get("value"):
                    made = args.t0 + 2 * (int(data["value"]) - 1) / args.records_per_second
                    screen.append(received - made)

        try:
            connection = await asyncio.wait_for(
                connect("127.0.0.1", args.port, "/ws", on_message), timeout=60
            )
        except Exception:
            counts["disconnects"] += 1
            return
        try:
            connection.send_text(orjson.dumps({"type": "subscribe", "topics": topics}).decode())
            await asyncio.shield(connection.closed)
            counts["disconnects"] += 1  # the server closed the connection
        finally:
            connection.close()

    lags = array("d")
    watcher = _watch_loop_lag(lags)
    tasks = []
    for index in range(args.first_client, args.first_client + args.ws_clients):
        tasks.append(asyncio.create_task(client(index)))
        if index % 100 == 99:
            await asyncio.sleep(0.05)  # do not open 2,000 handshakes in one burst
    started = time.time()
    cpu_started = time.process_time()
    await asyncio.sleep(max(0.0, args.until - time.time()))
    busy = (time.process_time() - cpu_started) / max(1e-9, time.time() - started)
    for task in [*tasks, watcher]:
        task.cancel()
    await asyncio.gather(*tasks, watcher, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "clients": args.ws_clients,
        **counts,
        "client_process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "client_process_cpu_share_while_connected": round(busy, 2),
        "receipts_of_paired_clients": receipts,
        "samples": {"delivery": delivery, "screen": screen, "lags": lags},
    }


def _watch_loop_lag(lags: array) -> asyncio.Task[None]:
    """Note in `lags`, every 0.25 s, how late this process's event loop woke from the sleep:
    a load generator's own lateness is inside every latency it times."""

    async def watch() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.25)
            lags.append(time.perf_counter() - before - 0.25)

    return asyncio.create_task(watch())


def _merge_ws(parts: list[dict[str, Any]], samples: list[Path]) -> dict[str, Any]:
    """The client processes' results as one: counts and CPU summed, percentiles over every
    process's samples."""
    if any("error" in part for part in parts):
        return next(part for part in parts if "error" in part)
    merged: dict[str, Any] = {"processes": len(parts)}
    for key in ("clients", "updates", "snapshots", "errors", "disconnects"):
        merged[key] = sum(part[key] for part in parts)
    for name, label in (
        ("delivery", "delivery_ms"),
        ("screen", "ingest_to_screen_ms"),
        ("lags", "client_event_loop_lag_ms"),
    ):
        values = array("d")
        for prefix in samples:
            path = prefix.with_name(f"{prefix.name}.{name}")
            values.frombytes(path.read_bytes())
            path.unlink()
        merged[label] = _percentiles(values)
    for key in ("client_process_cpu_seconds", "client_process_cpu_share_while_connected"):
        merged[key] = round(sum(part[key] for part in parts), 2)
    merged["receipts_of_paired_clients"] = [
        r for part in parts for r in part["receipts_of_paired_clients"]
    ]
    return merged


def _percentiles(values: array) -> dict[str, float | int | None]:
    if not values:
        return {"samples": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)

    return {"samples": len(ordered), "p50": at(50), "p99": at(99), "max": at(100)}


# ---------------------------------------------------------------- NOTIFY probe


async def notify_probe(args: argparse.Namespace) -> dict[str, Any]:
    """`--role notify`: LISTEN on the IOC's fan-out channel like an API process would and time
    each update of the clients' topics from its cell's `computed_at` (commit, publish, NOTIFY):
    the part of WebSocket delivery spent before any API process or client."""
    import asyncpg
    import orjson

    latencies = array("d")
    payloads = 0
    first_heard: dict[str, float] = {}

    def heard(connection: Any, pid: int, channel: str, payload: str) -> None:
        nonlocal payloads
        received = time.time()
        payloads += 1
        for item in orjson.loads(payload).get("u", []):
            if len(item) != 2 or not (item[0] == ON_TIME or item[0].startswith(BACKLOG_FAMILY)):
                continue
            computed = item[1].get("computed_at") if isinstance(item[1], dict) else None
            if computed:
                latencies.append(received - datetime.fromisoformat(computed).timestamp())
                first_heard.setdefault(_update_key(item[0], item[1]), received)

    connection = await asyncpg.connect(args.dsn)
    await connection.add_listener("ioc_live", heard)
    await asyncio.sleep(max(0.0, args.until - time.time()))
    await connection.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "payloads": payloads,
        "computed_to_notify_ms": _percentiles(latencies),
        "probe_process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "first_heard": first_heard,
    }


PAIRED_CLIENTS = 100
"""WebSocket clients whose every receipt is kept, to pair with the NOTIFY it came from."""


def _update_key(topic: str, data: dict[str, Any]) -> str:
    """What names one published update of a KPI topic, in the NOTIFY and on the socket."""
    return f"{topic}|{data.get('computed_at')}|{data.get('value')}"


def _notify_to_socket(ws_result: dict[str, Any], probe_result: dict[str, Any]) -> dict[str, Any]:
    """WebSocket delivery from the moment the update reached PostgreSQL's listeners (the probe
    heard its NOTIFY) to a client's receipt: the push leg, which the API processes and the
    socket do (the time before it is the ingest transaction's, with `computed_at` taken at its
    start). Pairs the sampled clients' receipts with the probe's first hearing of the same
    update; a receipt no NOTIFY carried (a topic re-read by the API process after a change
    beside its headline, which the NOTIFY only names) stays unpaired. Takes the raw lists out
    of both results."""
    receipts = ws_result.pop("receipts_of_paired_clients", [])
    first_heard = probe_result.pop("first_heard", {})
    paired = array("d")
    for key, received in receipts:
        heard = first_heard.get(key)
        if heard is not None:
            paired.append(max(0.0, received - heard))
    return {"sampled_clients": PAIRED_CLIENTS, "receipts": len(receipts), **_percentiles(paired)}


# ---------------------------------------------------------------- REST load


async def rest_load(args: argparse.Namespace) -> dict[str, Any]:
    """`--role rest`: an open loop at `--rest-rate` over 32 keep-alive connections; latency
    counts from the scheduled time; a failed connection counts as an error and is reopened."""
    from bench.load_client import Connection, prepare

    requests = [prepare(p, "127.0.0.1", args.port) for p in args.paths]
    kinds = [_rest_kind(p) for p in args.paths]
    by_kind: dict[str, array] = {}  # the same latencies by what was asked
    by_window: dict[int, array] = {}  # and by when it was scheduled (WINDOW seconds each)
    connections = 32
    latencies = array("d")
    responses = array("d")  # from the request's sending: without the wait for its connection
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    deadline = started + args.seconds
    rng = random.Random(7)

    async def worker(index: int) -> None:
        connection: Connection | None = None
        sent = 0
        while True:
            scheduled = started + (index + sent * connections) / args.rest_rate
            if scheduled >= deadline:
                break
            sent += 1
            if time.perf_counter() > deadline:
                statuses["unsent"] = statuses.get("unsent", 0) + 1
                continue
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pick = rng.randrange(len(requests))  # also what a failed connection counts under
            try:
                if connection is None:
                    connection = await Connection.open("127.0.0.1", args.port)
                sent_at = time.perf_counter()
                status, _ = await asyncio.wait_for(connection.get(requests[pick]), 60)
                responses.append(time.perf_counter() - sent_at)
                key = str(status)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                key = "connection error"
                if connection is not None:
                    connection.close()
                connection = None
            latencies.append(time.perf_counter() - scheduled)
            by_kind.setdefault(kinds[pick], array("d")).append(latencies[-1])
            by_window.setdefault(int((scheduled - started) // WINDOW), array("d")).append(
                latencies[-1]
            )
            statuses[key] = statuses.get(key, 0) + 1
        if connection is not None:
            connection.close()

    lags = array("d")
    watcher = _watch_loop_lag(lags)
    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    watcher.cancel()
    return {
        "target_rate": args.rest_rate,
        "answered_per_second": round(len(latencies) / elapsed, 1),
        "statuses": statuses,
        "latency_ms": _percentiles(latencies),
        "latency_ms_by_kind": {kind: _percentiles(v) for kind, v in sorted(by_kind.items())},
        "response_ms": _percentiles(responses),
        "latency_ms_p99_by_window": [
            (n * WINDOW, _percentiles(v)["p99"]) for n, v in sorted(by_window.items())
        ],
        "client_event_loop_lag_ms": _percentiles(lags),
        "client_process_cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
    }


# ---------------------------------------------------------------- controller


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (uvicorn's worker processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in _tree(int(child)))]


def _rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its descendants."""
    total = 0
    for member in _tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(x.split()[1]) for x in lines if x.startswith("VmRSS:")), 0)
    return round(total / 1024, 1)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants so far."""
    return round(sum(process_cpu_seconds(member) for member in _tree(pid)), 1)


def _wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _rest_paths(communes: list[str], today: datetime) -> list[str]:
    """The REST mix; `today` in the province's time zone (its days are the KPIs' days: a UTC
    date is yesterday there for seven hours a day, a day whose cells are computed on read)."""
    start = (today - timedelta(days=30)).date().isoformat()
    end = today.date().isoformat()
    paths = ["/api/v1/kpis", "/api/v1/connectors", "/api/v1/records/dossier?limit=20"]
    for commune in communes[:20]:
        paths += [
            f"/api/v1/kpis?unit={commune}",
            f"/api/v1/kpis/onestop.backlog/series?unit={commune}&period=day&from={start}&to={end}",
        ]
    paths.append(
        f"/api/v1/kpis/onestop.backlog/breakdown?unit={PROVINCE}&period=day&start={end}&by=unit"
    )
    return paths


WINDOW = 10
"""Seconds of the REST load's windows, for its p99 over time."""


def _rest_kind(path: str) -> str:
    """What a path of the REST mix asks for, to report latencies by it."""
    route, _, query = path.partition("?")
    name = route.rstrip("/").rsplit("/", 1)[-1]
    if route == "/api/v1/kpis":
        return "current values of a commune" if "unit=" in query else "current values"
    return {"series": "series", "breakdown": "breakdown", "connectors": "connectors"}.get(
        name, "records page"
    )


def _json_or_error(output: bytes) -> dict[str, Any]:
    try:
        return json.loads(output)
    except ValueError:
        return {
            "error": "the load process failed; see its stderr",
            "output": output[-500:].decode(errors="replace"),
        }


def _histograms(text: str, name: str, by: str | None = None) -> dict[str, dict[str, Any]]:
    """Prometheus histogram `name` in `text`: its buckets (upper bound → cumulative count),
    count and sum, per value of label `by`, or summed over its labels under the key ""."""
    from prometheus_client.parser import text_string_to_metric_families

    parts = {f"{name}_{part}": part for part in ("bucket", "count", "sum")}
    found: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            part = parts.get(sample.name)
            if part is None:
                continue
            key = sample.labels.get(by, "") if by else ""
            entry = found.setdefault(key, {"buckets": {}, "count": 0.0, "sum": 0.0})
            if part == "bucket":
                bound = float(sample.labels["le"])
                entry["buckets"][bound] = entry["buckets"].get(bound, 0) + sample.value
            else:
                entry[part] += sample.value
    return found


def _histogram_quantile(text: str, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` of a Prometheus histogram (summed
    over its labels), in milliseconds."""
    return _bucket_quantile(_histograms(text, name).get("", {}).get("buckets", {}), q)


def _bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding quantile `q` of cumulative `buckets`."""
    if not buckets.get(math.inf):
        return None
    total = buckets[math.inf]
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return None if bound == math.inf else bound * 1000
    return None


def _histogram_count_sum(text: str, name: str) -> tuple[float, float] | None:
    """A Prometheus histogram's count and sum (summed over its labels)."""
    summed = _histograms(text, name).get("")
    return (summed["count"], round(summed["sum"], 3)) if summed else None


def _gc_pauses(text: str) -> dict[str, Any]:
    """A process's garbage collections by generation from its `ioc_gc_pause_seconds`: count,
    seconds in all and the longest's bucket bound (ms)."""
    found: dict[str, Any] = {}
    for generation, pauses in _histograms(text, "ioc_gc_pause_seconds", by="generation").items():
        count = int(pauses["count"])
        buckets = pauses["buckets"]
        longest = min((b for b, n in buckets.items() if n >= count), default=None)
        found[generation] = {
            "count": count,
            "seconds": round(pauses["sum"], 3),
            "longest_ms_bucket": None if longest in (None, math.inf) else longest * 1000,
        }
    return found


LOOP_LAG = "ioc_event_loop_lag_seconds"
"""How late a process's event loop ran a timer: all of it, and its off-CPU part."""


def _quantiles_by(text: str, name: str, label: str) -> dict[str, Any]:
    """A Prometheus histogram per value of `label`: its count, the bucket bounds of p50 / p99
    / p99.9 (ms), and the share of observations over 50 and 100 ms."""
    found: dict[str, Any] = {}
    for value, histogram in _histograms(text, name, by=label).items():
        buckets, count = histogram["buckets"], histogram["count"] or 1
        found[value] = {
            "count": int(histogram["count"]),
            "p50_p99_p999_ms_bucket": [_bucket_quantile(buckets, q) for q in (0.5, 0.99, 0.999)],
            "share_over_50_100_ms": [
                round(1 - buckets.get(bound, 0) / count, 5) for bound in (0.05, 0.1)
            ],
        }
    return found


def _ingest_stages(text: str) -> dict[str, Any]:
    """Where the worker's ingest time went, from its Prometheus metrics: per stage the count,
    the wall seconds (sum and mean) and the process CPU seconds while it ran; and the records,
    pages and KPI cells per ingest transaction."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            sums[f"{sample.name}:{stage}"] = sums.get(f"{sample.name}:{stage}", 0) + sample.value
    stages: dict[str, Any] = {}
    for key, count in sums.items():
        name, _, stage = key.partition(":")
        if name != "ioc_ingest_stage_seconds_count" or not count:
            continue
        wall = sums.get(f"ioc_ingest_stage_seconds_sum:{stage}", 0.0)
        cpu = sums.get(f"ioc_ingest_stage_cpu_seconds_total:{stage}", 0.0)
        stages[stage] = {
            "count": int(count),
            "wall_seconds": round(wall, 2),
            "wall_ms_mean": round(1000 * wall / count, 1),
            "cpu_seconds": round(cpu, 2),
        }
    batches = sums.get("ioc_ingest_batch_records_count:", 0)
    per_batch = {
        "batches": int(batches),
        "records_mean": round(sums.get("ioc_ingest_batch_records_sum:", 0) / batches, 1)
        if batches
        else None,
        "pages_mean": round(sums.get("ioc_ingest_batch_pages_sum:", 0) / batches, 2)
        if batches
        else None,
        "kpi_cells_mean": round(sums.get("ioc_ingest_kpi_cells_total:", 0) / batches, 1)
        if batches
        else None,
    }
    refreshes = sums.get("ioc_kpi_recompute_seconds_count:", 0)
    # The time-driven KPI refresh holds the KPI lock that every ingest transaction takes first
    # (`begin`): its time is time the ingest may wait.
    ingest_kpi = stages.get("kpi", {"count": 0, "wall_seconds": 0.0})
    refresh = {
        "count": int(refreshes) - ingest_kpi["count"],
        "seconds": round(
            sums.get("ioc_kpi_recompute_seconds_sum:", 0.0) - ingest_kpi["wall_seconds"], 2
        ),
    }
    return {"stages": stages, "per_transaction": per_batch, "kpi_refresh": refresh}


async def _backends(dsn: str) -> list[int]:
    """The pids of the PostgreSQL backends serving this database (but this one)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


SERVER_SETTINGS = ("autovacuum", "track_counts", "shared_buffers", "synchronous_commit", "jit")
"""PostgreSQL settings that shape the figures, recorded with them."""


async def _server_settings(dsn: str) -> dict[str, str]:
    """`SERVER_SETTINGS` as the server reports them (`SHOW`)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return {name: await connection.fetchval(f"SHOW {name}") for name in SERVER_SETTINGS}
    finally:
        await connection.close()


def _backend_cpu(dsn: str, seen: dict[int, float]) -> None:
    """Note the CPU seconds so far of every PostgreSQL backend serving this database in `seen`
    (by pid; a backend that exits keeps its last reading)."""
    for pid in asyncio.run(_backends(dsn)):
        if (cpu := _cpu_seconds(pid)) > 0 or pid not in seen:
            seen[pid] = cpu


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run every part, then collect the figures."""
    import asyncpg
    import httpx

    from ioc.migrations import upgrade
    from ioc.units.service import province_rows

    communes = sorted(str(r["code"]) for r in province_rows(PROVINCE) if r["level"] != "province")
    python = sys.executable
    me = str(Path(__file__).resolve())
    with fresh_postgres() as (url, dsn):
        upgrade(url)
        server = asyncio.run(_server_settings(dsn))
        if server["autovacuum"] == "off":
            print(
                "WARNING: this PostgreSQL runs with autovacuum off: nothing is analysed as the "
                "tables grow, unlike a production server (see bench/README.md)",
                file=sys.stderr,
            )
        up_port, ioc_port, worker_port = _free_port(), _free_port(), _free_port()
        # Versions start once everything is up: under load, several IOC processes may take
        # half a minute to start, and 2,000 clients should connect before the ingest begins.
        t0 = time.time() + args.warmup_seconds
        until = t0 + args.seconds
        seed = Path(f"/tmp/soak-{os.getpid()}.toml")
        seed.write_text(
            '[[connector]]\nname = "soak"\nkind = "onestop"\ninterval_seconds = 1\n'
            "timeout_seconds = 60\n"
            f'[connector.config]\nbase_url = "http://127.0.0.1:{up_port}"\npage_size = 1000\n'
        )
        common = ["--t0", str(t0), "--records-per-second", str(args.records_per_second)]
        upstream = subprocess.Popen(
            [python, me, "--role", "upstream", "--port", str(up_port), *common]
        )
        env = {
            **os.environ,
            "IOC_DATABASE_URL": url,
            "IOC_CONNECTORS_FILE": str(seed),
            "IOC_PORT": str(ioc_port),
            "IOC_LOG_LEVEL": "WARNING",
            # Measured without tokens, like bench/kpi.py (bench/auth.py measures what they cost).
            "IOC_ENVIRONMENT": "development",
            "IOC_AUTH_DISABLED": "true",
            "IOC_POLL_MAX_PAGES": "100000",
            "IOC_DB_POOL_SIZE": str(args.db_pool),
            "IOC_DB_MAX_OVERFLOW": str(args.db_pool),
        }
        roles: dict[str, subprocess.Popen[bytes]] = {}
        if args.topology == "single":
            roles["ioc"] = subprocess.Popen([python, "-m", "ioc", "serve"], cwd=ROOT, env=env)
        else:
            roles["worker"] = subprocess.Popen(
                [python, "-m", "ioc", "worker", "--port", str(worker_port)], cwd=ROOT, env=env
            )
            roles["api"] = subprocess.Popen(
                [python, "-m", "ioc", "serve", "--workers", str(args.api_workers)],
                cwd=ROOT,
                env={
                    **env,
                    "IOC_SCHEDULER_ENABLED": "false",
                    "IOC_DB_POOL_SIZE": str(args.api_db_pool),
                    "IOC_DB_MAX_OVERFLOW": str(args.api_db_pool),
                },
            )
        scheduler_port = ioc_port if args.topology == "single" else worker_port
        processes = [upstream, *roles.values()]

        backend_cpu: dict[int, float] = {}

        def sample_memory() -> None:
            _backend_cpu(dsn, backend_cpu)
            moment = round(time.time() - t0, 1)
            per_role = {role: _rss_mib(p.pid) for role, p in roles.items()}
            memory.append((moment, round(sum(per_role.values()), 1)))
            memory_by_role.append((moment, per_role))

        memory: list[tuple[float, float]] = []
        memory_by_role: list[tuple[float, dict[str, float]]] = []
        try:
            _wait_http(f"http://127.0.0.1:{ioc_port}/healthz", timeout=120)
            _wait_http(f"http://127.0.0.1:{scheduler_port}/healthz", timeout=120)
            ioc_up_before_t0 = round(t0 - time.time(), 1)
            shares = [
                args.ws_clients * k // args.ws_processes for k in range(args.ws_processes + 1)
            ]
            samples = [Path(f"/tmp/soak-{os.getpid()}-ws{k}") for k in range(args.ws_processes)]
            ws = [
                subprocess.Popen(
                    [
                        python,
                        me,
                        "--role",
                        "ws",
                        "--port",
                        str(ioc_port),
                        "--until",
                        str(until),
                        "--first-client",
                        str(shares[k]),
                        "--ws-clients",
                        str(shares[k + 1] - shares[k]),
                        "--samples",
                        str(samples[k]),
                        *common,
                    ],
                    stdout=subprocess.PIPE,
                )
                for k in range(args.ws_processes)
            ]
            processes += ws
            probe = subprocess.Popen(
                [python, me, "--role", "notify", "--dsn", dsn, "--until", str(until)],
                stdout=subprocess.PIPE,
            )
            processes.append(probe)
            paths = Path(f"/tmp/soak-{os.getpid()}-urls.txt")
            paths.write_text("\n".join(_rest_paths(communes, datetime.now(LOCAL))))
            time.sleep(max(0.0, t0 - time.time()))
            rest = None
            if args.rest_rate > 0:
                rest = subprocess.Popen(
                    [
                        python,
                        me,
                        "--role",
                        "rest",
                        "--port",
                        str(ioc_port),
                        "--urls",
                        str(paths),
                        "--seconds",
                        str(args.seconds),
                        "--rest-rate",
                        str(args.rest_rate),
                    ],
                    stdout=subprocess.PIPE,
                )
                processes.append(rest)
            while time.time() < until:
                sample_memory()
                time.sleep(5)
            made = httpx.post(f"http://127.0.0.1:{up_port}/_soak/freeze").json()
            rest_result = (
                _json_or_error(rest.communicate(timeout=180)[0]) if rest is not None else None
            )
            ws_result = _merge_ws(
                [_json_or_error(p.communicate(timeout=300)[0]) for p in ws], samples
            )
            probe_result = _json_or_error(probe.communicate(timeout=60)[0])
            push_leg = _notify_to_socket(ws_result, probe_result)

            async def stored(*, distinct: bool = True) -> tuple[int, int]:
                """Rows and distinct ids (or rows twice: while draining, every 2 s, the
                distinct count is a sort of the table that would slow the drain it waits for)."""
                columns = "count(*), count(DISTINCT external_id)" if distinct else "count(*)"
                connection = await asyncpg.connect(dsn)
                try:
                    row = await connection.fetchrow(f"SELECT {columns} FROM dossiers")
                    return row[0], row[-1]
                finally:
                    await connection.close()

            at_stop = asyncio.run(stored())
            drain_started = time.time()
            while asyncio.run(stored(distinct=False))[0] < made["dossiers"]:
                if time.time() - drain_started > args.drain_seconds:
                    break
                sample_memory()
                time.sleep(2)
            drained = round(time.time() - drain_started, 1)
            rows = asyncio.run(stored())
            metrics = httpx.get(f"http://127.0.0.1:{ioc_port}/metrics").text
            scheduler_metrics = httpx.get(f"http://127.0.0.1:{scheduler_port}/metrics").text
            cpu = {role: _cpu_seconds(p.pid) for role, p in roles.items()}
            cpu["upstream"] = _cpu_seconds(upstream.pid)
            _backend_cpu(dsn, backend_cpu)
            cpu["postgresql_backends"] = round(sum(backend_cpu.values()), 1)
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    third = max(1, len(memory) // 3)
    first_mib = sum(m for _, m in memory[:third]) / third
    last_mib = sum(m for _, m in memory[-third:]) / third
    return {
        "benchmark": "soak",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "seconds": args.seconds,
        "topology": args.topology,
        "ioc_up_seconds_before_first_version": ioc_up_before_t0,
        "api_workers": args.api_workers if args.topology == "split" else 1,
        "postgresql_settings": server,
        "targets": {
            "records_per_second": args.records_per_second,
            "ws_clients": args.ws_clients,
            "rest_rate": args.rest_rate,
        },
        "upstream": {**made, "records_per_second_made": round(made["versions"] / args.seconds)},
        "stored_at_stop": {"rows": at_stop[0], "distinct": at_stop[1]},
        "ingest_records_per_second_during_load": round(at_stop[1] * 2 / args.seconds),
        "stored_at_end": {"rows": rows[0], "distinct": rows[1]},
        "drain_seconds": drained,
        "upstream_equals_stored": rows[0] == rows[1] == made["dossiers"],
        "rest": rest_result,
        "websocket": {**ws_result, "delivery_from_notify_ms": push_leg},
        "notify_probe": probe_result,
        "server_ws_fanout_p99_ms_bucket": _histogram_quantile(
            metrics, "ioc_ws_fanout_latency_seconds", 0.99
        ),
        "server_notify": {
            "wait_p50_p99_ms_bucket": [
                _histogram_quantile(metrics, "ioc_live_notify_wait_seconds", q) for q in (0.5, 0.99)
            ],
            "handling_p50_p99_ms_bucket": [
                _histogram_quantile(metrics, "ioc_live_notify_handling_seconds", q)
                for q in (0.5, 0.99)
            ],
            "payloads_and_handling_seconds": _histogram_count_sum(
                metrics, "ioc_live_notify_handling_seconds"
            ),
        },
        "server_http_p99_ms_bucket": _histogram_quantile(
            metrics, "ioc_http_request_duration_seconds", 0.99
        ),
        "server_http_by_route": _quantiles_by(
            metrics, "ioc_http_request_duration_seconds", "route"
        ),
        "server_kpi_recompute_p99_ms_bucket": _histogram_quantile(
            scheduler_metrics, "ioc_kpi_recompute_seconds", 0.99
        ),
        "ioc_cpu_seconds": cpu,
        "gc_pauses": {
            "api (one process)": _gc_pauses(metrics),
            "worker": _gc_pauses(scheduler_metrics),
        },
        "event_loop_lag": {
            "api (one process)": _quantiles_by(metrics, LOOP_LAG, "part"),
            "worker": _quantiles_by(scheduler_metrics, LOOP_LAG, "part"),
        },
        "worker_ingest": _ingest_stages(scheduler_metrics),
        "memory_mib": {
            "samples": memory,
            "by_role": memory_by_role,
            "first_third_mean": round(first_mib, 1),
            "last_third_mean": round(last_mib, 1),
            "growth_percent": round(100 * (last_mib - first_mib) / first_mib, 1),
        },
    }


def floor(result: dict[str, Any]) -> dict[str, Any]:
    """Cores the soak needs at its targets before the IOC runs a line: the load's own processes
    (their CPU per unit in this run, scaled to the target rates) and PostgreSQL's bare storage
    of the records (`bench/ingest.py`'s raw upsert of the same number of records per batch,
    its backend's CPU per record, measured now on a fresh database). Beside them, what this
    run's IOC processes and PostgreSQL backends spent per unit, scaled the same way."""
    from bench.ingest import make_batches, run_raw
    from ioc.migrations import upgrade
    from ioc.units.service import province_rows

    targets, cpu = result["targets"], result["ioc_cpu_seconds"]
    versions_made = result["upstream"]["versions"]
    versions_stored = 2 * result["stored_at_end"]["distinct"] or 1
    per_batch = round(
        (result["worker_ingest"] or {}).get("per_transaction", {}).get("records_mean", 5000)
    )
    communes = [str(r["code"]) for r in province_rows(PROVINCE) if r["level"] == "commune"]
    with fresh_postgres() as (url, dsn):
        upgrade(url)
        raw = asyncio.run(run_raw(dsn, make_batches(40, per_batch, communes), LOCAL.key))
    rest, ws = result["rest"] or {}, result["websocket"] or {}
    answered = rest.get("answered_per_second", 0) * result["seconds"] or 1
    load = {
        "upstream": cpu["upstream"] / max(1, versions_made) * targets["records_per_second"],
        "rest_client": rest.get("client_process_cpu_seconds", 0) / answered * targets["rest_rate"],
        "websocket_clients (as measured)": ws.get("client_process_cpu_share_while_connected", 0),
        "postgresql_bare_storage": raw["postgresql_cpu_us_per_record"]
        / 1e6
        * targets["records_per_second"],
    }
    ioc = {
        "worker": cpu.get("worker", 0) / versions_stored * targets["records_per_second"],
        "api": cpu.get("api", 0) / answered * targets["rest_rate"],
        "postgresql_backends": cpu["postgresql_backends"]
        / versions_stored
        * targets["records_per_second"],
    }
    return {
        "machine_cores": os.cpu_count(),
        "raw_upsert": raw,
        "load_and_bare_storage_cores": {k: round(v, 2) for k, v in load.items()},
        "load_and_bare_storage_cores_total": round(sum(load.values()), 2),
        "this_run_scaled_to_targets_cores": {k: round(v, 2) for k, v in ioc.items()},
        "this_run_scaled_to_targets_cores_total": round(sum(ioc.values()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--role", choices=["controller", "upstream", "ws", "rest", "notify"], default="controller"
    )
    parser.add_argument("--dsn", help="--role notify: the database to LISTEN on")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--records-per-second", type=float, default=20_000)
    parser.add_argument("--ws-clients", type=int, default=2000)
    parser.add_argument("--rest-rate", type=float, default=500)
    parser.add_argument("--drain-seconds", type=float, default=300)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=45,
        help="from starting the processes to the first upstream version",
    )
    parser.add_argument(
        "--ws-processes", type=int, default=4, help="processes the WebSocket clients share"
    )
    parser.add_argument("--first-client", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--samples", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--t0", type=float)
    parser.add_argument("--until", type=float)
    parser.add_argument("--urls")
    parser.add_argument(
        "--db-pool", type=int, default=10, help="IOC_DB_POOL_SIZE of the process that polls"
    )
    parser.add_argument(
        "--topology",
        choices=["split", "single"],
        default="split",
        help="split: `ioc worker` + `ioc serve --workers N`; single: one `ioc serve` does all",
    )
    parser.add_argument(
        "--api-workers", type=int, default=2, help="split: processes of `ioc serve --workers`"
    )
    parser.add_argument(
        "--api-db-pool", type=int, default=5, help="split: IOC_DB_POOL_SIZE of each API process"
    )
    args = parser.parse_args()
    if args.role == "upstream":
        run_upstream(args)
    elif args.role in ("ws", "rest", "notify"):
        role = {"ws": ws_clients, "rest": rest_load, "notify": notify_probe}[args.role]
        if args.urls:
            args.paths = [p for p in Path(args.urls).read_text().splitlines() if p]
        try:
            import uvloop

            result = uvloop.run(role(args))
        except ImportError:
            result = asyncio.run(role(args))
        for name, values in result.pop("samples", {}).items():
            Path(f"{args.samples}.{name}").write_bytes(values.tobytes())
        print(json.dumps(result))
    else:
        result = soak(args)
        result["floor"] = floor(result)
        write_results("soak", result)


if __name__ == "__main__":
    main()
