"""Connector for a province's one-stop-shop dossier system (một cửa điện tử).

Reads `GET /api/v1/dossiers`, a keyset-paged list of dossiers in the national portal's sync
field naming, ordered by (NgayCapNhat, MaHoSo); the cursor is the key of the last item read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field, SecretStr, field_validator

from ioc.sdk import (
    Batch,
    Channel,
    Connector,
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorUnavailable,
    Cursor,
    Dossier,
    DossierStatus,
    RecordRejected,
)

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
TIME_FORMAT = "%Y%m%d%H%M%S"
DOSSIERS_PATH = "api/v1/dossiers"

CHANNELS = {1: Channel.DIRECT, 2: Channel.ONLINE, 3: Channel.POSTAL}  # KenhThucHien
TIME_FIELDS = {
    "NgayTiepNhan": "receipt time",
    "NgayHenTra": "due date",
    "NgayKetThucXuLy": "processing end",
    "NgayTra": "return time",
    "NgayCapNhat": "update time",
}


# ---------------------------------------------------------------- mapping


def parse_local_time(payload: Mapping[str, Any], name: str) -> datetime | None:
    """A local "yyyyMMddHHmmss" field as an aware UTC datetime; None when absent."""
    value = payload.get(name)
    if value is None or value == "":
        return None
    text = str(value)
    try:
        if len(text) != 14 or not text.isdigit():
            raise ValueError
        local = datetime.strptime(text, TIME_FORMAT).replace(tzinfo=LOCAL)
    except ValueError:
        raise RecordRejected(
            f"{name} ({TIME_FIELDS.get(name, 'time')}) {value!r} is not a yyyyMMddHHmmss time"
        ) from None
    return local.astimezone(UTC)


def _required_time(payload: Mapping[str, Any], name: str) -> datetime:
    moment = parse_local_time(payload, name)
    if moment is None:
        raise RecordRejected(f"missing {TIME_FIELDS[name]} ({name})")
    return moment


def _required_text(payload: Mapping[str, Any], name: str, meaning: str) -> str:
    value = payload.get(name)
    if value is None or str(value).strip() == "":
        raise RecordRejected(f"missing {meaning} ({name})")
    return str(value).strip()


def _flag(payload: Mapping[str, Any], name: str) -> bool:
    value = payload.get(name)
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _code(payload: Mapping[str, Any], name: str) -> int:
    try:
        return int(payload[name])
    except (KeyError, TypeError, ValueError):
        return -1


def map_dossier(payload: Mapping[str, Any]) -> Dossier:
    """One upstream dossier (sync API field names) as a canonical `Dossier`."""
    external_id = payload.get("MaHoSo")
    if external_id is None or str(external_id).strip() == "":
        raise RecordRejected("missing dossier id (MaHoSo)")
    channel = CHANNELS.get(_code(payload, "KenhThucHien"))
    if channel is None:
        raise RecordRejected(f"unknown channel (KenhThucHien) {payload.get('KenhThucHien')!r}")
    try:
        status = DossierStatus(_code(payload, "TrangThaiHoSo"))
    except ValueError:
        raise RecordRejected(
            f"unknown status (TrangThaiHoSo) {payload.get('TrangThaiHoSo')!r}"
        ) from None
    return Dossier(
        external_id=str(external_id).strip(),
        unit_code=_required_text(payload, "MaDiaBan", "commune code"),
        source_updated_at=_required_time(payload, "NgayCapNhat"),
        procedure_code=_required_text(payload, "MaTTHC", "procedure code"),
        procedure_name=str(payload.get("TenTTHC") or ""),
        field_code=_required_text(payload, "MaLinhVuc", "field code"),
        field_name=str(payload.get("TenLinhVuc") or ""),
        agency_code=str(payload.get("DonViXuLy") or ""),
        agency_name=str(payload.get("TenDonViXuLy") or ""),
        channel=channel,
        status=status,
        received_at=_required_time(payload, "NgayTiepNhan"),
        due_at=parse_local_time(payload, "NgayHenTra"),
        resolved_at=parse_local_time(payload, "NgayKetThucXuLy"),
        returned_at=parse_local_time(payload, "NgayTra"),
        paid_online=_flag(payload, "DuocThanhToanTrucTuyen"),
        synced_to_portal=_flag(payload, "DongBoDVCQG"),
        apology_issued=_flag(payload, "CoPhieuXinLoi"),
    )


# ---------------------------------------------------------------- cursor


def _cursor_key(cursor: Mapping[str, Any]) -> tuple[datetime, str] | None:
    try:
        moment = datetime.fromisoformat(str(cursor["updated_after"]))
    except (KeyError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return (moment, str(cursor.get("after_id") or ""))


def _item_cursor(item: Mapping[str, Any]) -> Cursor | None:
    """The keyset position of an item, or None when its key cannot be read."""
    try:
        updated = parse_local_time(item, "NgayCapNhat")
    except RecordRejected:
        return None
    item_id = item.get("MaHoSo")
    if updated is None or not item_id:
        return None
    return {"updated_after": updated.astimezone(LOCAL).isoformat(), "after_id": str(item_id)}


def next_cursor(cursor: Cursor, items: list[Mapping[str, Any]], following: Any) -> Cursor:
    """The upstream's `next`, else the last readable item key, else `cursor`; never backwards."""
    candidate: Cursor | None = None
    if isinstance(following, Mapping) and following.get("updated_after"):
        candidate = {
            "updated_after": str(following["updated_after"]),
            "after_id": str(following.get("after_id") or ""),
        }
    else:
        for item in reversed(items):  # a malformed last item may lack its key
            if (candidate := _item_cursor(item)) is not None:
                break
    new_key = _cursor_key(candidate) if candidate is not None else None
    old_key = _cursor_key(cursor)
    if candidate is None or new_key is None or (old_key is not None and new_key <= old_key):
        return dict(cursor)
    return candidate


