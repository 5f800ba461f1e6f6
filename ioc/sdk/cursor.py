"""Incremental cursors: watermarks kept as ISO strings in the cursor's JSON."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ioc.sdk.batch import Cursor


def read_time(cursor: Cursor, key: str) -> datetime | None:
    """The aware datetime stored under `key`, or None (a naive or bad value counts as none)."""
    value = cursor.get(key)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def with_time(cursor: Cursor, key: str, moment: datetime | None) -> Cursor:
    """A copy of `cursor` with `key` set to `moment` (removed when None)."""
    updated = dict(cursor)
    if moment is None:
        updated.pop(key, None)
    else:
        updated[key] = moment.isoformat()
    return updated


def advance_watermark(
    previous: datetime | None, seen: Iterable[datetime], *, ceiling: datetime
) -> datetime | None:
    """The next watermark of an unsorted source: the latest time seen, never backwards and never
    past `ceiling` (the start of this poll), so records stamped while we read are read again."""
    latest = max(seen, default=None)
    if latest is None:
        return previous
    latest = min(latest, ceiling)
    if previous is not None and latest < previous:
        return previous
    return latest
