"""Reading canonical records: filter by unit, period, fields and text; sort and page.

This is where a leader lands after drilling down from a KPI ("the late land dossiers of one
commune in March"). The KPI engine reuses `records_select` and `extra_conditions` to list exactly
the records behind one KPI cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, Date, Select, String, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from ioc.db import SQLITE_CASEFOLD, casefold
from ioc.records.models import RecordColumns
from ioc.records.schemas import Page, RecordItem
from ioc.records.stores import STORES
from ioc.records.totals import TotalsCache
from ioc.units.models import AdminUnit

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class UnknownRecordType(LookupError):
    """The record type is not one of the stored canonical types."""


class InvalidRecordQuery(ValueError):
    """A record query asks for something its record type does not have or cannot mean."""


class UnknownUnit(InvalidRecordQuery):
    """The query's unit code is not a stored administrative unit."""


@dataclass(frozen=True)
class Browsing:
    """What of a record type can be queried beyond its date columns: filters and searched text."""

    time_column: str
    """The date column a time window applies to unless the query names another."""
    filters: tuple[str, ...]
    """Columns accepting equality filters (one or several values)."""
    search: tuple[str, ...]
    """Columns the free-text `q` looks in."""


BROWSING: dict[str, Browsing] = {
    "dossier": Browsing(
        time_column="received_date",
        filters=("field_code", "agency_code", "procedure_code", "channel", "status"),
        search=("external_id", "procedure_name", "field_name", "agency_name"),
    ),
    "feedback": Browsing(
        time_column="requested_date",
        filters=("service_code", "category", "agency", "status"),
        search=("external_id", "service_name", "category", "description", "address"),
    ),
    "encounter": Browsing(
        time_column="start_date",
        filters=("facility_code", "encounter_class", "status"),
        search=("external_id", "facility_name"),
    ),
    "bed_census": Browsing(
        time_column="measured_date",
        filters=("facility_code",),
        search=("external_id", "facility_name"),
    ),
    "school_day": Browsing(
        time_column="day",
        filters=("school_code", "level"),
        search=("external_id", "school_name"),
    ),
    "observation": Browsing(
        time_column="period_start",
        filters=("metric", "period_kind"),
        search=("external_id", "metric"),
    ),
}
"""How each stored record type (a key of `STORES`) can be queried."""


