"""A simulated school data service of the provincial education department (Sở Giáo dục và Đào
tạo), served over HTTP: schools, daily attendance (chuyên cần) as JSON, and CSV day exports.

Each school day's rows are generated lazily and deterministically from
`random.Random(f"{seed}:{day}")`: every school reports its day in the afternoon, and a few
correct the row later the same week (a new version with a new `updated_at`). What the service
shows at clock time t is each row's latest version at or before t.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import csv
import hashlib
import heapq
import io
import json
import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import PrivateAttr

from connectors.simkit import (
    Faults,
    SimClock,
    apply_faults,
    clock_start,
    control_router,
    error_response,
    isoformat_local,
    local_date,
)
from connectors.simkit import at_local as _at
from connectors.simkit import whole as _whole

from .catalog import LEVEL_LABELS, PROFILES, School, SchoolCalendar, build_schools

CSV_HEADER = (
    "ma_truong", "ten_truong", "cap_hoc", "ma_xa", "ngay", "si_so", "co_mat", "so_giao_vien",
    "so_lop",
)  # fmt: skip
EXPORT_NAME = re.compile(r"^attendance-(\d{4}-\d{2}-\d{2})\.csv$")
EXPORT_HOUR = 18  # the department's export job runs at 18:00 local time
REPORT_FROM, REPORT_MINUTES = 14, 210  # schools report between 14:00 and 17:30
Key = tuple[datetime, str, str]
"""The order of the attendance feed: (updated_at, school_code, date)."""


def _week_end(day: date) -> date:
    """The Saturday of `day`'s week: corrections come in by then."""
    return day + timedelta(days=5 - day.weekday()) if day.weekday() <= 5 else day


# ---------------------------------------------------------------- rows


@dataclass(slots=True)
class SimRow:
    """One school's attendance on one day: its versions as reported and corrected."""

    school: School
    day: date
    enrolled: int
    times: list[datetime]  # updated_at of each version: UTC, whole seconds, increasing
    presents: list[int]  # pupils present in each version

    def index_at(self, moment: datetime) -> int:
        """The version visible at `moment`, -1 before the school reported."""
        return bisect.bisect_right(self.times, moment) - 1

    def item(self, index: int) -> dict[str, Any]:
        """Version `index` as the JSON API serves it."""
        school = self.school
        return {
            "school_code": school.code,
            "school_name": school.name,
            "level": school.level.value,
            "commune_code": school.commune_code,
            "commune_name": school.commune_name,
            "date": self.day.isoformat(),
            "enrolled": self.enrolled,
            "present": self.presents[index],
            "teachers": school.teachers,
            "classes": school.classes,
            "version": index + 1,
            "updated_at": isoformat_local(self.times[index]),
        }

    def csv_row(self, index: int) -> dict[str, str]:
        """Version `index` as a row of the CSV export."""
        school = self.school
        return {
            "ma_truong": school.code,
            "ten_truong": school.name,
            "cap_hoc": LEVEL_LABELS[school.level],
            "ma_xa": school.commune_code,
            "ngay": self.day.strftime("%d/%m/%Y"),  # Vietnamese Excel writes day first
            "si_so": str(self.enrolled),
            "co_mat": str(self.presents[index]),
            "so_giao_vien": str(school.teachers),
            "so_lop": str(school.classes),
        }


