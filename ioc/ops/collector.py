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

YOUNG_THRESHOLD = 50_000
"""Net allocations of container objects between two young collections (CPython: 700)."""

OLDER_THRESHOLDS = (20, 10)
"""Young collections between two middle ones, middle between two old ones (CPython: 10, 10)."""


def tune_for_service() -> None:
    """Rarer collections, and the objects alive now (what start-up loaded) never scanned
    again. Call once per process, after the application is built and before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
