"""The education connector's mapping, config and CSV-folder mode, on recorded payloads."""

from __future__ import annotations

import json
import os
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.education.connector import EducationConnector, map_api_row
from ioc.sdk import Batch, ConnectorUnavailable, SchoolDay, SchoolLevel
from tests.connectors.education.support import poll_to_the_end

FIXTURES = Path(__file__).parent / "fixtures"
EXPORT = "attendance-2025-11-18.csv"
DROPPED_AT = datetime(2025, 11, 18, 11, 5, tzinfo=UTC)  # 18:05 local


def recorded_items() -> list[dict[str, Any]]:
    """Attendance items recorded from the JSON API."""
    return json.loads((FIXTURES / "attendance_page.json").read_text(encoding="utf-8"))["items"]


def drop(folder: Path, name: str, content: bytes, modified: datetime = DROPPED_AT) -> Path:
    """Write an export file into `folder` with the given modification time."""
    path = folder / name
    path.write_bytes(content)
    os.utime(path, (modified.timestamp(), modified.timestamp()))
    return path


def folder_connector(folder: Path) -> EducationConnector:
    return EducationConnector(EducationConnector.Config(source="csv", csv_folder=str(folder)))


def recorded_csv() -> bytes:
    return (FIXTURES / EXPORT).read_bytes()


# ---------------------------------------------------------------- JSON API items


def test_recorded_api_item_maps_to_exact_fields_in_utc() -> None:
    day = map_api_row(recorded_items()[0])

    assert day == SchoolDay(
        external_id="75100119:2025-11-10",
        unit_code="25308",
        source_updated_at=datetime(2025, 11, 11, 0, 59, 57, tzinfo=UTC),
        school_code="75100119",
        school_name="Trường Mầm non Vành Khuyên",
        level=SchoolLevel.PRESCHOOL,
        day=date(2025, 11, 10),
        enrolled=360,
        present=334,
        teachers=32,
        classes=15,
    )


def test_recorded_upper_secondary_item_maps_its_level() -> None:
    assert map_api_row(recorded_items()[2]).level is SchoolLevel.UPPER_SECONDARY


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"school_code": None}, "missing school code (school_code)", id="no-school"),
        pytest.param(
            {"present": 400},
            "present (present) 400 is more than enrolled (enrolled) 360",
            id="present-over-enrolled",
        ),
        pytest.param(
            {"date": "2025-19-11"},
            "date (date) '2025-19-11' is not a valid yyyy-mm-dd or dd/mm/yyyy day",
            id="month-19",
        ),
        pytest.param(
            {"commune_code": "Xã Thiện Hưng"},
            "commune code (commune_code) 'Xã Thiện Hưng' is not a 5-digit code",
            id="commune-name-for-code",
        ),
        pytest.param({"level": "dai_hoc"}, "unknown school level (level) 'dai_hoc'", id="level"),
        pytest.param(
            {"enrolled": "3x0"}, "enrolled (enrolled) '3x0' is not a whole number", id="enrolled"
        ),
        pytest.param({"teachers": -2}, "teachers (teachers) -2 is not a whole number", id="neg"),
        pytest.param(
            {"updated_at": "2025-11-11T07:59:57"},
            "update time (updated_at) '2025-11-11T07:59:57' has no UTC offset",
            id="naive-update-time",
        ),
    ],
)
def test_unusable_api_item_is_rejected_with_a_readable_reason(
    change: dict[str, Any], reason: str
) -> None:
    payload = recorded_items()[0] | change

    batch = Batch.from_payloads([payload], map_api_row, cursor={})

    assert batch.records == []
    assert [r.reason for r in batch.rejected] == [reason]


@pytest.mark.parametrize(
    ("written", "level"),
    [
        ("Mầm non", SchoolLevel.PRESCHOOL),
        ("mam_non", SchoolLevel.PRESCHOOL),
        ("Tiểu học", SchoolLevel.PRIMARY),
        ("Trung học cơ sở", SchoolLevel.LOWER_SECONDARY),
        ("THCS", SchoolLevel.LOWER_SECONDARY),
        ("TRUNG HỌC PHỔ THÔNG", SchoolLevel.UPPER_SECONDARY),
    ],
)
def test_levels_map_from_codes_and_vietnamese_labels(written: str, level: SchoolLevel) -> None:
    assert map_api_row(recorded_items()[0] | {"level": written}).level is level


