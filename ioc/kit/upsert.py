"""Portable INSERT … ON CONFLICT DO UPDATE for SQLite and PostgreSQL.

On PostgreSQL, large row sets go through COPY into a session-local staging table and one
INSERT … SELECT … ON CONFLICT, which is an order of magnitude faster than multi-row VALUES;
small sets and SQLite use an executemany of one compiled statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import ColumnElement, column, select, table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import JSON

from ioc.db import driver_connection

COPY_THRESHOLD = 200
"""From this many rows on, PostgreSQL upserts stage the rows with COPY."""

UpdateWhere = Callable[[Any], ColumnElement[bool]]


async def upsert(
    session: AsyncSession,
    model: type[DeclarativeBase],
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Iterable[str],
    update_where: UpdateWhere | None = None,
) -> None:
    """Insert rows, updating the non-key columns of rows whose `keys` already exist.

    `update_where(excluded)` may return a condition under which an existing row is updated
    (e.g. only when the incoming version is newer). Every row must have the same keys.
    """
    if not rows:
        return
    keys = tuple(keys)
    names = list(rows[0])
    target = model.__table__
    if session.bind.dialect.name == "postgresql":
        if len(rows) >= COPY_THRESHOLD:
            await _copy_upsert(session, target, names, rows, keys, update_where)
            return
        statement = postgresql.insert(target)
    else:
        statement = sqlite.insert(target)
    await session.execute(_on_conflict(statement, names, keys, update_where), list(rows))


def _on_conflict(
    statement: Any, names: list[str], keys: tuple[str, ...], update_where: UpdateWhere | None
) -> Any:
    updated = {name: statement.excluded[name] for name in names if name not in keys}
    if not updated:
        return statement.on_conflict_do_nothing(index_elements=list(keys))
    where = update_where(statement.excluded) if update_where is not None else None
    return statement.on_conflict_do_update(index_elements=list(keys), set_=updated, where=where)


def _json_as_text(record: tuple[Any, ...], positions: list[int]) -> tuple[Any, ...]:
    values = list(record)
    for i in positions:
        values[i] = orjson.dumps(values[i]).decode()
    return tuple(values)


async def _copy_upsert(
    session: AsyncSession,
    target: Any,
    names: list[str],
    rows: Sequence[Mapping[str, Any]],
    keys: tuple[str, ...],
    update_where: UpdateWhere | None,
) -> None:
    staging = f"_staging_{target.name}"
    raw = await driver_connection(session)
    await raw.execute(
        f'CREATE TEMP TABLE IF NOT EXISTS "{staging}" '
        f'(LIKE "{target.name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
    )
    await raw.execute(f'TRUNCATE "{staging}"')
    values = itemgetter(*names)
    records = [values(row) for row in rows]
    json_at = [i for i, n in enumerate(names) if isinstance(target.c[n].type, JSON)]
    if json_at:  # asyncpg's COPY takes JSON as text
        records = [_json_as_text(record, json_at) for record in records]
    await raw.copy_records_to_table(staging, records=records, columns=names)
    source = table(staging, *(column(n) for n in names))
    statement = postgresql.insert(target).from_select(names, select(*source.c))
    await session.execute(_on_conflict(statement, names, keys, update_where))
