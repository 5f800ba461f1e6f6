"""The garbage collector tuned for a long-running service process.

CPython's cyclic collector runs a young collection every 700 net allocations of container
objects, and every so often an old one that walks the whole heap. A poll decodes and maps
thousands of upstream records (dicts, models, datetimes) into objects that live until the batch
is stored, so with the defaults the collector ran dozens of times per page over objects that
are all still alive: 40 % of mapping a page in `bench/map_page.py`. Our data holds no cycles to
speak of, so collections can be rarer; and what was loaded at start (modules, schemas, the
ORM's metadata) is moved out of the collector's sight for good.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Protocol

YOUNG_THRESHOLD = 50_000
"""Net allocations of container objects between two young collections (CPython: 700)."""

OLDER_THRESHOLDS = (20, 10)
"""Young collections between two middle ones, middle between two old ones (CPython: 10, 10)."""


class PauseObserver(Protocol):
    """A histogram with a `generation` label (`Metrics.gc_pause`)."""

    def labels(self, generation: str) -> Any: ...


def tune_for_service(pauses: PauseObserver | None = None) -> None:
    """Rarer collections, and the objects alive now (what start-up loaded) never scanned
    again; with `pauses`, every collection's length observed in it from now on. Call once per
    process, after the application is built and before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    if pauses is not None:
        watch_pauses(pauses)


def watch_pauses(pauses: PauseObserver) -> None:
    """Observe the length of each collection of this process, by generation (the process
    runs nothing else meanwhile: a long one delays every request and delivery in flight)."""
    by_generation = [pauses.labels(str(n)) for n in range(3)]
    started = 0.0

    def on_collection(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            by_generation[info["generation"]].observe(time.perf_counter() - started)

    gc.callbacks.append(on_collection)
