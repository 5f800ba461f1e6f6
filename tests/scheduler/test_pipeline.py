"""Fetching ahead of the store: the page buffer, merging pages into one batch, and a fetch
that fails after some pages."""

from __future__ import annotations

import asyncio

import pytest

from ioc.scheduler.pipeline import PageBuffer, fetch_pages, merge
from ioc.sdk import Batch, Connector, ConnectorUnavailable, Cursor, Rejected
from tests.support.factories import make_dossier


def page(number: int, *, size: int = 3, has_more: bool = True) -> Batch:
    """Page `number`: `size` dossiers, and a cursor naming the page."""
    records = [make_dossier(external_id=f"P{number}-{i}") for i in range(size)]
    return Batch(records=records, cursor={"page": number}, has_more=has_more, fetched=size)


class PagedSource(Connector):
    """A connector plugin serving numbered pages from its cursor, failing at page `fail_at`."""

    kind = "paged-test"

    def __init__(self, *, pages: int, fail_at: int | None = None) -> None:
        super().__init__(Connector.Config())
        self.pages, self.fail_at = pages, fail_at
        self.cursors: list[Cursor] = []

    async def poll(self, cursor: Cursor) -> Batch:
        self.cursors.append(dict(cursor))
        number = int(cursor.get("page", 0)) + 1
        if number == self.fail_at:
            raise ConnectorUnavailable(f"page {number} is down")
        return page(number, has_more=number < self.pages)


async def test_take_returns_every_ready_page_up_to_the_limit_oldest_first() -> None:
    buffer = PageBuffer(limit=100)
    for number in (1, 2, 3):
        await buffer.put(page(number))
    taken = await buffer.take(7)
    assert [p.cursor for p in taken] == [{"page": 1}, {"page": 2}]
    assert [p.cursor for p in await buffer.take(7)] == [{"page": 3}]


async def test_a_page_larger_than_the_limit_is_taken_alone() -> None:
    buffer = PageBuffer(limit=100)
    await buffer.put(page(1, size=5))
    await buffer.put(page(2, size=5))
    assert [p.cursor for p in await buffer.take(2)] == [{"page": 1}]


async def test_put_waits_while_the_buffer_holds_its_limit_of_records() -> None:
    buffer = PageBuffer(limit=3)
    await buffer.put(page(1, size=3))
    second = asyncio.create_task(buffer.put(page(2, size=3)))
    await asyncio.sleep(0.05)
    assert not second.done(), "a full buffer must hold the fetcher back"
    assert [p.cursor for p in await buffer.take(10)] == [{"page": 1}]
    await asyncio.wait_for(second, 1)
    assert [p.cursor for p in await buffer.take(10)] == [{"page": 2}]


async def test_merged_pages_keep_their_records_in_order_and_the_last_cursor() -> None:
    first = page(1).model_copy(
        update={"rejected": [Rejected(external_id="x", reason="bad", payload={})]}
    )
    merged = merge([first, page(2), page(3, has_more=False)])
    assert [r.external_id for r in merged.records][:4] == ["P1-0", "P1-1", "P1-2", "P2-0"]
    assert len(merged.records) == 9 and len(merged.rejected) == 1
    assert merged.cursor == {"page": 3} and merged.has_more is False
    assert merged.fetched == 9


async def test_fetcher_reads_each_page_from_the_cursor_of_the_one_before() -> None:
    source = PagedSource(pages=4)
    buffer = PageBuffer(limit=100)
    await fetch_pages(source, {}, buffer, max_pages=10, page_seconds=5)
    assert source.cursors == [{}, {"page": 1}, {"page": 2}, {"page": 3}]
    assert [p.cursor for p in await buffer.take(100)] == [{"page": n} for n in (1, 2, 3, 4)]
    assert await buffer.take(100) == [], "the end of the poll"


async def test_fetcher_stops_at_the_page_budget() -> None:
    source = PagedSource(pages=10)
    buffer = PageBuffer(limit=100)
    await fetch_pages(source, {}, buffer, max_pages=2, page_seconds=5)
    assert len(await buffer.take(100)) == 2 and await buffer.take(100) == []


async def test_a_fetch_error_comes_after_the_pages_fetched_before_it() -> None:
    source = PagedSource(pages=10, fail_at=3)
    buffer = PageBuffer(limit=100)
    await fetch_pages(source, {}, buffer, max_pages=10, page_seconds=5)
    assert [p.cursor for p in await buffer.take(100)] == [{"page": 1}, {"page": 2}]
    with pytest.raises(ConnectorUnavailable, match="page 3 is down"):
        await buffer.take(100)


async def test_a_page_slower_than_the_instance_timeout_ends_the_fetch_with_timeout() -> None:
    class Stalled(PagedSource):
        async def poll(self, cursor: Cursor) -> Batch:
            if cursor:
                await asyncio.sleep(5)
            return await super().poll(cursor)

    buffer = PageBuffer(limit=100)
    await fetch_pages(Stalled(pages=5), {}, buffer, max_pages=10, page_seconds=0.05)
    assert len(await buffer.take(100)) == 1
    with pytest.raises(TimeoutError):
        await buffer.take(100)
