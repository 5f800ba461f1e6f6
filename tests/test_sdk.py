"""The connector SDK: importable on its own, records validated, mapping failures kept."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from pydantic import ValidationError

from ioc.sdk import Batch, Record, RecordRejected
from tests.support.factories import make_dossier


def test_sdk_imports_without_fastapi_or_a_database() -> None:
    code = (
        "import sys\n"
        "for name in ('fastapi', 'starlette', 'sqlalchemy', 'asyncpg', 'aiosqlite'):\n"
        "    sys.modules[name] = None\n"
        "import ioc.sdk\n"
        "print(ioc.sdk.Connector.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Connector"


def test_due_date_before_receipt_is_refused_with_a_readable_reason() -> None:
    received = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
    with pytest.raises(ValidationError, match="before the receipt date"):
        make_dossier(received_at=received, due_at=received - timedelta(days=1))


def test_naive_timestamps_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="returned_at: timestamp has no UTC offset"):
        make_dossier(returned_at=datetime(2026, 11, 2, 9, 0))


def test_a_plugin_s_record_type_refuses_naive_timestamps_in_its_own_fields() -> None:
    class Inspection(Record):
        record_type: ClassVar[str] = "inspection"
        inspected_at: datetime | None = None
        note: str = ""

    at = datetime(2026, 11, 2, 9, 0)
    common = {
        "external_id": "I1",
        "unit_code": "26068",
        "source_updated_at": at.replace(tzinfo=UTC),
    }
    assert Inspection(**common, inspected_at=at.replace(tzinfo=UTC)).inspected_at is not None
    with pytest.raises(ValidationError, match="inspected_at: timestamp has no UTC offset"):
        Inspection(**common, inspected_at=at)


def test_from_payloads_keeps_each_failed_mapping_as_rejected_with_its_reason() -> None:
    def mapper(payload: dict) -> object:
        if "id" not in payload:
            raise RecordRejected("missing dossier id")
        return make_dossier(external_id=payload["id"])

    batch = Batch.from_payloads(
        [{"id": "A"}, {"x": 1}, {"id": "B"}], mapper, cursor={"after": "B"}, id_field="id"
    )
    assert [r.external_id for r in batch.records] == ["A", "B"]
    assert [(r.external_id, r.reason, r.payload) for r in batch.rejected] == [
        (None, "missing dossier id", {"x": 1})
    ]
    assert (batch.fetched, batch.cursor) == (3, {"after": "B"})
