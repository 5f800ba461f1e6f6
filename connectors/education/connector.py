"""Connector for a province's school data: enrolment, teachers and daily attendance (chuyên cần).

Two ways in, chosen by `source`: the education department's JSON API (`GET /api/v1/attendance`,
incremental by `updated_at` with page tokens), or the CSV day exports
(`attendance-YYYY-MM-DD.csv`) dropped in a local folder or listed at an HTTP address.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field, field_validator, model_validator

from ioc.sdk import (
    Batch,
    ConnectorError,
    ConnectorUnavailable,
    Cursor,
    HttpConfig,
    HttpConnector,
    RecordRejected,
    Rejected,
    SchoolDay,
    SchoolLevel,
    advance_watermark,
    describe_validation_error,
    raise_for_upstream,
    read_time,
    with_time,
)

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
ATTENDANCE_PATH = "/api/v1/attendance"
EXPORT_NAME = re.compile(r"^attendance-(\d{4}-\d{2}-\d{2})\.csv$")
CSV_COLUMNS = (
    "ma_truong", "ten_truong", "cap_hoc", "ma_xa", "ngay", "si_so", "co_mat", "so_giao_vien",
    "so_lop",
)  # fmt: skip
FILE_KEYS = ("_file", "_line", "_file_modified")
"""Keys the connector adds to a CSV row's payload, so `parse` can re-map a rejected row."""

LEVELS: dict[str, SchoolLevel] = {
    "mam_non": SchoolLevel.PRESCHOOL,  # mầm non
    "mn": SchoolLevel.PRESCHOOL,
    "mau_giao": SchoolLevel.PRESCHOOL,  # mẫu giáo: kindergarten, part of mầm non
    "nha_tre": SchoolLevel.PRESCHOOL,  # nhà trẻ: crèche
    "tieu_hoc": SchoolLevel.PRIMARY,
    "th": SchoolLevel.PRIMARY,
    "thcs": SchoolLevel.LOWER_SECONDARY,  # trung học cơ sở
    "trung_hoc_co_so": SchoolLevel.LOWER_SECONDARY,
    "thpt": SchoolLevel.UPPER_SECONDARY,  # trung học phổ thông
    "trung_hoc_pho_thong": SchoolLevel.UPPER_SECONDARY,
    **{level.value: level for level in SchoolLevel},
}
"""School levels as sources write them, after `_label_key` normalisation."""


@dataclass(frozen=True)
class Fields:
    """What a source calls each field: used to read rows and to word rejection reasons."""

    school_code: str
    school_name: str
    level: str
    commune: str
    day: str
    enrolled: str
    present: str
    teachers: str
    classes: str


API_FIELDS = Fields(
    "school_code", "school_name", "level", "commune_code", "date", "enrolled", "present",
    "teachers", "classes",
)  # fmt: skip
CSV_FIELDS = Fields(*CSV_COLUMNS)


# ---------------------------------------------------------------- mapping


