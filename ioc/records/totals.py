"""Totals of large record listings, counted at most once per few seconds.

A listing's total is an exact `count(*)` of the matching rows; over the whole of a busy table
(hundreds of thousands of dossiers, updated thousands of times a second) that is a scan of it,
80 ms and growing, for a figure that is stale as soon as it is read. A total at or above
`LARGE_TOTAL` is therefore remembered for `TTL_SECONDS` per process and per query (its type,
unit, time window, filters and search: not its page or sort), or for 20 times as long as
counting it took when that is longer (`COUNTING_SHARE`): re-counting one query then takes at
most 5 % of a process's time, however large the table grows. Requests that ask for a total
while it is being counted wait for that count instead of starting their own. Smaller totals —
a commune's, a day's, anything a person counts by eye — are counted on every request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

LARGE_TOTAL = 10_000
"""A total at least this large is remembered."""

TTL_SECONDS = 10.0
"""How long a large total is remembered at least: how much it may lag the records stored since,
unless counting it is slow (see `COUNTING_SHARE`)."""

COUNTING_SHARE = 0.05
"""A large total is remembered for at least its counting time divided by this: re-counting one
query then takes at most 5 % of a process's time."""

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
        self._counting: dict[Hashable, asyncio.Future[int]] = {}

    async def total(self, key: Hashable, count: Callable[[], Awaitable[int]]) -> int:
        """The total of `key`: remembered, or being counted by another request (waited for),
        or counted now by `count` and remembered if large."""
        remembered = self.get(key)
        if remembered is not None:
            return remembered
        pending = self._counting.get(key)
        if pending is not None:
            await asyncio.wait([pending])  # a request cancelled meanwhile does not cancel it
            if not pending.cancelled():
                return pending.result()
            return await count()  # the request counting it failed or went: count here
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._counting[key] = future
        started = self._clock()
        try:
            found = await count()
        except BaseException:
            future.cancel()  # the waiting requests count for themselves
            raise
        finally:
            del self._counting[key]
        future.set_result(found)
        self.put(key, found, counted_in=self._clock() - started)
        return found

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

    def put(self, key: Hashable, total: int, *, counted_in: float = 0.0) -> None:
        """Remember `total` for `key` if it is large, for `ttl_seconds` or, when counting it
        took `counted_in` seconds, for that divided by `COUNTING_SHARE` if longer."""
        if total < self.large:
            self._entries.pop(key, None)
            return
        ttl = max(self.ttl_seconds, counted_in / COUNTING_SHARE)
        self._entries[key] = (total, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