@dataclass(frozen=True)
class RecordQuery:
    """A validated question about one record type; constructing a bad one raises.

    `unit` is a unit code standing for itself and every unit below it (the province code means
    all its communes). `date_from`/`date_to` are local calendar days, both included, compared
    with `time_column` (the type's main date column by default). `filters` maps a filterable
    column to the values it may take. `sort` lists columns (or is one string of them separated
    by commas), `-` first for descending; the id breaks ties.
    """

    record_type: str
    unit: str | None = None
    time_column: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    filters: Mapping[str, Sequence[str | int]] = field(default_factory=dict)
    q: str | None = None
    sort: str | Sequence[str] = ()
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def __post_init__(self) -> None:
        browsing_of(self.record_type)
        dates = date_columns(self.record_type)
        if self.time_column is not None and self.time_column not in dates:
            raise InvalidRecordQuery(
                f"time column {self.time_column!r} is not a date column of {self.record_type}; "
                f"choose one of {_listing(dates)}"
            )
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise InvalidRecordQuery(
                f"date_from {self.date_from.isoformat()} is after date_to "
                f"{self.date_to.isoformat()}"
            )
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRecordQuery(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")
        if self.offset < 0:
            raise InvalidRecordQuery(f"offset must be 0 or more, not {self.offset}")
        self.filter_values()
        self.sort_columns()

    @property
    def model(self) -> type[RecordColumns]:
        """The table of the record type."""
        return STORES[self.record_type].model

    @property
    def browsing(self) -> Browsing:
        """What of the record type can be queried."""
        return BROWSING[self.record_type]

    @property
    def effective_time_column(self) -> str:
        """The date column the time window applies to."""
        return self.time_column or self.browsing.time_column

    def filter_values(self) -> dict[str, list[Any]]:
        """The filters with values converted to their column's type."""
        allowed = self.browsing.filters
        converted: dict[str, list[Any]] = {}
        for name, values in self.filters.items():
            if name not in allowed:
                raise InvalidRecordQuery(
                    f"unknown filter {name!r} for {self.record_type}; "
                    f"filters are {_listing(allowed)}"
                )
            if isinstance(values, str | int):
                values = [values]
            column = self.model.__table__.c[name]
            if values:
                converted[name] = [_convert(self.record_type, name, column, v) for v in values]
        return converted

    def match_key(self) -> tuple[Any, ...]:
        """What decides which records match (not their page or order): equal for two queries
        that match the same records."""
        filters = tuple(sorted((name, tuple(v)) for name, v in self.filter_values().items()))
        search = casefold(self.q.strip()) if self.q is not None and self.q.strip() else None
        window = (self.effective_time_column, self.date_from, self.date_to)
        return self.record_type, self.unit, window, filters, search

    def sort_columns(self) -> list[tuple[str, bool]]:
        """The sort as (column, descending) pairs, ending with the `id` tiebreak."""
        sortable = sortable_columns(self.record_type)
        keys = self.sort.split(",") if isinstance(self.sort, str) else self.sort
        pairs: list[tuple[str, bool]] = []
        for key in (k.strip() for k in keys if k.strip()):
            descending = key.startswith("-")
            name = key.removeprefix("-").removeprefix("+")
            if name not in sortable:
                raise InvalidRecordQuery(
                    f"cannot sort {self.record_type} by {name!r}; "
                    f"sortable columns are {_listing(sortable)}"
                )
            pairs.append((name, descending))
        if not pairs:
            pairs.append((self.effective_time_column, True))  # newest first
        if all(name != "id" for name, _ in pairs):
            pairs.append(("id", pairs[-1][1]))  # a total order, so pages never overlap
        return pairs


def browsing_of(record_type: str) -> Browsing:
    """What of a record type can be queried; raises `UnknownRecordType`."""
    try:
        return BROWSING[record_type]
    except KeyError:
        raise UnknownRecordType(
            f"unknown record type {record_type!r}; record types are {_listing(BROWSING)}"
        ) from None


def date_columns(record_type: str) -> tuple[str, ...]:
    """The local-date columns of a record type's table, which a time window can apply to."""
    table = STORES[record_type].model.__table__
    return tuple(c.name for c in table.columns if isinstance(c.type, Date))


def sortable_columns(record_type: str) -> tuple[str, ...]:
    """The columns of a record type's table that records can be sorted by (not JSON ones)."""
    table = STORES[record_type].model.__table__
    return tuple(c.name for c in table.columns if not isinstance(c.type, JSON))


def records_select(query: RecordQuery) -> Select[Any]:
    """The records matching `query`, unordered and unpaged; extend it with more `where`s."""
    model = query.model
    table = model.__table__
    statement = select(model)
    if query.unit is not None:
        statement = statement.where(model.unit_code.in_(units_under(query.unit)))
    time_column = table.c[query.effective_time_column]
    if query.date_from is not None:
        statement = statement.where(time_column >= query.date_from)
    if query.date_to is not None:
        statement = statement.where(time_column <= query.date_to)
    for name, values in query.filter_values().items():
        statement = statement.where(table.c[name].in_(values))
    if query.q is not None and query.q.strip():
        needle = casefold(query.q.strip())
        searched = [_CaseFold(table.c[name]) for name in query.browsing.search]
        statement = statement.where(
            or_(*(text.contains(needle, autoescape=True) for text in searched))
        )
    return statement


def units_under(unit_code: str) -> Select[tuple[str]]:
    """The codes of a unit and of every unit below it, at any depth."""
    tree = (
        select(AdminUnit.code).where(AdminUnit.code == unit_code).cte("units_under", recursive=True)
    )
    tree = tree.union_all(select(AdminUnit.code).where(AdminUnit.parent_code == tree.c.code))
    return select(tree.c.code)


def order_by_clauses(query: RecordQuery) -> list[ColumnElement[Any]]:
    """The ORDER BY of a query: its sort, NULLs last either way, then the id tiebreak.

    NULLS LAST only where a column may hold NULL (the databases' defaults differ): on a NOT
    NULL column it changes nothing but keeps PostgreSQL from reading an index backwards, and
    the default order (newest first) has an index to read (`ix_<table>_<date>_id`)."""
    table = query.model.__table__
    clauses: list[ColumnElement[Any]] = []
    for name, descending in query.sort_columns():
        column = table.c[name]
        ordered = column.desc() if descending else column.asc()
        clauses.append(ordered.nulls_last() if column.nullable else ordered)
    return clauses


async def query_records(
    session: AsyncSession,
    query: RecordQuery,
    *,
    extra_conditions: Sequence[ColumnElement[bool]] = (),
    totals: TotalsCache | None = None,
) -> Page:
    """One page of the records matching `query` and every `extra_conditions`, with the total;
    the total of a query without `extra_conditions` through `totals` when given (a large one
    remembered, and counted anew apart from the request once expired; one count at a time)."""
    if query.unit is not None and await session.get(AdminUnit, query.unit) is None:
        raise UnknownUnit(f"unknown unit code {query.unit!r}")
    statement = records_select(query).where(*extra_conditions)
    counting = select(func.count()).select_from(statement.subquery())

    async def count() -> int:
        return await session.scalar(counting) or 0

    async def count_apart() -> int:  # on its own connection, the request may be gone
        async with AsyncSession(session.bind) as apart:
            return await apart.scalar(counting) or 0

    if extra_conditions or totals is None:  # a drill-down's total is always exact
        total = await count()
    else:
        total = await totals.total(query.match_key(), count, count_apart=count_apart)
    rows = await session.scalars(
        statement.order_by(*order_by_clauses(query)).limit(query.limit).offset(query.offset)
    )
    return Page(
        items=[record_item(row) for row in rows],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )


def record_item(row: RecordColumns) -> RecordItem:
    """A stored record as a JSON-safe dict of its columns."""
    return {
        column.name: _json_safe(getattr(row, column.key))
        for column in row.__table__.columns  # type: ignore[attr-defined]
    }


# ---------------------------------------------------------------- text search


class _CaseFold(FunctionElement[str]):
    """Lower-cased text: lower() on PostgreSQL, the registered Python function on SQLite."""

    type = String()
    name = "casefold"
    inherit_cache = True


@compiles(_CaseFold)
def _casefold_default(element: _CaseFold, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(_CaseFold, "sqlite")
def _casefold_sqlite(element: _CaseFold, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_CASEFOLD}({compiler.process(element.clauses, **kw)})"


# ---------------------------------------------------------------- helpers


def _convert(record_type: str, name: str, column: Any, value: str | int) -> Any:
    """A filter value as its column's Python type."""
    if column.type.python_type is int:
        try:
            return int(value)
        except ValueError:
            raise InvalidRecordQuery(
                f"filter {name!r} of {record_type} takes whole numbers, not {value!r}"
            ) from None
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _listing(names: Sequence[str] | Mapping[str, Any]) -> str:
    return ", ".join(sorted(names))
