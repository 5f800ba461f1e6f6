"""Totals of large record listings, counted at most once per few seconds.

A listing's total is an exact `count(*)` of the matching rows; over the whole of a busy table
(hundreds of thousands of dossiers, updated thousands of times a second) that is a scan of it,
80 ms and growing, for a figure that is stale as soon as it is read. A total at or above
`LARGE_TOTAL` is therefore remembered for `TTL_SECONDS` per process and per query (its type,
unit, time window, filters and search: not its page or sort). Smaller totals — a commune's,
a day's, anything a person counts by eye — are counted on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

LARGE_TOTAL = 10_000
"""A total at least this large is remembered."""

TTL_SECONDS = 10.0
"""How long a large total is remembered: the most it lags the records stored since."""

MAX_ENTRIES = 1_000
"""Distinct queries remembered at once (the least recently used go first)."""


class TotalsCache:
    """Large totals by query, each for `ttl_seconds`."""

    def __init__(
        self,
        *,
        large: int = LARGE_TOTAL,
        ttl_seconds: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.large = large
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()

    def get(self, key: Hashable) -> int | None:
        """The remembered total of `key`, or None (never counted, or too long ago)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        total, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return total

    def put(self, key: Hashable, total: int) -> None:
        """Remember `total` for `key` if it is large."""
        if total < self.large:
            self._entries.pop(key, None)
            return
        self._entries[key] = (total, self._clock() + self.ttl_seconds)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
