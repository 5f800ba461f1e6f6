"""Fetch ahead while storing: a connector's next pages are read while the previous ones are being
stored, and the pages ready when a store begins are stored together in one transaction.

The fetcher runs the connector's `poll` page after page, each from the cursor of the page before
(not yet committed), into a `PageBuffer` bounded in records; the store takes every page ready, up
to a batch size, so a connector that is behind pays the per-transaction costs (KPI recompute,
incident rules, publishing, commit) once per batch instead of once per page, and one that is
caught up stores each page as soon as it arrives. Pages fetched ahead are only ever in memory:
the stored cursor moves with the data of the pages it covers, so a failed store or a crash drops
them and the next poll fetches them again from the committed cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from ioc.sdk import Batch, Connector, Cursor


def batch_size(batch: Batch) -> int:
    """What a page weighs in the buffer: its records and rejects (at least 1)."""
    return max(1, batch.fetched or len(batch.records) + len(batch.rejected))


class PageBuffer:
    """Pages fetched but not yet stored, in order, at most `limit` records (a larger page is let
    in alone); then the end of the poll, or the error that ended it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pages: deque[Batch] = deque()
        self._records = 0
        self._ended = False
        self._error: BaseException | None = None
        self._changed = asyncio.Condition()

    async def put(self, page: Batch) -> None:
        """Add a page, waiting while the buffer is full."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._pages or self._records < self.limit)
            self._pages.append(page)
            self._records += batch_size(page)
            self._changed.notify_all()

    async def end(self, error: BaseException | None = None) -> None:
        """No more pages: the poll is over, or failed with `error` after the pages buffered."""
        async with self._changed:
            self._ended, self._error = True, error
            self._changed.notify_all()

    async def take(self, limit: int) -> list[Batch]:
        """The pages ready, oldest first, up to `limit` records (at least one page); waits for
        one. After the last page: [] at the end, or the fetch's error raised."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._pages) or self._ended)
            taken: list[Batch] = []
            records = 0
            while self._pages and (not taken or records + batch_size(self._pages[0]) <= limit):
                page = self._pages.popleft()
                taken.append(page)
                records += batch_size(page)
            self._records -= records
            self._changed.notify_all()
            if not taken and self._error is not None:
                raise self._error
            return taken


def merge(pages: list[Batch]) -> Batch:
    """Consecutive pages as one batch: their records and rejects in order, the last page's
    cursor (which covers the pages before it)."""
    if len(pages) == 1:
        return pages[0]
    return Batch.model_construct(
        records=[record for page in pages for record in page.records],
        rejected=[rejected for page in pages for rejected in page.rejected],
        cursor=pages[-1].cursor,
        has_more=pages[-1].has_more,
        fetched=sum(page.fetched or len(page.records) + len(page.rejected) for page in pages),
    )


async def fetch_pages(
    connector: Connector,
    cursor: Cursor,
    buffer: PageBuffer,
    *,
    max_pages: int,
    page_seconds: float,
    on_page: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
) -> None:
    """Poll `connector` from `cursor` into `buffer` until a page says there is no more or
    `max_pages` were read; each page within `page_seconds`. The end, or the error that
    stopped it, goes into the buffer after the pages read before it."""
    try:
        for _ in range(max_pages):
            with on_page() if on_page is not None else contextlib.nullcontext():
                async with asyncio.timeout(page_seconds):
                    page = await connector.poll(cursor)
            await buffer.put(page)
            cursor = page.cursor
            if not page.has_more:
                break
    except Exception as exc:  # the store side raises it, after storing the pages before it
        await buffer.end(exc)
        return
    await buffer.end()
