"""Read models of canonical records: each record as a JSON-safe dict of its columns, paged."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ioc.records.totals import COUNTING_SHARE, LARGE_TOTAL, TTL_SECONDS

RecordItem = dict[str, Any]
"""One stored record: column name → value (dates and datetimes as ISO 8601 strings)."""


class Page(BaseModel):
    """One page of records and how many match in all."""

    items: list[RecordItem] = Field(description="The records of this page, in the asked order")
    total: int = Field(
        description="How many records match the query, across all pages. In a listing, a total "
        f"of {LARGE_TOTAL:,} or more is counted at most every {TTL_SECONDS:g} seconds (or, "
        f"where counting it takes longer than {TTL_SECONDS * COUNTING_SHARE:g} s, every "
        f"{1 / COUNTING_SHARE:g} times that); for as long again it is answered while counted "
        "anew, so it may lag the records stored since by twice as much"
    )
    limit: int
    offset: int
