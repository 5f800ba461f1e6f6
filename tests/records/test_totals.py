"""Large totals of record listings are remembered for a few seconds; small ones never."""

from __future__ import annotations

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
