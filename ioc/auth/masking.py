"""Citizens' personal data, masked for principals without the PERSONAL_DATA permission.

Where personal data lives in the canonical model: only feedback reports (phản ánh kiến nghị)
carry it — the reporter's name and phone, the address and exact coordinates of the problem, and
free text (description, status notes) in which citizens write names, phone numbers, e-mail and
ID card numbers. Dossiers carry no applicant and encounters no patient (the connectors drop
them). Raw payloads of rejected records may carry anything the upstream sent, so they are
masked by key and by pattern.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

COORDINATE_DECIMALS = 2
"""Coordinates keep two decimals (about 1 km): enough for a map of a commune, not a house."""

_PHONE = re.compile(r"(?<![\w+])(?:\+?84|0)(?:[\s.\-]?\d){8,10}(?!\w)")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_ID_NUMBER = re.compile(r"(?<!\d)(?:\d{12}|\d{9})(?!\d)")  # CCCD (12 digits), CMND (9)

FEEDBACK_PERSONAL = ("reporter_name", "reporter_phone", "address")
FEEDBACK_FREE_TEXT = ("description", "status_notes")
COORDINATES = ("latitude", "longitude")

_PERSONAL_KEY = re.compile(
    r"(first_?name|last_?name|full_?name|given|family|reporter|applicant|citizen|patient|"
    r"phone|mobile|email|e_mail|address|dia_?chi|ho_?ten|so_?dien_?thoai|cccd|cmnd|"
    r"identity|id_?number|birth|dob|ngay_?sinh|device_id|account_id|telecom)",
    re.IGNORECASE,
)
_FREE_TEXT_KEY = re.compile(
    r"(description|note|comment|content|text|message|noi_?dung|y_?kien|summary|title)",
    re.IGNORECASE,
)
_COORDINATE_KEY = re.compile(r"^(lat|latitude|long|lng|lon|longitude)$", re.IGNORECASE)


def mask_text(text: str, *, names: tuple[str, ...] = ()) -> str:
    """Free text with phone numbers, e-mail addresses, ID numbers and the given names hidden."""
    for name in names:
        if name and len(name) > 2:
            text = re.sub(re.escape(name), MASK, text, flags=re.IGNORECASE)
    text = _EMAIL.sub(MASK, text)
    text = _PHONE.sub(MASK, text)
    return _ID_NUMBER.sub(MASK, text)


def _round(value: Any) -> Any:
    return round(value, COORDINATE_DECIMALS) if isinstance(value, int | float) else value


def mask_record(record_type: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical record (as the records API returns it) without personal data."""
    masked = dict(item)
    if record_type != "feedback":
        return masked
    names = tuple(str(masked[key]) for key in ("reporter_name",) if masked.get(key))
    for key in FEEDBACK_PERSONAL:
        if masked.get(key):
            masked[key] = MASK
    for key in FEEDBACK_FREE_TEXT:
        if isinstance(masked.get(key), str):
            masked[key] = mask_text(masked[key], names=names)
    for key in COORDINATES:
        if key in masked:
            masked[key] = _round(masked[key])
    return masked


def mask_payload(value: Any, *, key: str = "") -> Any:
    """A raw upstream payload with personal-looking fields hidden, whatever its shape."""
    if isinstance(value, Mapping):
        return {k: mask_payload(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_payload(v, key=key) for v in value]
    if key and _COORDINATE_KEY.match(key):
        return _round(value)
    if key and _PERSONAL_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str) and _FREE_TEXT_KEY.search(key):
        return mask_text(value)
    return value
