"""The service's Prometheus metrics, one registry per app so several apps share a process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Seconds, for HTTP requests and live delivery."""

WAIT_BUCKETS = (*LATENCY_BUCKETS, 30, 60, 120, 300)
"""Seconds, for waits that queue up under overload (a NOTIFY payload waiting to be handled)."""

HANDLING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
"""Seconds, for synchronous work on the event loop (handling one NOTIFY payload)."""

POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds, for whole poll runs (many pages) and KPI recomputes."""

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Seconds, for one stage of storing a batch of pages."""

BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)
"""Records per ingest transaction."""

INGEST_STAGES = ("fetch", "begin", "ingest", "kpi", "incidents", "cursor", "commit", "publish")
"""The stages of a poll's ingest, in order: `fetch` one page from the upstream (HTTP, decoding
and the connector's mapping), then for each batch of pages `begin` the transaction (with the
KPI lock), `ingest` (validate, look up stored versions, upsert, rejects), `kpi` (recompute the
touched cells), `incidents` (judge the rules on what changed), `cursor` (lock the instance's row
and set its cursor), `commit` (write the cursor and commit), and `publish` the changes live
after the commit."""


class Metrics:
    """Every metric of one running service, registered in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.poll_duration = Histogram(
            "ioc_poll_duration_seconds",
            "Duration of a connector poll run (all its pages)",
            ["connector", "kind", "outcome"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.polls = Counter(
            "ioc_polls",
            "Connector poll runs by outcome (ok, failed, rate_limited, skipped)",
            ["connector", "kind", "outcome"],
            registry=r,
        )
        self.records_stored = Counter(
            "ioc_records_stored",
            "Canonical records stored (inserted or updated) from upstream pages",
            ["connector", "kind"],
            registry=r,
        )
        self.records_rejected = Counter(
            "ioc_records_rejected",
            "Upstream records rejected with a reason (dead letter)",
            ["connector", "kind"],
            registry=r,
        )
        self.kpi_recompute = Histogram(
            "ioc_kpi_recompute_seconds",
            "Time to recompute the KPI cells one change touched (or a time-driven refresh)",
            ["trigger"],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.ws_clients = Gauge("ioc_ws_clients", "Connected WebSocket clients", registry=r)
        self.ws_fanout = Histogram(
            "ioc_ws_fanout_latency_seconds",
            "From a topic update's publish to its frame written to a client's socket",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.notify_wait = Histogram(
            "ioc_live_notify_wait_seconds",
            "From another process's sending of a NOTIFY payload to its handling here",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.notify_handling = Histogram(
            "ioc_live_notify_handling_seconds",
            "Handling one NOTIFY payload received: from its receipt to its updates written to "
            "the local clients' sockets (or queued for the busy ones)",
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "ioc_gc_pause_seconds",
            "Cyclic garbage collections of this process by generation (2: the whole heap), "
            "each a pause of everything it runs",
            ["generation"],
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "ioc_event_loop_lag_seconds",
            "How late this process's event loop ran a timer (part=all), and the part of it its "
            "thread was not running, waiting for a core or blocked (part=off_cpu, a lower bound)",
            ["part"],
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.http_latency = Histogram(
            "ioc_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_stage = Histogram(
            "ioc_ingest_stage_seconds",
            "Wall time of one stage of a poll's ingest (see INGEST_STAGES): fetch is per page, "
            "the others per batch of pages stored in one transaction",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.ingest_stage_cpu = Counter(
            "ioc_ingest_stage_cpu_seconds",
            "Process CPU time while an ingest stage ran (with whatever else the process did "
            "meanwhile, such as fetching the next page during a store)",
            ["stage"],
            registry=r,
        )
        self.ingest_batch_records = Histogram(
            "ioc_ingest_batch_records",
            "Records (and rejects) fetched per ingest transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.ingest_batch_pages = Histogram(
            "ioc_ingest_batch_pages",
            "Upstream pages stored per ingest transaction",
            buckets=(1, 2, 3, 5, 10, 20, 50),
            registry=r,
        )

        self.ingest_kpi_cells = Counter(
            "ioc_ingest_kpi_cells",
            "KPI cells the ingest transactions changed (recomputed and published)",
            registry=r,
        )

    def start(self, name: str) -> Stopwatch:
        """Start timing one ingest stage; `finish` records it."""
        return Stopwatch(name, time.perf_counter(), time.process_time())

    def finish(self, watch: Stopwatch) -> None:
        """Record a stage's wall time in its histogram and the process CPU in its counter."""
        self.ingest_stage.labels(watch.name).observe(time.perf_counter() - watch.wall)
        self.ingest_stage_cpu.labels(watch.name).inc(time.process_time() - watch.cpu)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one ingest stage (see `start` and `finish`)."""
        watch = self.start(name)
        try:
            yield
        finally:
            self.finish(watch)


@dataclass(frozen=True)
class Stopwatch:
    """When a stage began: wall clock and process CPU."""

    name: str
    wall: float
    cpu: float
