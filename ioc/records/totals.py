"""Totals of large record listings, counted at most once per few seconds.

A listing's total is an exact `count(*)` of the matching rows; over the whole of a busy table
(hundreds of thousands of dossiers, updated thousands of times a second) that is a scan of it,
80 ms and growing, for a figure that is stale as soon as it is read. A total at or above
`LARGE_TOTAL` is therefore remembered for `TTL_SECONDS` per process and per query (its type,
unit, time window, filters and search: not its page or sort), or for 20 times as long as
counting it took when that is longer (`COUNTING_SHARE`): re-counting one query then takes at
most 5 % of a process's time, however large the table grows. For as long again once expired,
a remembered total is still answered at once while it is counted again apart from the request
(when the caller can count apart from its session): no request waits for the recount of a
large total it asked for within that time. Requests that ask for a total while it is being
counted and have none to answer wait for that count instead of starting their own. Smaller
totals — a commune's, a day's, anything a person counts by eye — are counted on every request.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger(__name__)

Count = Callable[[], Awaitable[int]]


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
        self._entries: OrderedDict[Hashable, tuple[int, float, float]] = OrderedDict()
        """Totals by query, with when they expire and until when they may be answered stale."""
        self._counting: dict[Hashable, asyncio.Future[int]] = {}
        self._recounts: set[asyncio.Task[int]] = set()

    async def total(self, key: Hashable, count: Count, *, count_apart: Count | None = None) -> int:
        """The total of `key`: remembered; or expired within its stale time, answered while
        `count_apart` (not bound to the request) counts it again; or being counted by another
        request (waited for); or counted now by `count` and remembered if large."""
        remembered = self.get(key)
        if remembered is not None:
            return remembered
        pending = self._counting.get(key)
        stale = self.stale(key) if count_apart is not None else None
        if stale is not None and count_apart is not None:
            if pending is None:
                self._recount(key, count_apart)
            return stale
        if pending is not None:
            await asyncio.wait([pending])  # a request cancelled meanwhile does not cancel it
            if not pending.cancelled():
                return pending.result()
            return await count()  # the request counting it failed or went: count here
        return await self._count(key, count, self._begin(key))

    def _begin(self, key: Hashable) -> asyncio.Future[int]:
        """Make the requests asking for `key` from now on wait for the count about to run."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._counting[key] = future
        return future

    def _recount(self, key: Hashable, count_apart: Count) -> None:
        """Count `key`'s total again in a task of its own."""
        future = self._begin(key)
        recount = asyncio.ensure_future(self._count(key, count_apart, future))
        self._recounts.add(recount)

        def landed(task: asyncio.Task[int]) -> None:
            self._recounts.discard(task)
            if self._counting.get(key) is future:  # cancelled before it began
                del self._counting[key]
                future.cancel()
            failure = None if task.cancelled() else task.exception()
            if failure is not None:  # the stale total stays until its time is up
                log.warning("counting a listing's total again failed", exc_info=failure)

        recount.add_done_callback(landed)

    async def _count(self, key: Hashable, count: Count, future: asyncio.Future[int]) -> int:
        """Count `key`'s total for the requests waiting on `future`; remember it if large."""
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
        return self._read(key, stale=False)

    def stale(self, key: Hashable) -> int | None:
        """The total of `key` expired less than its remembered time ago, or None."""
        return self._read(key, stale=True)

    def _read(self, key: Hashable, *, stale: bool) -> int | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        total, expires_at, kept_until = entry
        now = self._clock()
        if now >= kept_until:
            del self._entries[key]
            return None
        if (now >= expires_at) != stale:
            return None
        self._entries.move_to_end(key)
        return total

    def put(self, key: Hashable, total: int, *, counted_in: float = 0.0) -> None:
        """Remember `total` for `key` if it is large, for `ttl_seconds` or, when counting it
        took `counted_in` seconds, for that divided by `COUNTING_SHARE` if longer; then as
        stale for as long again."""
        if total < self.large:
            self._entries.pop(key, None)
            return
        ttl = max(self.ttl_seconds, counted_in / COUNTING_SHARE)
        now = self._clock()
        self._entries[key] = (total, now + ttl, now + 2 * ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