def _label_key(text: str) -> str:
    """ "Trung học cơ sở" → "trung_hoc_co_so": no accents, lower case, underscores."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", plain).strip("_")


def _text(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    return "" if value is None else str(value).strip()


def _required_text(payload: Mapping[str, Any], name: str, meaning: str) -> str:
    value = _text(payload, name)
    if not value:
        raise RecordRejected(f"missing {meaning} ({name})")
    return value


def parse_level(payload: Mapping[str, Any], name: str) -> SchoolLevel:
    """The school level from a code (`thcs`) or a label (`Trung học cơ sở`)."""
    value = _required_text(payload, name, "school level")
    level = LEVELS.get(_label_key(value))
    if level is None:
        raise RecordRejected(f"unknown school level ({name}) {value!r}")
    return level


def parse_count(payload: Mapping[str, Any], name: str, meaning: str) -> int:
    """A whole, non-negative count; CSV cells arrive as text."""
    value = payload.get(name)
    if value is None or value == "":
        raise RecordRejected(f"missing {meaning} ({name})")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RecordRejected(f"{meaning} ({name}) {value!r} is not a whole number")
    text = str(value).strip()
    if not text.isdigit():
        raise RecordRejected(f"{meaning} ({name}) {value!r} is not a whole number")
    return int(text)


def parse_commune(payload: Mapping[str, Any], name: str) -> str:
    """A 5-digit commune code; spreadsheets drop leading zeros, so shorter codes are padded."""
    value = _required_text(payload, name, "commune code")
    if not value.isdigit() or len(value) > 5:
        raise RecordRejected(f"commune code ({name}) {value!r} is not a 5-digit code")
    return value.zfill(5)


def parse_day(payload: Mapping[str, Any], name: str) -> date:
    """A calendar day written yyyy-mm-dd or, as Vietnamese spreadsheets do, dd/mm/yyyy."""
    value = _required_text(payload, name, "date")
    try:
        if "/" in value:
            return datetime.strptime(value, "%d/%m/%Y").date()
        return date.fromisoformat(value)
    except ValueError:
        raise RecordRejected(
            f"date ({name}) {value!r} is not a valid yyyy-mm-dd or dd/mm/yyyy day"
        ) from None


def parse_instant(payload: Mapping[str, Any], name: str) -> datetime:
    """An ISO 8601 time with its offset, as an aware UTC datetime."""
    value = _required_text(payload, name, "update time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RecordRejected(f"update time ({name}) {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise RecordRejected(f"update time ({name}) {value!r} has no UTC offset")
    return moment.astimezone(UTC)


def _school_day(payload: Mapping[str, Any], names: Fields, updated_at: datetime) -> SchoolDay:
    school_code = _required_text(payload, names.school_code, "school code")
    day = parse_day(payload, names.day)
    enrolled = parse_count(payload, names.enrolled, "enrolled")
    present = parse_count(payload, names.present, "present")
    if present > enrolled:
        raise RecordRejected(
            f"present ({names.present}) {present} is more than enrolled ({names.enrolled}) "
            f"{enrolled}"
        )
    return SchoolDay(
        external_id=f"{school_code}:{day.isoformat()}",
        unit_code=parse_commune(payload, names.commune),
        source_updated_at=updated_at,
        school_code=school_code,
        school_name=_text(payload, names.school_name),
        level=parse_level(payload, names.level),
        day=day,
        enrolled=enrolled,
        present=present,
        teachers=parse_count(payload, names.teachers, "teachers"),
        classes=parse_count(payload, names.classes, "classes"),
    )


def map_api_row(payload: Mapping[str, Any]) -> SchoolDay:
    """One attendance item of the JSON API as a canonical `SchoolDay`."""
    return _school_day(payload, API_FIELDS, parse_instant(payload, "updated_at"))


def map_csv_row(payload: Mapping[str, Any]) -> SchoolDay:
    """One CSV export row (with the `_file`, `_line`, `_file_modified` the connector adds) as
    a canonical `SchoolDay`; the file's modification time is the row's update time."""
    where = f"{payload.get('_file') or 'CSV'} line {payload.get('_line') or '?'}"
    try:
        modified = parse_instant(payload, "_file_modified")
        return _school_day(payload, CSV_FIELDS, modified)
    except (RecordRejected, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise RecordRejected(f"{where}: {describe_validation_error(exc)}") from None


def reject_id(payload: Mapping[str, Any]) -> str | None:
    """The external id a rejected row would have had, when its school and day can be read."""
    names = CSV_FIELDS if "ma_truong" in payload else API_FIELDS
    code = _text(payload, names.school_code)
    try:
        day = parse_day(payload, names.day)
    except RecordRejected:
        return None
    return f"{code}:{day.isoformat()}" if code else None


def read_csv(content: bytes, *, name: str, modified: datetime) -> tuple[list[dict[str, Any]], str]:
    """The rows of an export as payloads, or no rows and the reason the file is unreadable."""
    try:
        text = content.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        return [], f"{name} is not UTF-8 text (byte {exc.start}); export it as CSV UTF-8"
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","  # Excel locales
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [_label_key(column) for column in next(reader, [])]
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        return [], f"{name} has no column {', '.join(missing)} (header: {first_line.strip()!r})"
    rows = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue  # blank lines at the end of a spreadsheet
        row: dict[str, Any] = dict(zip(header, cells, strict=False))
        if len(cells) < len(header) or any(cell.strip() for cell in cells[len(header) :]):
            row["_cells"] = f"{len(cells)} cells where the header has {len(header)}"
        row.update(_file=name, _line=reader.line_num, _file_modified=modified.isoformat())
        rows.append(row)
    return rows, ""


def _map_csv_row_checked(payload: Mapping[str, Any]) -> SchoolDay:
    if "_cells" in payload:
        raise RecordRejected(
            f"{payload.get('_file')} line {payload.get('_line')}: {payload['_cells']}"
        )
    return map_csv_row(payload)


# ---------------------------------------------------------------- export files


@dataclass(frozen=True)
class ExportEntry:
    """One export file as a folder or a listing shows it."""

    name: str
    fingerprint: str  # what identifies this version: size and mtime, or the ETag
    modified: datetime | None
    location: str  # a path or a URL


def _http_time(value: Any) -> datetime | None:
    """A listing's modification time: ISO 8601 or an HTTP date (nginx's JSON autoindex)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _folder_entries(location: str) -> list[ExportEntry]:
    folder = Path(location).expanduser()
    if not folder.is_dir():
        raise ConnectorUnavailable(f"csv_folder {folder} is not a folder")
    entries = []
    try:
        with os.scandir(folder) as scan:
            for item in scan:
                if EXPORT_NAME.match(item.name) and item.is_file():
                    stat = item.stat()
                    entries.append(
                        ExportEntry(
                            name=item.name,
                            fingerprint=f"{stat.st_size}:{stat.st_mtime_ns}",
                            modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                            location=item.path,
                        )
                    )
    except OSError as exc:
        raise ConnectorUnavailable(f"cannot list csv_folder {folder}: {exc}") from exc
    return entries


