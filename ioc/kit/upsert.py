"""Portable INSERT … ON CONFLICT DO UPDATE for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

CHUNK_ROWS = 500
"""Rows per statement: keeps SQLite under its bound-parameter limit."""


async def upsert(
    session: AsyncSession,
    model: type[DeclarativeBase],
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Iterable[str],
    update_where: Any = None,
) -> None:
    """Insert rows, updating the non-key columns of rows whose `keys` already exist.

    `update_where(excluded)` may return a condition under which an existing row is updated
    (e.g. only when the incoming version is newer).
    """
    if not rows:
        return
    keys = tuple(keys)
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        statement = insert(table).values(list(chunk))
        updated = {name: statement.excluded[name] for name in chunk[0] if name not in keys}
        where: ColumnElement[bool] | None = (
            update_where(statement.excluded) if update_where is not None else None
        )
        if updated:
            statement = statement.on_conflict_do_update(
                index_elements=list(keys), set_=updated, where=where
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=list(keys))
        await session.execute(statement)
