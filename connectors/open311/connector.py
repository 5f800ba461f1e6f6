"""Connector for a province's citizen-feedback system (phản ánh kiến nghị, PAKN) over Open311
GeoReport v2 (JSON).

GeoReport v2 has no "updated since" filter, so the connector reads in cycles: the open requests
(`status=open`, in 90-day chunks back to `open_lookback_days`), then the requests closed among
those made in the last `window_days` (in `chunk_days` chunks), then one older chunk of closed
requests in rotation (the sweep). Each poll reads one chunk; the cursor names the next one.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field, field_validator, model_validator
from vietnam_provinces import Province, ProvinceCode, Ward

from ioc.sdk import (
    Batch,
    ConnectorAuthError,
    ConnectorError,
    ConnectorUnavailable,
    Cursor,
    FeedbackReport,
    FeedbackStatus,
    HttpConfig,
    HttpConnector,
    RecordRejected,
    raise_for_upstream,
)

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
MAX_SPAN = timedelta(days=90)  # GeoReport v2: a start_date/end_date range spans at most 90 days
MIN_SPLIT = timedelta(minutes=1)  # a full answer over a shorter range cannot be split further
SWEEP_EPOCH = datetime(2000, 1, 1, tzinfo=LOCAL)  # sweep chunks sit on a fixed grid from here
GROUP_FIELD = "service_group"  # added to each payload from /services.json (see README)
STATUSES = {"open": FeedbackStatus.OPEN, "closed": FeedbackStatus.CLOSED}
Phase = Literal["open", "window", "sweep"]
PHASES: tuple[Phase, ...] = ("open", "window", "sweep")


# ---------------------------------------------------------------- communes from addresses

_TONE_FIXES = (
    {  # "hoà" (old style) and "hòa" (new style) name the same place
        f"o{old}": f"{new}a" for old, new in zip("àáảãạ", "òóỏõọ", strict=True)
    }
    | {f"o{old}": f"{new}e" for old, new in zip("èéẻẽẹ", "òóỏõọ", strict=True)}
    | {f"u{old}": f"{new}y" for old, new in zip("ỳýỷỹỵ", "ùúủũụ", strict=True)}
)
_ABBREVIATIONS = ((re.compile(r"\bp\.\s*"), "phường "), (re.compile(r"\bx\.\s*"), "xã "))


def normalise_place(text: str) -> str:
    """Lower-case NFC text with one tone-mark placement, common abbreviations spelled out."""
    text = unicodedata.normalize("NFC", text).casefold()
    for old, new in _TONE_FIXES.items():
        text = text.replace(old, new)
    for pattern, spelled in _ABBREVIATIONS:
        text = pattern.sub(spelled, text)
    return " ".join(text.split())


class CommuneIndex:
    """Finds the commune (xã, phường, đặc khu) an address names, among one province's."""

    def __init__(self, province_code: int) -> None:
        wards = list(Ward.iter_by_province(ProvinceCode(province_code)))
        if not wards:
            raise ValueError(f"province {province_code} has no communes in vietnam-provinces")
        self.province_name = Province.from_code(ProvinceCode(province_code)).name
        self.names = {f"{int(ward.code):05d}": ward.name for ward in wards}
        self._patterns = [
            (re.compile(rf"(?<!\w){re.escape(normalise_place(ward.name))}(?!\w)"), code)
            for code, ward in zip(self.names, wards, strict=True)
        ]

    def resolve(self, address: str) -> str | None:
        """The 5-digit code of the one commune the address names; None if it names none."""
        text = normalise_place(address)
        found = [
            (match.start(), match.end(), code)
            for pattern, code in self._patterns
            if (match := pattern.search(text))
        ]
        # "Xã Tân An" inside "Xã Tân An Hội" is not a second commune: keep the longest names
        outer = [
            hit
            for hit in found
            if not any(o[0] <= hit[0] and hit[1] <= o[1] and o != hit for o in found)
        ]
        codes = sorted({code for _, _, code in outer})
        if len(codes) > 1:
            named = ", ".join(self.names[code] for code in codes)
            raise RecordRejected(f"the address names more than one commune ({named}): {address!r}")
        return codes[0] if codes else None


@lru_cache(maxsize=8)
def commune_index(province_code: int) -> CommuneIndex:
    """The (immutable, shared) commune index of a province."""
    return CommuneIndex(province_code)


# ---------------------------------------------------------------- mapping