class DayFactory:
    """Generates one school day's attendance rows from a seeded random stream."""

    RAIN_CHANCE: ClassVar[dict[int, float]] = {
        5: 0.35,
        6: 0.5,
        7: 0.55,
        8: 0.6,
        9: 0.6,
        10: 0.5,
        11: 0.3,
    }  # rainy season
    HEAVY_RAIN = 0.2  # of rainy days: a downpour that floods roads in the morning
    OUTBREAK_CHANCE = 0.025  # per commune and week; more in the Sep–Dec hand-foot-mouth season

    def __init__(self, *, schools: list[School], seed: int, correction_rate: float) -> None:
        self.schools = schools
        self.seed = seed
        self.correction_rate = correction_rate
        self.calendar = SchoolCalendar()
        self.regions = sorted({school.region for school in schools})
        self._outbreaks: dict[tuple[str, int, int], float] = {}
        self._enrolled: dict[tuple[str, int, int], int] = {}

    def day(self, day: date) -> list[SimRow]:
        """Every school's row for local `day` (none when schools are closed)."""
        if not self.calendar.is_open(day, saturday=True):
            return []
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        rain = {region: self._rain(rng, day) for region in self.regions}
        returning = self.calendar.after_break(day)
        rows = []
        for school in self.schools:
            if not self.calendar.is_open(day, saturday=school.saturday):
                continue
            rate = school.attendance - rain[school.region] - self.outbreak(school, day)
            rate -= (0.02 if returning else 0) + (0.01 if day.weekday() == 5 else 0)
            rate = min(1.0, max(0.5, rate + rng.gauss(0, 0.004)))
            enrolled = self.enrolled(school, day)
            spread = math.sqrt(enrolled * rate * (1 - rate))
            present = min(enrolled, max(0, round(enrolled * rate + rng.gauss(0, spread))))
            reported = _whole(
                _at(day, REPORT_FROM) + timedelta(minutes=REPORT_MINUTES) * rng.random()
            )
            times, presents = [reported], [present]
            if rng.random() < self.correction_rate:
                self._correct(rng, day, enrolled, times, presents)
            rows.append(SimRow(school, day, enrolled, times, presents))
        return rows

    def _rain(self, rng: random.Random, day: date) -> float:
        """The attendance dip rain causes in a region on `day`."""
        if rng.random() >= self.RAIN_CHANCE.get(day.month, 0.08):
            return 0.0
        if rng.random() < self.HEAVY_RAIN:
            return rng.uniform(0.03, 0.08)
        return rng.uniform(0.002, 0.012)

    def outbreak(self, school: School, day: date) -> float:
        """The attendance dip from a flu or hand-foot-mouth outbreak in the school's commune."""
        year, week, _ = day.isocalendar()
        key = (school.commune_code, year, week)
        if key not in self._outbreaks:
            dip = 0.0
            for back in (0, 1):  # an outbreak lasts one or two weeks
                rng = random.Random(f"{self.seed}:outbreak:{key[0]}:{year}-{week - back}")
                chance = self.OUTBREAK_CHANCE * (2 if day.month in (9, 10, 11, 12) else 1)
                started, severity, long = (
                    rng.random() < chance,
                    rng.uniform(0.04, 0.12),
                    rng.random(),
                )
                if started and (back == 0 or long < 0.5):
                    dip = max(dip, severity)
            self._outbreaks[key] = dip
        return self._outbreaks[key] * PROFILES[school.level].outbreak_sensitivity

    def enrolled(self, school: School, day: date) -> int:
        """Enrolment on `day`: the year's figure, moved a little each month by transfers."""
        key = (school.code, day.year, day.month)
        if key not in self._enrolled:
            rng = random.Random(f"{self.seed}:enrolled:{school.code}:{day.year}-{day.month}")
            self._enrolled[key] = max(1, school.enrolled + rng.randint(-3, 3))
        return self._enrolled[key]

    def _correct(
        self,
        rng: random.Random,
        day: date,
        enrolled: int,
        times: list[datetime],
        presents: list[int],
    ) -> None:
        """A later version the same week: late arrivals counted, or a miscount fixed."""
        when_day = day + timedelta(days=rng.randint(0, (_week_end(day) - day).days))
        when = _whole(_at(when_day, 7, 30) + timedelta(minutes=570) * rng.random())
        step = max(1, enrolled // 400) * rng.choice((1, 1, 2, 3, -1, -2))
        if when > times[-1] + timedelta(minutes=30):
            times.append(when)
            presents.append(min(enrolled, max(0, presents[-1] + step)))


# ---------------------------------------------------------------- malformed rows


def _date_written_otherwise(value: str) -> str:
    if "/" in value:  # 19/11/2025 → 45980: the cell exported as an Excel serial day number
        day = datetime.strptime(value, "%d/%m/%Y").date()
        return str((day - date(1899, 12, 30)).days)
    year, month, day = value.split("-")  # 2025-11-19 → 19-11-2025
    return f"{day}-{month}-{year}"


MALFORMATIONS: tuple[str, ...] = (
    "present above enrolled",
    "unknown commune code 99999",
    "date written another way: an Excel serial number in CSV, dd-mm-yyyy in JSON",
    "school code missing",
)
"""How malformed rows are broken, in rotation (JSON items and CSV rows alike)."""


def malform(item: dict[str, Any], kind: int, *, csv_row: bool) -> dict[str, Any]:
    """`item` broken the `kind`-th way of `MALFORMATIONS`."""
    kind %= len(MALFORMATIONS)
    if kind == 0:
        present, enrolled = ("co_mat", "si_so") if csv_row else ("present", "enrolled")
        value = int(item[enrolled]) + 12
        item[present] = str(value) if csv_row else value
    elif kind == 1:
        item["ma_xa" if csv_row else "commune_code"] = "99999"
    elif kind == 2:
        field = "ngay" if csv_row else "date"
        item[field] = _date_written_otherwise(str(item[field]))
    elif csv_row:
        item["ma_truong"] = ""
    else:
        item.pop("school_code", None)
    return item


class SurgeFaults(Faults):
    """The shared fault knobs, telling the simulator the moment `surge` changes."""

    _on_surge: Callable[[float], None] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "surge" and self._on_surge is not None:
            self._on_surge(self.surge)


# ---------------------------------------------------------------- the simulator


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One day's CSV export as generated at `generated_at`."""

    name: str
    day: date
    generated_at: datetime
    rows: list[dict[str, str]]
    content: bytes
    etag: str

    def listing(self) -> dict[str, Any]:
        """The file's entry in `GET /exports/`."""
        return {
            "name": self.name,
            "size": len(self.content),
            "last_modified": isoformat_local(self.generated_at),
            "etag": self.etag,
            "url": f"/exports/{self.name}",
        }


def render_csv(rows: list[dict[str, str]]) -> bytes:
    """Rows as an Excel-style CSV: UTF-8 with a BOM, CRLF line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_HEADER, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8-sig")


class Simulator:
    """The simulated school data service: clock, schools, lazily generated days, fault knobs."""

    def __init__(
        self,
        *,
        seed: int = 7,
        speed: float = 1.0,
        catch_up: bool = False,
        start: datetime | None = None,
        history_days: int = 30,
        province_code: int = 75,
        correction_rate: float = 0.08,
    ) -> None:
        start = clock_start(start, history_days=history_days, catch_up=catch_up)
        self.seed = seed
        self.schools = build_schools(province_code, seed)
        self.factory = DayFactory(schools=self.schools, seed=seed, correction_rate=correction_rate)
        self.clock = SimClock(start=start, speed=speed, catch_up=catch_up)
        self.faults = SurgeFaults()
        self.faults._on_surge = self._surge_changed
        self.first_day = local_date(start - timedelta(days=history_days))
        self._days: dict[date, list[SimRow]] = {}
        self._served: dict[date, list[SimRow]] = {}
        self._surges: list[tuple[datetime, float]] = []  # (from, factor), from the knob
        self._exports: dict[tuple[date, datetime], ExportFile] = {}
        self._malformed_served = 0

    def now(self) -> datetime:
        """The simulated time (UTC-aware)."""
        return self.clock.now()

    # -------------------------------------------------------------- surge

    def _surge_changed(self, factor: float) -> None:
        """Record a new surge factor: it applies to reports made from now on."""
        current = self._surges[-1][1] if self._surges else 1.0
        if factor != current:
            self._surges.append((self.now(), factor))
            self._served.clear()
            self._exports.clear()

    def _surge_at(self, moment: datetime) -> float:
        factor = 1.0
        for since, value in self._surges:
            if since <= moment:
                factor = value
        return factor

    def _with_surge(self, row: SimRow) -> SimRow | None:
        """A row as served under the surge knob: fewer schools report when it is below 1; above,
        the department asks for extra updates (báo cáo bổ sung) the same afternoon."""
        factor = self._surge_at(row.times[0])
        if factor == 1.0:
            return row
        rng = random.Random(f"{self.seed}:surge:{row.school.code}:{row.day.isoformat()}")
        if factor < 1.0:
            return row if rng.random() < factor else None
        extra = int(factor - 1) + (1 if rng.random() < (factor - 1) % 1 else 0)
        reported, cutoff = row.times[0], _at(row.day, EXPORT_HOUR) - timedelta(minutes=1)
        times, presents = [reported], [row.presents[0]]
        for number in range(1, extra + 1):
            when = _whole(reported + (cutoff - reported) * number / (extra + 1))
            if when > times[-1]:  # pupils sent home sick during the afternoon
                times.append(when)
                presents.append(max(0, presents[-1] - rng.randint(0, 2)))
        for when, present in zip(row.times[1:], row.presents[1:], strict=True):
            if when > times[-1]:
                times.append(when)
                presents.append(present)
        return SimRow(row.school, row.day, row.enrolled, times, presents)

    # -------------------------------------------------------------- rows

    def rows(self, day: date) -> list[SimRow]:
        """Every school's row for `day` as served (with the surge applied)."""
        if day not in self._served:
            if day not in self._days:
                self._days[day] = self.factory.day(day)
            served = (self._with_surge(row) for row in self._days[day])
            self._served[day] = [row for row in served if row is not None]
        return self._served[day]

    def _days_until(self, moment: datetime, *, updated_after: datetime | None) -> Iterator[date]:
        day, last = self.first_day, local_date(moment)
        if updated_after is not None:  # rows change only until the Saturday of their week
            day = max(day, local_date(updated_after) - timedelta(days=6))
        while day <= last:
            yield day
            day += timedelta(days=1)

    def page(
        self, moment: datetime, *, since: datetime | None, after: Key | None, limit: int
    ) -> list[tuple[Key, SimRow, int]]:
        """The first `limit` current versions at `moment` updated after `since`, past `after`."""
        lower = after[0] if after is not None else since
        found: list[tuple[Key, SimRow, int]] = []
        for day in self._days_until(moment, updated_after=lower):
            for row in self.rows(day):
                index = row.index_at(moment)
                if index < 0:
                    continue
                key = (row.times[index], row.school.code, day.isoformat())
                if (since is None or key[0] > since) and (after is None or key > after):
                    found.append((key, row, index))
        return heapq.nsmallest(limit, found, key=lambda entry: entry[0])

    def attendance_as_of(self, moment: datetime) -> list[dict[str, Any]]:
        """Ground truth: every row's version visible at `moment`, unmalformed, in feed order."""
        return [
            row.item(index)
            for _, row, index in self.page(moment, since=None, after=None, limit=10**9)
        ]

    def enrolled_today(self, school: School, moment: datetime) -> int:
        """A school's enrolment in the month of `moment`."""
        return self.factory.enrolled(school, local_date(moment))

    # -------------------------------------------------------------- exports

    def _generations(self, day: date) -> list[datetime]:
        """When the export of `day` was (re)generated: that evening, and on each evening of the
        week a row of `day` was corrected."""
        evenings = {_at(day, EXPORT_HOUR)}
        for row in self.rows(day):
            for when in row.times[1:]:
                evenings.add(_at(local_date(when), EXPORT_HOUR))
        return sorted(evenings)

    def export(self, day: date, moment: datetime) -> ExportFile | None:
        """The export of `day` as it stands at `moment`, or None before its first generation."""
        rows = self.rows(day)
        if not rows or day < self.first_day:
            return None
        generations = self._generations(day)
        index = bisect.bisect_right(generations, moment) - 1
        if index < 0:
            return None
        generated = generations[index]
        if (day, generated) not in self._exports:
            served = sorted(
                (
                    row.csv_row(row.index_at(generated))
                    for row in rows
                    if row.index_at(generated) >= 0
                ),
                key=lambda r: r["ma_truong"],
            )
            content = render_csv(served)
            etag = '"' + hashlib.sha256(content).hexdigest()[:20] + '"'
            name = f"attendance-{day.isoformat()}.csv"
            self._exports[(day, generated)] = ExportFile(
                name, day, generated, served, content, etag
            )
        return self._exports[(day, generated)]

    def exports(self, moment: datetime) -> list[ExportFile]:
        """Every export file available at `moment`, oldest day first."""
        found = []
        for day in self._days_until(moment, updated_after=None):
            file = self.export(day, moment)
            if file is not None:
                found.append(file)
        return found

    # -------------------------------------------------------------- faults

    def malform(self, item: dict[str, Any], *, csv_row: bool = False) -> dict[str, Any]:
        """Break `item` the next way in the rotation if malformed rows are still owed."""
        if self.faults.malformed <= 0:
            return item
        self.faults.malformed -= 1
        kind = self._malformed_served
        self._malformed_served += 1
        return malform(dict(item), kind, csv_row=csv_row)


# ---------------------------------------------------------------- HTTP


def encode_token(key: Key) -> str:
    """An opaque page token for the position `key`."""
    raw = json.dumps([key[0].isoformat(), key[1], key[2]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str) -> Key:
    """The position a page token stands for; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        moment, code, day = json.loads(raw)
        key = (datetime.fromisoformat(moment), str(code), str(day))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"page_token {token!r} is not a token this service issued") from exc
    if key[0].tzinfo is None:
        raise ValueError(f"page_token {token!r} is not a token this service issued")
    return key


def parse_since(value: str) -> datetime:
    """The `since` parameter: an ISO 8601 instant with an offset."""
    try:  # a "+" that was not percent-encoded arrives as a space
        moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise ValueError(f"since {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError("since needs a UTC offset, e.g. 2025-11-19T08:00:00+07:00")
    return moment


def create_app(
    *,
    seed: int = 7,
    speed: float = 1.0,
    catch_up: bool = False,
    start: datetime | None = None,
    history_days: int = 30,
    province_code: int = 75,
    correction_rate: float = 0.08,
    api_key: str | None = None,
) -> FastAPI:
    """The simulator as an ASGI app; `app.state.simulator` holds the `Simulator`."""
    simulator = Simulator(
        seed=seed,
        speed=speed,
        catch_up=catch_up,
        start=start,
        history_days=history_days,
        province_code=province_code,
        correction_rate=correction_rate,
    )
    app = FastAPI(title="School data service simulator (Sở Giáo dục và Đào tạo)")
    app.state.simulator = simulator
    app.include_router(control_router(simulator.clock, simulator.faults))

    async def refuse(request: Request) -> Response | None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return error_response(401, "missing or wrong API key")
        return await apply_faults(request, simulator.faults)

    @app.get("/api/v1/schools")
    async def list_schools(request: Request) -> Response:
        if (refused := await refuse(request)) is not None:
            return refused
        moment = simulator.now()
        month_start = _at(local_date(moment).replace(day=1), 7)
        updated = min(moment, month_start)
        items = [
            {
                "code": school.code,
                "name": school.name,
                "level": school.level.value,
                "commune_code": school.commune_code,
                "commune_name": school.commune_name,
                "enrolled": simulator.enrolled_today(school, moment),
                "classes": school.classes,
                "teachers": school.teachers,
                "saturday_classes": school.saturday,
                "updated_at": isoformat_local(updated),
            }
            for school in simulator.schools
        ]
        return JSONResponse({"items": items, "server_time": isoformat_local(moment)})

    @app.get("/api/v1/attendance")
    async def list_attendance(
        request: Request,
        since: str | None = Query(default=None, max_length=64),
        page_token: str | None = Query(default=None, max_length=512),
        limit: int = Query(default=200, ge=1, le=1000),
    ) -> Response:
        if (refused := await refuse(request)) is not None:
            return refused
        try:
            after = decode_token(page_token) if page_token else None
            since_moment = parse_since(since) if since else None
        except ValueError as exc:
            return error_response(400, str(exc))
        moment = simulator.now()
        page = simulator.page(moment, since=since_moment, after=after, limit=limit + 1)
        following = encode_token(page[limit - 1][0]) if len(page) > limit else None
        items = [simulator.malform(row.item(index)) for _, row, index in page[:limit]]
        return JSONResponse(
            {"items": items, "next_page_token": following, "server_time": isoformat_local(moment)}
        )

    @app.get("/exports/")
    async def list_exports(request: Request) -> Response:
        if (refused := await refuse(request)) is not None:
            return refused
        moment = simulator.now()
        files = [file.listing() for file in simulator.exports(moment)]
        return JSONResponse({"files": files, "server_time": isoformat_local(moment)})

    @app.get("/exports/{name}")
    async def read_export(request: Request, name: str) -> Response:
        if (refused := await refuse(request)) is not None:
            return refused
        match = EXPORT_NAME.match(name)
        try:
            day = date.fromisoformat(match.group(1)) if match else None
        except ValueError:
            day = None
        file = simulator.export(day, simulator.now()) if day is not None else None
        if file is None:
            return error_response(404, f"no export named {name!r}")
        headers = {
            "ETag": file.etag,
            "Last-Modified": format_datetime(file.generated_at, usegmt=True),
        }
        if request.headers.get("if-none-match") == file.etag:
            return Response(status_code=304, headers=headers)
        content = file.content
        if simulator.faults.malformed > 0:
            content = render_csv([simulator.malform(row, csv_row=True) for row in file.rows])
        return Response(content, media_type="text/csv; charset=utf-8", headers=headers)

    return app