# ---------------------------------------------------------------- connector


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class OnestopConnector(Connector):
    """Polls a one-stop-shop dossier system incrementally by update time."""

    kind = "onestop"
    title = "Một cửa điện tử (hồ sơ TTHC)"
    record_types = (Dossier,)

    class Config(Connector.Config):
        """Where the dossier system is and how much to read per poll."""

        base_url: str = Field(description="e.g. http://127.0.0.1:8101")
        page_size: int = Field(default=500, ge=1, le=1000)
        timeout_seconds: float = Field(default=10, gt=0, le=300)
        api_key: SecretStr | None = None

        @field_validator("base_url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            value = value.strip()
            if not value.startswith(("http://", "https://")):
                raise ValueError("base_url must start with http:// or https://")
            return value.rstrip("/") + "/"

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Accept": "application/json"}
            if self.config.api_key is not None:
                headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(
                base_url=self.config.base_url,
                headers=headers,
                timeout=self.config.timeout_seconds,
            )
        return self._client

    async def poll(self, cursor: Cursor) -> Batch:
        """Read one page of dossiers changed after `cursor`."""
        params: dict[str, str | int] = {"limit": self.config.page_size}
        if cursor.get("updated_after"):
            params["updated_after"] = str(cursor["updated_after"])
            if cursor.get("after_id"):
                params["after_id"] = str(cursor["after_id"])
        body = await self._get(params)
        items = [item if isinstance(item, dict) else {"value": item} for item in body["items"]]
        following = body.get("next")
        return Batch.from_payloads(
            items,
            map_dossier,
            cursor=next_cursor(cursor, items, following),
            has_more=following is not None,
            id_field="MaHoSo",
        )

    async def _get(self, params: Mapping[str, str | int]) -> dict[str, Any]:
        url = f"{self.config.base_url}{DOSSIERS_PATH}"
        try:
            response = await self._http().get(DOSSIERS_PATH, params=params)
        except httpx.TimeoutException as exc:
            raise ConnectorUnavailable(
                f"{url} timed out after {self.config.timeout_seconds:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
        status = response.status_code
        if status >= 500:
            raise ConnectorUnavailable(f"{url} answered HTTP {status}: {response.text[:200]}")
        if status in (401, 403):
            raise ConnectorAuthError(f"{url} refused our credentials (HTTP {status})")
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise ConnectorRateLimited(f"{url} asked us to slow down", retry_after=retry_after)
        if status >= 400:
            raise ConnectorError(f"{url} answered HTTP {status}: {response.text[:500]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ConnectorError(f"{url} did not answer JSON: {response.text[:200]!r}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ConnectorError(f"{url} answered without an 'items' list")
        return body

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
