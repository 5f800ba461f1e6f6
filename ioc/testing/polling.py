"""Test helpers: poll to exhaustion, key record versions, spy on what a connector maps."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ioc.sdk import Batch, Connector, Cursor, Record, Rejected

DEFAULT_MAX_PAGES = 100
DEFAULT_POLL_TIMEOUT = 30.0

VersionKey = tuple[str, str, datetime]
"""What identifies one version of a record: (record_type, external_id, source_updated_at)."""


class PageBudgetExceeded(AssertionError):
    """Polling did not reach `has_more=False` within the page budget."""


class PollTimedOut(AssertionError):
    """One `poll()` call did not return within the allowed time."""


def version_key(record: Record) -> VersionKey:
    """The key of one version of a record: its type, its external id and its update time."""
    return (record.record_type, record.external_id, record.source_updated_at)


@dataclass
class Exhaustion:
    """Everything one walk from a cursor to `has_more=False` returned."""

    start: Cursor
    pages: list[Batch] = field(default_factory=list)

    @property
    def records(self) -> list[Record]:
        """Every record of every page, in the order they came."""
        return [record for page in self.pages for record in page.records]

    @property
    def rejected(self) -> list[Rejected]:
        """Every reject of every page, in the order they came."""
        return [reject for page in self.pages for reject in page.rejected]

    @property
    def cursor(self) -> Cursor:
        """The cursor after the last page (the start cursor when no page was read)."""
        return self.pages[-1].cursor if self.pages else self.start

    @property
    def cursors(self) -> list[Cursor]:
        """The start cursor followed by the cursor each page returned."""
        return [self.start, *(page.cursor for page in self.pages)]

    @property
    def versions(self) -> list[VersionKey]:
        """`version_key` of every record, in order."""
        return [version_key(record) for record in self.records]


async def poll_once(
    connector: Connector, cursor: Cursor, *, poll_timeout: float | None = DEFAULT_POLL_TIMEOUT
) -> Batch:
    """One `poll(cursor)` on a copy of the cursor; `PollTimedOut` after `poll_timeout` s."""
    deadline = asyncio.timeout(poll_timeout)
    try:
        async with deadline:
            batch = await connector.poll(copy.deepcopy(cursor))
    except TimeoutError as exc:
        if not deadline.expired():
            raise  # the connector's own timeout: not ours to rename
        raise PollTimedOut(
            f"{type(connector).__name__}.poll({json.dumps(cursor, default=str)}) did not "
            f"return within {poll_timeout:g}s"
        ) from exc
    if not isinstance(batch, Batch):
        raise AssertionError(
            f"{type(connector).__name__}.poll() returned {type(batch).__name__}, not a Batch"
        )
    return batch


async def poll_to_exhaustion(
    connector: Connector,
    cursor: Cursor | None = None,
    *,
    max_pages: int = DEFAULT_MAX_PAGES,
    poll_timeout: float | None = DEFAULT_POLL_TIMEOUT,
) -> Exhaustion:
    """Poll from `cursor` (default `{}`), following `has_more`, until a page says no more.

    Raises `PageBudgetExceeded` when `max_pages` pages did not get there, and `PollTimedOut`
    when one poll takes longer than `poll_timeout` seconds. Typed connector errors pass through.
    """
    walk = Exhaustion(start=dict(cursor or {}))
    current = walk.start
    while len(walk.pages) < max_pages:
        batch = await poll_once(connector, current, poll_timeout=poll_timeout)
        walk.pages.append(batch)
        if not batch.has_more:
            return walk
        current = batch.cursor
    raise PageBudgetExceeded(
        f"{type(connector).__name__} still had more after {max_pages} pages; last cursors: "
        + ", ".join(json.dumps(c, default=str) for c in walk.cursors[-3:])
    )


# ---------------------------------------------------------------- spying on the mapping


@dataclass(frozen=True)
class MappedPayload:
    """One raw payload a connector handed to `Batch.from_payloads`, and what it became."""

    payload: dict[str, Any]
    record: Record | None
    error: BaseException | None = None


@contextlib.contextmanager
def capture_payloads() -> Iterator[list[MappedPayload]]:
    """Record every payload mapped through `Batch.from_payloads` while the block runs.

    Yields a list that fills as the connector polls: each raw payload (deep-copied before the
    mapper saw it) with the record it became or the error that rejected it. Used to check that
    `parse(payload)` re-maps a payload exactly as `poll()` did. Connectors that do not map
    through `Batch.from_payloads` leave the list empty.
    """
    captured: list[MappedPayload] = []
    original = Batch.__dict__["from_payloads"]

    def spying(
        cls: type[Batch],
        payloads: Iterable[Mapping[str, Any]],
        mapper: Callable[[Mapping[str, Any]], Record],
        **options: Any,
    ) -> Batch:
        def watched(payload: Mapping[str, Any]) -> Record:
            raw = copy.deepcopy(dict(payload))
            try:
                record = mapper(payload)
            except Exception as exc:
                captured.append(MappedPayload(payload=raw, record=None, error=exc))
                raise
            captured.append(MappedPayload(payload=raw, record=record))
            return record

        return original.__func__(cls, payloads, watched, **options)

    Batch.from_payloads = classmethod(spying)  # type: ignore[method-assign, assignment]
    try:
        yield captured
    finally:
        Batch.from_payloads = original  # type: ignore[method-assign]