def test_commune_code_that_lost_its_leading_zero_in_a_spreadsheet_is_padded() -> None:
    assert map_api_row(recorded_items()[0] | {"commune_code": "4"}).unit_code == "00004"


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"source": "api"}, id="api-without-base-url"),
        pytest.param({"source": "csv"}, id="csv-without-location"),
        pytest.param(
            {"source": "api", "base_url": "http://x", "csv_url": "http://y"}, id="api+csv"
        ),
        pytest.param({"source": "csv", "base_url": "http://x"}, id="csv-with-base-url"),
        pytest.param(
            {"source": "csv", "csv_folder": "/srv/drop", "csv_url": "http://y"}, id="two-csvs"
        ),
        pytest.param({"source": "csv", "csv_url": "ftp://y"}, id="not-http"),
        pytest.param({"source": "csv", "csv_folder": "  "}, id="blank-folder"),
        pytest.param({"source": "ftp", "base_url": "http://x"}, id="unknown-source"),
        pytest.param({"base_url": "http://x"}, id="no-source"),
    ],
)
def test_config_refuses_anything_but_one_location_matching_the_source(
    config: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        EducationConnector.Config.model_validate(config)


def test_config_accepts_each_source_with_its_one_location() -> None:
    api = EducationConnector.Config(source="api", base_url="http://x:8104/", api_key="s3cret")
    folder = EducationConnector.Config(source="csv", csv_folder="/srv/so-gddt/exports")
    url = EducationConnector.Config(source="csv", csv_url="https://so-gddt.example/exports/")

    assert (api.base_url, folder.csv_folder, url.csv_url) == (
        "http://x:8104",
        "/srv/so-gddt/exports",
        "https://so-gddt.example/exports",
    )
    assert "s3cret" not in api.model_dump_json()


# ---------------------------------------------------------------- CSV folder


async def test_recorded_export_in_a_folder_maps_rows_with_the_file_time(tmp_path: Path) -> None:
    drop(tmp_path, EXPORT, recorded_csv())

    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})

    assert batch.rejected == []
    assert batch.records[0] == SchoolDay(
        external_id="75100001:2025-11-18",
        unit_code="26068",
        source_updated_at=DROPPED_AT,
        school_code="75100001",
        school_name="Trường Mầm non Biên Hòa",
        level=SchoolLevel.PRESCHOOL,
        day=date(2025, 11, 18),
        enrolled=296,
        present=276,
        teachers=23,
        classes=11,
    )
    assert [r.level for r in batch.records] == list(SchoolLevel)


async def test_folder_poll_reads_one_file_at_a_time_oldest_first(tmp_path: Path) -> None:
    for day in (17, 14, 18):
        drop(
            tmp_path,
            f"attendance-2025-11-{day}.csv",
            recorded_csv(),
            datetime(2025, 11, day, 11, tzinfo=UTC),
        )
    drop(tmp_path, "notes.txt", b"not an export")

    batches = await poll_to_the_end(folder_connector(tmp_path), {})

    assert [b.has_more for b in batches] == [True, True, False]
    assert [b.records[0].source_updated_at.day for b in batches] == [14, 17, 18]
    assert list(batches[-1].cursor["files"]) == [
        "attendance-2025-11-14.csv",
        "attendance-2025-11-17.csv",
        "attendance-2025-11-18.csv",
    ]


async def test_unchanged_file_is_not_read_again_but_a_redropped_correction_is(
    tmp_path: Path,
) -> None:
    drop(tmp_path, EXPORT, recorded_csv())
    [first] = await poll_to_the_end(folder_connector(tmp_path), {})

    [again] = await poll_to_the_end(folder_connector(tmp_path), first.cursor)
    corrected = recorded_csv().replace(b",296,276,", b",296,281,")
    drop(tmp_path, EXPORT, corrected, datetime(2025, 11, 20, 2, tzinfo=UTC))
    [reread] = await poll_to_the_end(folder_connector(tmp_path), again.cursor)

    assert (again.fetched, again.records) == (0, [])
    assert again.cursor == first.cursor
    assert reread.records[0].present == 281
    assert reread.records[0].source_updated_at == datetime(2025, 11, 20, 2, tzinfo=UTC)