def parse_time(payload: Mapping[str, Any], name: str) -> datetime | None:
    """An ISO 8601 time with its offset as an aware UTC datetime; None when absent."""
    value = payload.get(name)
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise RecordRejected(f"{name} {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise RecordRejected(f"{name} {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    return "" if value is None else str(value).strip()


def _coordinate(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordRejected(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise RecordRejected(f"{name} {value!r} is not a number")
    return number


def unit_code_of(payload: Mapping[str, Any], communes: CommuneIndex) -> str:
    """The commune code: `ward_code` if sent, else the one commune the address names."""
    ward = payload.get("ward_code")
    if ward is not None and ward != "":
        code = f"{ward:05d}" if isinstance(ward, int) else str(ward).strip()
        if len(code) != 5 or not code.isdigit():
            raise RecordRejected(f"ward_code {ward!r} is not a 5-digit commune code")
        return code
    address = _text(payload, "address")
    if not address:
        raise RecordRejected("no ward_code and no address to find the commune in")
    code = communes.resolve(address)
    if code is None:
        raise RecordRejected(
            f"no ward_code, and the address names no commune of {communes.province_name}: "
            f"{address!r}"
        )
    return code


def map_request(payload: Mapping[str, Any], communes: CommuneIndex) -> FeedbackReport:
    """One GeoReport v2 service request as a canonical `FeedbackReport`."""
    external_id = _text(payload, "service_request_id")
    if not external_id:
        raise RecordRejected("missing service_request_id")
    raw_status = payload.get("status")
    status = STATUSES.get(str(raw_status).strip().lower()) if raw_status is not None else None
    if status is None:
        raise RecordRejected(f"unknown status {raw_status!r} (expected open or closed)")
    service_code = _text(payload, "service_code")
    if not service_code:
        raise RecordRejected("missing service_code")
    requested = parse_time(payload, "requested_datetime")
    if requested is None:
        raise RecordRejected("missing requested_datetime")
    updated = parse_time(payload, "updated_datetime")
    if status is FeedbackStatus.CLOSED and updated is None:
        raise RecordRejected("a closed request needs updated_datetime (its closing time)")
    return FeedbackReport(
        external_id=external_id,
        unit_code=unit_code_of(payload, communes),
        source_updated_at=updated or requested,
        service_code=service_code,
        service_name=_text(payload, "service_name"),
        category=_text(payload, GROUP_FIELD),
        status=status,
        status_notes=_text(payload, "status_notes"),
        description=_text(payload, "description"),
        agency=_text(payload, "agency_responsible"),
        requested_at=requested,
        expected_at=parse_time(payload, "expected_datetime"),
        closed_at=updated if status is FeedbackStatus.CLOSED else None,
        address=_text(payload, "address"),
        latitude=_coordinate(payload, "lat"),
        longitude=_coordinate(payload, "long"),
    )


def groups_of_services(services: list[Any]) -> dict[str, str]:
    """service_code → group, from a GeoReport v2 service list."""
    return {
        str(service["service_code"]): str(service.get("group") or "")
        for service in services
        if isinstance(service, dict) and service.get("service_code") is not None
    }


def newest_per_request(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One payload per service_request_id (the newest updated_datetime), in answer order."""
    kept: list[dict[str, Any]] = []
    where: dict[str, tuple[int, datetime | None]] = {}  # id → (position in kept, its update)
    for item in items:
        request_id = _text(item, "service_request_id")
        try:
            updated = parse_time(item, "updated_datetime")
        except RecordRejected:
            updated = None
        if not request_id or request_id not in where:
            if request_id:
                where[request_id] = (len(kept), updated)
            kept.append(item)
            continue
        position, seen = where[request_id]
        if updated is not None and (seen is None or updated > seen):
            kept[position] = item
            where[request_id] = (position, updated)
    return kept


# ---------------------------------------------------------------- the poll plan


@dataclass(frozen=True, slots=True)
class Chunk:
    """One poll's range: requests of `status` made in [start, end) (or [start, end])."""

    phase: Phase
    index: int
    start: datetime
    end: datetime
    status: str
    includes_end: bool = False


def sweep_cells(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut on a fixed grid of `size` from SWEEP_EPOCH, newest first."""
    cells = []
    low = SWEEP_EPOCH + size * math.floor((start - SWEEP_EPOCH) / size)
    while low < end:
        cells.append((max(low, start), min(low + size, end)))
        low += size
    return cells[::-1]


# ---------------------------------------------------------------- connector


class Open311Connector(HttpConnector):
    """Polls an Open311 GeoReport v2 feedback system: open requests, a window, and a sweep."""

    kind = "open311"
    title = "Phản ánh kiến nghị (Open311)"
    record_types = (FeedbackReport,)

    class Config(HttpConfig):
        """Where the GeoReport v2 endpoint is and which requests each cycle re-reads."""

        jurisdiction_id: str = Field(min_length=1, description="e.g. dongnai.gov.vn")
        window_days: int = Field(
            default=30, ge=1, le=90, description="closed requests made this recently: every cycle"
        )
        chunk_days: int = Field(
            default=7, ge=1, le=90, description="days of the window (and sweep) per poll"
        )
        open_lookback_days: int = Field(
            default=365, ge=1, le=3650, description="how far back open requests are read"
        )
        sweep: bool = Field(
            default=True, description="re-read one older chunk per cycle, to catch late closures"
        )
        max_results: int = Field(
            default=1000, ge=1, le=100_000, description="the upstream's cap on one answer"
        )
        province_code: int = Field(
            default=75, description="whose commune names addresses are matched against"
        )

        @field_validator("province_code")
        @classmethod
        def _known_province(cls, value: int) -> int:
            commune_index(value)  # raises ValueError for a province without communes
            return value

        @model_validator(mode="after")
        def _lookback_covers_window(self) -> Open311Connector.Config:
            if self.open_lookback_days < self.window_days:
                raise ValueError("open_lookback_days must be at least window_days")
            return self

    config: Config

    def __init__(self, config: Config, *, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(config, clock=clock)
        self._groups: dict[str, str] | None = None
        self.communes = commune_index(config.province_code)

    def headers(self) -> dict[str, str]:
        """GeoReport v2 sends the key as a query parameter, not a header."""
        return {"Accept": "application/json"}

    # ------------------------------------------------------------ plan

    def plan(self, anchor: datetime, cycle: int) -> list[Chunk]:
        """Every chunk of the cycle anchored at `anchor`, in reading order."""
        config = self.config
        chunks: list[Chunk] = []
        lookback = timedelta(days=config.open_lookback_days)
        for index in range(math.ceil(lookback / MAX_SPAN)):
            end = anchor - index * MAX_SPAN
            start = max(end - MAX_SPAN, anchor - lookback)
            chunks.append(Chunk("open", index, start, end, "open", includes_end=index == 0))
        window_start = anchor - timedelta(days=config.window_days)
        step = timedelta(days=config.chunk_days)
        start, index = window_start, 0
        while start < anchor:
            end = min(start + step, anchor)
            chunks.append(Chunk("window", index, start, end, "closed", includes_end=end == anchor))
            start, index = end, index + 1
        cells = sweep_cells(anchor - lookback, window_start, step) if config.sweep else []
        if cells:
            start, end = cells[cycle % len(cells)]
            chunks.append(Chunk("sweep", cycle % len(cells), start, end, "closed"))
        return chunks

    def _position(self, cursor: Cursor) -> tuple[int, datetime, list[Chunk], int]:
        """(cycle, anchor, plan, index of the chunk to read) for `cursor`; a new cycle if done."""
        cycle = cursor.get("cycle")
        cycle = cycle if isinstance(cycle, int) and cycle >= 0 else -1
        previous = _read_anchor(cursor.get("anchor"))
        if cycle >= 0 and previous is not None and cursor.get("phase") in PHASES:
            plan = self.plan(previous, cycle)
            for position, chunk in enumerate(plan):
                if (chunk.phase, chunk.index) == (cursor["phase"], cursor.get("chunk")):
                    return cycle, previous, plan, position
        now = self.clock().astimezone(UTC).replace(microsecond=0)
        anchor = max(now, previous) if previous is not None else now  # never backwards
        return cycle + 1, anchor, self.plan(anchor, cycle + 1), 0

    # ------------------------------------------------------------ poll

    async def poll(self, cursor: Cursor) -> Batch:
        """Read the chunk the cursor names (or start a cycle) and name the next one."""
        cycle, anchor, plan, position = self._position(cursor)
        if position == 0 or self._groups is None:
            self._groups = await self._service_groups()
        chunk = plan[position]
        items = newest_per_request(await self._read_chunk(chunk, chunk.start, chunk.end))
        payloads = [self._with_group(item) for item in items]
        following = plan[position + 1] if position + 1 < len(plan) else None
        next_cursor: Cursor = {
            "cycle": cycle,
            "anchor": anchor.astimezone(LOCAL).isoformat(),
            "phase": following.phase if following else "done",
            "chunk": following.index if following else 0,
        }
        return Batch.from_payloads(
            payloads,
            self.parse,
            cursor=next_cursor,
            has_more=following is not None,
            id_field="service_request_id",
        )

    def parse(self, payload: Mapping[str, Any]) -> FeedbackReport:
        """Map one raw request (as stored with a reject, group included) to a record."""
        return map_request(payload, self.communes)

    async def check(self) -> None:
        """Read the service list and the last hour's requests: reachability, key, jurisdiction."""
        await self._service_groups()
        now = self.clock()
        await self._requests(
            {"start_date": _format(now - timedelta(hours=1)), "end_date": _format(now)}
        )

    def _with_group(self, item: dict[str, Any]) -> dict[str, Any]:
        group = (self._groups or {}).get(_text(item, "service_code"))
        if group is None or item.get(GROUP_FIELD):
            return item
        return {**item, GROUP_FIELD: group}

    async def _read_chunk(
        self, chunk: Chunk, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """The requests of [start, end) in `chunk`, halving the range while answers hit the cap."""
        params = {"start_date": _format(start), "end_date": _format(end), "status": chunk.status}
        items = await self._requests(params)
        if len(items) >= self.config.max_results:
            if end - start <= MIN_SPLIT:
                raise ConnectorError(
                    f"{len(items)} requests made between {_format(start)} and {_format(end)}: "
                    f"the upstream's cap of {self.config.max_results} hides some"
                )
            middle = start + (end - start) / 2
            middle = middle.replace(microsecond=0)
            return await self._read_chunk(chunk, start, middle) + await self._read_chunk(
                chunk, middle, end
            )
        return [item for item in items if _belongs(item, chunk, start, end)]

    # ------------------------------------------------------------ HTTP

    async def _service_groups(self) -> dict[str, str]:
        return groups_of_services(await self._get("/services.json", {}))

    async def _requests(self, params: dict[str, str]) -> list[dict[str, Any]]:
        body = await self._get("/requests.json", params)
        return [item if isinstance(item, dict) else {"value": item} for item in body]

    async def _get(self, path: str, params: dict[str, str]) -> list[Any]:
        """GET a GeoReport v2 JSON array; faults become typed connector errors."""
        query = {"jurisdiction_id": self.config.jurisdiction_id, **params}
        if self.config.api_key is not None:
            query["api_key"] = self.config.api_key.get_secret_value()
        where = f"{self.config.base_url}{path}"
        try:
            response = await self.client.get(where, params=query)
        except httpx.TimeoutException as exc:
            raise ConnectorUnavailable(
                f"{where} timed out after {self.config.timeout_seconds:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(
                f"cannot reach {where}: {self._redact(str(exc)) or type(exc).__name__}"
            ) from exc
        status = response.status_code
        if 400 <= status < 500 and status != 429:
            description = self._redact(_error_description(response))
            if status in (401, 403):
                raise ConnectorAuthError(
                    f"{where} refused the api_key (HTTP {status}): {description}"
                )
            raise ConnectorError(f"{where} answered HTTP {status}: {description}")
        raise_for_upstream(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise ConnectorError(f"{where} did not answer JSON: {response.text[:200]!r}") from exc
        if not isinstance(body, list):
            raise ConnectorError(f"{where} answered {type(body).__name__}, not a JSON array")
        return body

    def _redact(self, text: str) -> str:
        if self.config.api_key is None:
            return text
        return text.replace(self.config.api_key.get_secret_value(), "***")


def _read_anchor(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _format(moment: datetime) -> str:
    return moment.astimezone(LOCAL).isoformat(timespec="seconds")


def _belongs(item: Mapping[str, Any], chunk: Chunk, start: datetime, end: datetime) -> bool:
    """Whether an answered item is this range's: end dates are inclusive upstream, ours not."""
    try:
        requested = parse_time(item, "requested_datetime")
    except RecordRejected:
        return True  # kept, to be rejected with its reason
    if requested is None:
        return True
    return start <= requested < end or (chunk.includes_end and end == chunk.end == requested)


def _error_description(response: httpx.Response) -> str:
    """The descriptions of a GeoReport v2 error array, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, list):
        parts = [
            str(error.get("description") or error.get("code"))
            for error in body
            if isinstance(error, dict)
        ]
        if parts:
            return "; ".join(parts)
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return response.text[:300]
