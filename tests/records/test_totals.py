"""Large totals of record listings are remembered for a few seconds (longer when counting them
is slow), then answered for as long again while they are counted anew apart from the request;
small ones never; one count at a time per query."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ioc.records.totals import MAX_ENTRIES, TotalsCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_large_total_is_remembered_until_its_time_is_up() -> None:
    clock = Clock()
    totals = TotalsCache(large=100, ttl_seconds=10, clock=clock)
    totals.put("all dossiers", 150)
    clock.now = 9.9
    assert totals.get("all dossiers") == 150
    clock.now = 10.0
    assert totals.get("all dossiers") is None


def test_a_small_total_is_not_remembered_and_forgets_a_large_one_before_it() -> None:
    totals = TotalsCache(large=100, clock=Clock())
    totals.put("a commune", 99)
    assert totals.get("a commune") is None
    totals.put("a query", 500)
    totals.put("a query", 3)  # the records went (or a rebuild): counted again next time
    assert totals.get("a query") is None


def test_the_least_recently_used_query_goes_first_when_full() -> None:
    totals = TotalsCache(large=1, clock=Clock())
    for n in range(MAX_ENTRIES):
        totals.put(n, 10)
    assert totals.get(0) == 10  # used: now the most recent
    totals.put("one more", 10)
    assert totals.get(1) is None
    assert totals.get(0) == 10
    assert totals.get("one more") == 10


def test_a_total_slow_to_count_is_remembered_twenty_times_as_long_as_counting_took() -> None:
    clock = Clock()
    totals = TotalsCache(large=100, ttl_seconds=10, clock=clock)
    totals.put("all dossiers", 5_000_000, counted_in=2.0)
    clock.now = 39.9
    assert totals.get("all dossiers") == 5_000_000
    clock.now = 40.0
    assert totals.get("all dossiers") is None
    totals.put("all dossiers", 5_000_000, counted_in=0.1)  # quick: the plain 10 s
    clock.now = 50.0
    assert totals.get("all dossiers") is None


async def test_requests_asking_while_a_total_is_counted_wait_for_that_count() -> None:
    clock = Clock()
    totals = TotalsCache(large=100, clock=clock)
    counts = 0
    release = asyncio.Event()

    async def count() -> int:
        nonlocal counts
        counts += 1
        await release.wait()
        clock.now += 3.0  # counting took 3 s
        return 2_000_000

    asking = [asyncio.create_task(totals.total("all dossiers", count)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*asking) == [2_000_000] * 5
    assert counts == 1
    clock.now += 59.0  # remembered for 60 s after it was counted
    assert await totals.total("all dossiers", count) == 2_000_000
    assert counts == 1


async def test_when_the_request_counting_fails_the_waiting_ones_count_for_themselves() -> None:
    totals = TotalsCache(large=100, clock=Clock())
    first = True
    release = asyncio.Event()

    async def count() -> int:
        nonlocal first
        if first:
            first = False
            await release.wait()
            raise ConnectionError("the connection went")
        return 300

    failing = asyncio.create_task(totals.total("q", count))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(totals.total("q", count))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(ConnectionError):
        await failing
    assert await waiting == 300
    assert await totals.total("q", count) == 300  # remembered: no third count needed


class Counter:
    """A count of `total` records that waits for `release`, and how often it ran."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.runs = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self) -> int:
        self.runs += 1
        await self.release.wait()
        return self.total


async def test_an_expired_total_is_answered_at_once_while_counted_anew_apart() -> None:
    clock = Clock()
    totals = TotalsCache(large=100, ttl_seconds=10, clock=clock)
    totals.put("all dossiers", 150)
    in_request, apart = Counter(999), Counter(160)
    apart.release.clear()
    clock.now = 12.0

    answers = [await totals.total("all dossiers", in_request, count_apart=apart) for _ in range(3)]
    await asyncio.sleep(0)

    assert answers == [150] * 3 and apart.runs == 1 and in_request.runs == 0
    apart.release.set()
    await asyncio.sleep(0.01)
    assert totals.get("all dossiers") == 160  # remembered afresh from when it was counted
    clock.now = 21.9
    assert await totals.total("all dossiers", in_request, count_apart=apart) == 160
    assert (apart.runs, in_request.runs) == (1, 0)


async def test_a_total_past_its_stale_time_or_without_a_count_apart_is_counted_first() -> None:
    clock = Clock()
    totals = TotalsCache(large=100, ttl_seconds=10, clock=clock)
    totals.put("all dossiers", 150)
    clock.now = 12.0
    assert await totals.total("all dossiers", Counter(170)) == 170  # no way to count apart
    clock.now = 40.0  # 2 × 10 s after it was counted
    assert await totals.total("all dossiers", Counter(180), count_apart=Counter(0)) == 180


async def test_a_failed_count_apart_is_logged_and_the_stale_total_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    totals = TotalsCache(large=100, ttl_seconds=10, clock=clock)
    totals.put("q", 150)
    clock.now = 12.0

    async def failing() -> int:
        raise ConnectionError("the database went")

    with caplog.at_level(logging.WARNING, logger="ioc.records.totals"):
        assert await totals.total("q", Counter(999), count_apart=failing) == 150
        await asyncio.sleep(0.01)
    assert "counting a listing's total again failed" in caplog.text
    assert totals.stale("q") == 150


async def test_a_recount_cancelled_before_it_began_leaves_no_count_to_wait_for() -> None:
    clock = Clock()
    totals = TotalsCache(large=100, ttl_seconds=10, clock=clock)
    totals.put("q", 150)
    clock.now = 12.0
    assert await totals.total("q", Counter(999), count_apart=Counter(160)) == 150
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()  # the service stopping, say
    await asyncio.sleep(0)
    clock.now = 40.0
    assert await asyncio.wait_for(totals.total("q", Counter(170)), 1) == 170