def _listing_entries(body: Any, base: str) -> list[ExportEntry]:
    files = body.get("files") if isinstance(body, dict) else body
    if not isinstance(files, list):
        raise ConnectorError(f"{base} did not answer a list of files")
    entries = []
    for item in files:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not EXPORT_NAME.match(name):
            continue
        modified = _http_time(item.get("last_modified") or item.get("mtime"))
        etag = item.get("etag")
        stamp = modified.isoformat() if modified else "?"
        fingerprint = str(etag) if etag else f"{item.get('size', '?')}:{stamp}"
        url = urljoin(base, str(item.get("url") or name))
        entries.append(ExportEntry(name, fingerprint, modified, url))
    return entries


def _order(entry: ExportEntry) -> tuple[bool, datetime, str]:
    return (entry.modified is None, entry.modified or datetime.max.replace(tzinfo=UTC), entry.name)


# ---------------------------------------------------------------- connector


class EducationConnector(HttpConnector):
    """Reads daily school attendance from the education department's API or its CSV exports."""

    kind = "education"
    title = "Giáo dục (chuyên cần, sĩ số)"
    record_types = (SchoolDay,)

    class Config(HttpConfig):
        """Where school data comes from: the JSON API, or CSV exports in a folder or at a URL."""

        source: Literal["api", "csv"] = Field(description="'api' (base_url) or 'csv' (csv_*)")
        base_url: str | None = Field(default=None, description="API root, for source 'api'")
        csv_folder: str | None = Field(
            default=None, description="Folder where attendance-YYYY-MM-DD.csv files are dropped"
        )
        csv_url: str | None = Field(
            default=None, description="HTTP address listing the export files as JSON"
        )
        page_size: int = Field(default=500, ge=1, le=1000, description="API rows per poll")
        settle_days: float = Field(
            default=10,
            gt=0,
            le=366,
            description="CSV files modified this long before the newest file read are settled",
        )

        @field_validator("base_url", "csv_url")
        @classmethod
        def _http_url(cls, value: str | None) -> str | None:
            if value is None:
                return None
            value = value.strip()
            if not value.startswith(("http://", "https://")):
                raise ValueError("must start with http:// or https://")
            return value.rstrip("/")

        @field_validator("csv_folder")
        @classmethod
        def _folder(cls, value: str | None) -> str | None:
            if value is not None and not value.strip():
                raise ValueError("must not be blank")
            return value.strip() if value is not None else None

        @model_validator(mode="after")
        def _one_location(self) -> EducationConnector.Config:
            if self.source == "api":
                if self.base_url is None:
                    raise ValueError("source 'api' needs base_url")
                if self.csv_folder is not None or self.csv_url is not None:
                    raise ValueError("source 'api' reads base_url only: remove csv_folder/csv_url")
                return self
            if self.base_url is not None:
                raise ValueError("source 'csv' reads csv_folder or csv_url: remove base_url")
            if (self.csv_folder is None) == (self.csv_url is None):
                raise ValueError("source 'csv' needs exactly one of csv_folder or csv_url")
            return self

    config: Config

    # ------------------------------------------------------------ shared

    def parse(self, payload: Mapping[str, Any]) -> SchoolDay:
        """Map a raw API item or CSV row payload (as stored with a reject) to a `SchoolDay`."""
        if "ma_truong" in payload or "_file" in payload:
            return _map_csv_row_checked(payload)
        return map_api_row(payload)

    async def poll(self, cursor: Cursor) -> Batch:
        """One API page, or one new or changed CSV export file."""
        if self.config.source == "api":
            return await self._poll_api(cursor)
        return await self._poll_csv(cursor)

    async def check(self) -> None:
        """Read one API row, or list the export files (URL or folder)."""
        if self.config.source == "api":
            await self._get_json(self._api_url(), {"limit": 1})
        else:
            await self._list_files()

    async def _get(self, url: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        try:
            return await self.client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise ConnectorUnavailable(
                f"{url} timed out after {self.config.timeout_seconds:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc

    async def _get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        response = await self._get(url, params)
        raise_for_upstream(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ConnectorError(f"{url} did not answer JSON: {response.text[:200]!r}") from exc

    # ------------------------------------------------------------ JSON API

    def _api_url(self) -> str:
        return f"{self.config.base_url}{ATTENDANCE_PATH}"

    async def _poll_api(self, cursor: Cursor) -> Batch:
        since = read_time(cursor, "since")
        token = cursor.get("page_token") if isinstance(cursor.get("page_token"), str) else None
        params: dict[str, Any] = {"limit": self.config.page_size}
        if token:
            params["page_token"] = token
        elif since is not None:
            params["since"] = since.isoformat()
        response = await self._get(self._api_url(), params)
        if token and response.status_code in (400, 410):  # a token the server no longer knows
            return await self._poll_api(with_time({}, "since", since))
        raise_for_upstream(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise ConnectorError(f"{self._api_url()} did not answer JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ConnectorError(f"{self._api_url()} answered without an 'items' list")
        items = [item if isinstance(item, dict) else {"value": item} for item in body["items"]]

        # the run's ceiling: the server's clock when the run began, so rows stamped while we
        # page are read again next time rather than skipped
        started = read_time(cursor, "ceiling") if token else None
        if started is None:
            started = _server_time(body) or datetime.now(UTC)
        seen = [t for item in items if (t := _updated_at(item)) is not None]
        high = read_time(cursor, "high") if token else None
        high = max([*seen, *([high] if high else [])], default=None)

        following = body.get("next_page_token")
        if isinstance(following, str) and following:
            next_cursor: Cursor = with_time({"page_token": following}, "since", since)
            next_cursor = with_time(with_time(next_cursor, "ceiling", started), "high", high)
        else:
            watermark = advance_watermark(since, [high] if high else [], ceiling=started)
            next_cursor = with_time({}, "since", watermark)
        batch = Batch.from_payloads(
            items, map_api_row, cursor=next_cursor, has_more=bool(following), id_field=None
        )
        return _with_reject_ids(batch)

    # ------------------------------------------------------------ CSV exports

    async def _list_files(self) -> list[ExportEntry]:
        if self.config.csv_url is not None:
            base = self.config.csv_url + "/"
            return _listing_entries(await self._get_json(base), base)
        return await asyncio.to_thread(_folder_entries, self.config.csv_folder or "")

    async def _read(self, entry: ExportEntry) -> tuple[bytes, datetime | None]:
        """The file's bytes and its modification time as the read saw it."""
        if self.config.csv_url is None:
            try:
                content = await asyncio.to_thread(Path(entry.location).read_bytes)
            except OSError as exc:
                raise ConnectorUnavailable(f"cannot read {entry.location}: {exc}") from exc
            return content, entry.modified
        response = await self._get(entry.location)
        raise_for_upstream(response)
        return response.content, _http_time(response.headers.get("Last-Modified"))

    async def _poll_csv(self, cursor: Cursor) -> Batch:
        entries = await self._list_files()
        settled = read_time(cursor, "settled")
        remembered = cursor.get("files") if isinstance(cursor.get("files"), dict) else {}
        live = [e for e in entries if not (settled and e.modified and e.modified < settled)]
        pending = sorted((e for e in live if remembered.get(e.name) != e.fingerprint), key=_order)
        if not pending:
            files = {e.name: remembered[e.name] for e in live if e.name in remembered}
            return Batch(cursor=_csv_cursor(files, settled), has_more=False)

        entry = pending[0]
        content, read_modified = await self._read(entry)
        modified = read_modified or entry.modified or datetime.now(UTC)
        now = datetime.now(UTC)
        if entry.modified is not None:  # never past the poll start, never backwards
            candidate = min(entry.modified, now) - timedelta(days=self.config.settle_days)
            settled = max(settled, candidate) if settled else candidate
        files = {
            e.name: remembered[e.name]
            for e in live
            if e.name in remembered and not (settled and e.modified and e.modified < settled)
        }
        files[entry.name] = entry.fingerprint  # what the listing showed: a change shows anew
        next_cursor = _csv_cursor(files, settled)

        rows, problem = read_csv(content, name=entry.name, modified=modified)
        if problem:
            payload = {"_file": entry.name, "_file_modified": modified.isoformat()}
            return Batch(
                rejected=[Rejected(external_id=None, reason=problem, payload=payload)],
                cursor=next_cursor,
                has_more=len(pending) > 1,
                fetched=1,
            )
        batch = Batch.from_payloads(
            rows, _map_csv_row_checked, cursor=next_cursor, has_more=len(pending) > 1
        )
        return _with_reject_ids(batch)


def _csv_cursor(files: dict[str, str], settled: datetime | None) -> Cursor:
    return with_time({"files": dict(sorted(files.items()))}, "settled", settled)


def _server_time(body: Mapping[str, Any]) -> datetime | None:
    value = body.get("server_time")
    try:
        moment = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment and moment.tzinfo else None


def _updated_at(item: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_instant(item, "updated_at")
    except RecordRejected:
        return None


def _with_reject_ids(batch: Batch) -> Batch:
    """Name each reject by the `school:date` id it would have had, when that can be read."""
    batch.rejected = [
        r.model_copy(update={"external_id": reject_id(r.payload)}) if r.external_id is None else r
        for r in batch.rejected
    ]
    return batch
