"""Connector for a province's published governance indices (PAR INDEX, SIPAS, PCI, PAPI…).

The province publishes one small JSON document (`GET {base_url}{path}`):

    {"province": {"code": "75", "name": "Đồng Nai"},
     "indices": [{"id": "PAR_INDEX-2024", "index": "PAR_INDEX", "year": 2024, "value": 88.3,
                  "published_at": "2025-05-06T09:00:00+07:00"}, …]}

Each entry becomes an `Observation` of the province for the year. The whole document comes back
on every request, so paging is done here: entries are read in (published_at, id) order and the
cursor is the key of the last one returned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from pydantic import Field, field_validator

from ioc.sdk import (
    Batch,
    ConnectorError,
    Cursor,
    HttpConfig,
    HttpConnector,
    Observation,
    PeriodKindName,
    RecordRejected,
)

INDEX_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,40}$")


def _published_at(item: Mapping[str, Any]) -> datetime:
    value = item.get("published_at")
    if not isinstance(value, str) or not value:
        raise RecordRejected("missing publication time (published_at)")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RecordRejected(f"published_at {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise RecordRejected(f"published_at {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def map_index(item: Mapping[str, Any], *, province_code: str) -> Observation:
    """One published index value as an `Observation` of the province for its year."""
    external_id = item.get("id")
    if not isinstance(external_id, str) or not external_id.strip():
        raise RecordRejected("missing entry id (id)")
    code = item.get("index")
    if not isinstance(code, str) or not INDEX_CODE.match(code):
        raise RecordRejected(f"index code {code!r} is not an upper-case code like PAR_INDEX")
    year = item.get("year")
    if not isinstance(year, int) or isinstance(year, bool) or not 1990 <= year <= 2100:
        raise RecordRejected(f"year {year!r} is not a year between 1990 and 2100")
    value = item.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise RecordRejected(f"value {value!r} of {code} {year} is not a number")
    return Observation(
        external_id=external_id.strip(),
        unit_code=province_code,
        source_updated_at=_published_at(item),
        metric=code.lower(),
        period_kind=PeriodKindName.YEAR,
        period_start=date(year, 1, 1),
        value=float(value),
    )


def _key(item: Mapping[str, Any]) -> tuple[datetime, str] | None:
    """The (published_at, id) position of an entry, or None when it cannot be read."""
    try:
        return (_published_at(item), str(item["id"]))
    except (RecordRejected, KeyError):
        return None


def _cursor_key(cursor: Mapping[str, Any]) -> tuple[datetime, str] | None:
    try:
        moment = datetime.fromisoformat(str(cursor["published_after"]))
    except (KeyError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return (moment, str(cursor.get("after_id") or ""))


class ParIndexConnector(HttpConnector):
    """Reads a province's published governance indices as yearly observations."""

    kind = "parindex"
    title = "Chỉ số quản trị công bố (PAR INDEX, SIPAS, PCI)"
    record_types = (Observation,)

    class Config(HttpConfig):
        """Where the published document is, and whose it is."""

        path: str = Field(default="/indices.json", description="Path of the JSON document")
        province_code: str = Field(default="75", pattern=r"^\d{2}$", description="GSO code")
        page_size: int = Field(default=100, ge=1, le=1000)

        @field_validator("path")
        @classmethod
        def _absolute_path(cls, value: str) -> str:
            return value if value.startswith("/") else f"/{value}"

    config: Config

    def parse(self, payload: Mapping[str, Any]) -> Observation:
        """Map one entry of the `indices` list."""
        return map_index(payload, province_code=self.config.province_code)

    async def poll(self, cursor: Cursor) -> Batch:
        """The next page of entries published after the cursor's (published_at, id)."""
        document = await self.get_json(self.config.path)
        if not isinstance(document, dict) or not isinstance(document.get("indices"), list):
            raise ConnectorError("the indices document has no 'indices' list")
        published_for = str((document.get("province") or {}).get("code", ""))
        if published_for and published_for != self.config.province_code:
            raise ConnectorError(
                f"the document is for province {published_for}, "
                f"not the configured {self.config.province_code}"
            )
        items = [
            item if isinstance(item, dict) else {"value": item} for item in document["indices"]
        ]
        after = _cursor_key(cursor)
        keyed = sorted(
            ((key, item) for item in items if (key := _key(item)) is not None),
            key=lambda pair: pair[0],
        )
        newer = [item for key, item in keyed if after is None or key > after]
        page = newer[: self.config.page_size]
        if after is None:
            # entries without a readable (published_at, id) cannot be positioned: they are
            # offered, to be rejected with their reason, once, on the first poll
            page = [item for item in items if _key(item) is None] + page
        last = next((key for item in reversed(page) if (key := _key(item)) is not None), None)
        if last is None:
            next_cursor = dict(cursor)
        else:
            next_cursor = {"published_after": last[0].isoformat(), "after_id": last[1]}
        return Batch.from_payloads(
            page,
            self.parse,
            cursor=next_cursor,
            has_more=len(newer) > self.config.page_size,
            id_field="id",
        )