async def test_files_long_settled_before_the_newest_are_forgotten_by_the_cursor(
    tmp_path: Path,
) -> None:
    drop(
        tmp_path, "attendance-2025-10-01.csv", recorded_csv(), datetime(2025, 10, 1, 11, tzinfo=UTC)
    )
    drop(tmp_path, EXPORT, recorded_csv())

    batches = await poll_to_the_end(folder_connector(tmp_path), {})
    [after] = await poll_to_the_end(folder_connector(tmp_path), batches[-1].cursor)

    assert list(batches[-1].cursor["files"]) == [EXPORT]
    assert batches[-1].cursor["settled"] == "2025-11-08T11:05:00+00:00"
    assert after.fetched == 0


async def test_broken_csv_rows_are_rejected_with_file_and_line(tmp_path: Path) -> None:
    lines = recorded_csv().decode("utf-8-sig").split("\r\n")
    lines[1] = lines[1].replace(",296,276,", ",296,300,")
    lines[2] = lines[2].replace("18/11/2025", "11/18/2025")
    lines[3] = lines[3].split(",", 1)[1]  # a cell short, school code gone
    drop(tmp_path, EXPORT, "\r\n".join(lines).encode("utf-8-sig"))

    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})

    assert [(r.external_id, r.reason) for r in batch.rejected] == [
        (
            "75100001:2025-11-18",
            f"{EXPORT} line 2: present (co_mat) 300 is more than enrolled (si_so) 296",
        ),
        (
            None,
            f"{EXPORT} line 3: date (ngay) '11/18/2025' is not a valid yyyy-mm-dd or "
            "dd/mm/yyyy day",
        ),
        (None, f"{EXPORT} line 4: 8 cells where the header has 9"),
    ]
    assert [r.school_code for r in batch.records] == ["75400001"]
    assert batch.rejected[0].payload["_line"] == 2


async def test_rejected_csv_row_is_remapped_by_parse_once_fixed(tmp_path: Path) -> None:
    drop(tmp_path, EXPORT, recorded_csv().replace(b",296,276,", b",296,300,"))
    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})
    connector = folder_connector(tmp_path)

    fixed = connector.parse(batch.rejected[0].payload | {"co_mat": "276"})

    assert (fixed.external_id, fixed.present, fixed.source_updated_at) == (
        "75100001:2025-11-18",
        276,
        DROPPED_AT,
    )


async def test_semicolon_separated_excel_export_is_read(tmp_path: Path) -> None:
    text = recorded_csv().decode("utf-8-sig").replace(",", ";")
    drop(tmp_path, EXPORT, text.encode("utf-8-sig"))

    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})

    assert (len(batch.records), batch.rejected) == (4, [])


async def test_file_that_is_not_utf8_is_rejected_whole_and_not_read_again(tmp_path: Path) -> None:
    legacy = unicodedata.normalize("NFD", recorded_csv().decode("utf-8-sig"))
    drop(tmp_path, EXPORT, legacy.encode("cp1258", errors="replace"))  # Excel's Vietnamese ANSI

    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})
    [after] = await poll_to_the_end(folder_connector(tmp_path), batch.cursor)

    assert batch.records == []
    [reject] = batch.rejected
    assert reject.reason.startswith(f"{EXPORT} is not UTF-8 text")
    assert after.fetched == 0


async def test_file_without_the_expected_columns_is_rejected_whole(tmp_path: Path) -> None:
    drop(tmp_path, EXPORT, b"ma_truong,ngay,co_mat\r\n75100001,18/11/2025,276\r\n")

    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})

    assert [r.reason for r in batch.rejected] == [
        f"{EXPORT} has no column ten_truong, cap_hoc, ma_xa, si_so, so_giao_vien, so_lop "
        "(header: 'ma_truong,ngay,co_mat')"
    ]


async def test_empty_folder_gives_an_empty_batch(tmp_path: Path) -> None:
    [batch] = await poll_to_the_end(folder_connector(tmp_path), {})

    assert (batch.fetched, batch.has_more, batch.cursor) == (0, False, {"files": {}})


async def test_missing_folder_raises_connector_unavailable(tmp_path: Path) -> None:
    connector = folder_connector(tmp_path / "not-mounted")

    with pytest.raises(ConnectorUnavailable, match="is not a folder"):
        await connector.poll({})
    with pytest.raises(ConnectorUnavailable, match="is not a folder"):
        await connector.check()
