"""Upstream pages to canonical records, in the polling process: JSON decoding and mapping.

    python bench/map_page.py [--pages 60] [--page-size 1000] [--repeats 3]

The pages are the soak's upstream dossiers (`bench/soak.py`'s `ChangeLog`, the one-stop-shop
sync API's field names), encoded once. Each run decodes them with the connector's decoder and
maps them with the `onestop` connector's `Batch.from_payloads`, keeping the last few batches
alive as the worker's fetch-ahead buffer does, in a process that has built the application (so
the heap the garbage collector walks is the service's, not an empty one). Two collector
settings: CPython's defaults, and `ioc.ops.collector.tune_for_service` (what `ioc serve` and
`ioc worker` run). Prints and writes bench/results/map_page.json: microseconds per record
(best of `--repeats`) and the collections each run made.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine, write_results
from bench.soak import ChangeLog
from connectors.onestop.connector import map_dossier
from ioc.app import create_app
from ioc.config import Settings
from ioc.ops.collector import tune_for_service
from ioc.sdk import Batch

BUFFERED_PAGES = 8
"""Batches kept alive while the next pages are mapped (the worker stores about 7 per batch)."""


def make_pages(pages: int, page_size: int) -> list[bytes]:
    """`pages` encoded upstream pages of `page_size` dossier versions each."""
    communes = [str(26_000 + n) for n in range(95)]
    log = ChangeLog(t0=time.time() - 3600, rate=20_000, communes=communes)
    return [
        orjson.dumps({"items": [log.payload(i) for i in range(p * page_size, (p + 1) * page_size)]})
        for p in range(pages)
    ]


def map_pages(pages: list[bytes]) -> tuple[float, int, int]:
    """(seconds, records mapped, collections made) to decode and map every page."""
    kept: deque[Batch] = deque(maxlen=BUFFERED_PAGES)
    collections_before = sum(generation["collections"] for generation in gc.get_stats())
    records = 0
    started = time.perf_counter()
    for page in pages:
        items = orjson.loads(page)["items"]
        batch = Batch.from_payloads(items, map_dossier, cursor={}, id_field="MaHoSo")
        records += len(batch.records)
        kept.append(batch)
    seconds = time.perf_counter() - started
    collections = sum(generation["collections"] for generation in gc.get_stats())
    return seconds, records, collections - collections_before


def measure(pages: list[bytes], repeats: int) -> dict[str, Any]:
    runs = [map_pages(pages) for _ in range(repeats)]
    seconds, records, collections = min(runs)
    return {
        "us_per_record": round(seconds / records * 1e6, 2),
        "records_per_second": round(records / seconds),
        "collections_per_run": collections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    application = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    pages = make_pages(args.pages, args.page_size)
    defaults = measure(pages, args.repeats)
    tune_for_service()
    tuned = measure(pages, args.repeats)
    del application
    write_results(
        "map_page",
        {
            "benchmark": "map_page",
            "machine": machine(),
            "pages": args.pages,
            "page_size": args.page_size,
            "collector_defaults": defaults,
            "collector_tuned": tuned,
            "tuned_over_defaults": round(defaults["us_per_record"] / tuned["us_per_record"], 2),
        },
    )


if __name__ == "__main__":
    main()
