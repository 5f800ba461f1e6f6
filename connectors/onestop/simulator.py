"""A simulated provincial one-stop-shop (một cửa điện tử) dossier system, served over HTTP.

Dossiers are generated lazily and deterministically per local calendar day of receipt from
`random.Random(f"{seed}:{day}")`, so the stream is endless and stable across restarts. Each
dossier is a receipt version plus timed changes (processing, supplement, apology, processed,
returned); what the API serves at clock time t is each dossier's latest version at or before t.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from itertools import accumulate
from typing import Any, Literal
from zoneinfo import ZoneInfo

import holidays
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from vietnam_provinces import ProvinceCode, Ward

from .catalog import (
    COMMUNES_PER_LAND_BRANCH,
    DEPARTMENTS,
    FIELDS,
    LAND_REGISTRY_NUMBER,
    PROCEDURES,
    Level,
    Procedure,
)

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
_UTC_OFFSET = timedelta(hours=7)  # Asia/Ho_Chi_Minh has had no DST since 1975: generation is faster
TIME_FORMAT = "%Y%m%d%H%M%S"  # the sync API's yyyyMMddHHmmss, in local time
_LAST_ID = "\uffff"  # sorts after every MaHoSo: "updated_after" alone skips that whole second


def format_local(moment: datetime) -> str:
    """An aware datetime as the sync API's local "yyyyMMddHHmmss" string."""
    return moment.astimezone(LOCAL).strftime(TIME_FORMAT)


def isoformat_local(moment: datetime) -> str:
    """An aware datetime as ISO 8601 in local time with its +07:00 offset."""
    return moment.astimezone(LOCAL).isoformat()


def local_date(moment: datetime) -> date:
    """The Asia/Ho_Chi_Minh calendar day of an aware datetime."""
    return (moment.astimezone(UTC) + _UTC_OFFSET).date()


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    """UTC time of a local wall-clock time on `day`."""
    return datetime.combine(day, clock_time(hour, minute), UTC) - _UTC_OFFSET


def _whole(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


# ---------------------------------------------------------------- calendar and clock


class WorkCalendar:
    """Vietnamese working days: Monday to Friday except public holidays (make-up days ignored)."""

    def __init__(self) -> None:
        self._holidays = holidays.Vietnam()
        self._years: set[int] = set()
        self._ordinals: list[int] = []  # working days of the covered years, sorted
        self._working: set[int] = set()

    def _cover(self, year: int) -> None:
        wanted = {year - 1, year, year + 1} - self._years
        if not wanted:
            return
        for each in wanted:
            day = date(each, 1, 1)
            while day.year == each:
                if day.weekday() < 5 and day not in self._holidays:
                    self._working.add(day.toordinal())
                day += timedelta(days=1)
        self._years |= wanted
        self._ordinals = sorted(self._working)

    def is_holiday(self, day: date) -> bool:
        """A public holiday or substitute day off."""
        return day in self._holidays

    def is_working_day(self, day: date) -> bool:
        """A weekday that is not a holiday."""
        self._cover(day.year)
        return day.toordinal() in self._working

    def add_working_days(self, day: date, count: int) -> date:
        """The `count`-th working day after `day` (`day` itself, if working, for 0)."""
        if count == 0 and self.is_working_day(day):
            return day
        self._cover(day.year)
        index = bisect.bisect_right(self._ordinals, day.toordinal()) + max(count, 1) - 1
        if index >= len(self._ordinals):
            self._cover(day.year + 1)
            return self.add_working_days(day, count)
        return date.fromordinal(self._ordinals[index])

    def working_days(self, first: date, last: date) -> list[date]:
        """The working days from `first` to `last`, both included."""
        self._cover(first.year)
        self._cover(last.year)
        low = bisect.bisect_left(self._ordinals, first.toordinal())
        high = bisect.bisect_right(self._ordinals, last.toordinal())
        return [date.fromordinal(ordinal) for ordinal in self._ordinals[low:high]]


class SimClock:
    """Simulated time: start + real elapsed × speed + manual offset, capped in catch-up mode."""

    def __init__(self, *, start: datetime, speed: float, catch_up: bool) -> None:
        self.start = start
        self.speed = speed
        self.catch_up = catch_up
        self.offset = timedelta()
        self._origin = time.monotonic()

    def now(self) -> datetime:
        """The simulated time, never ahead of real time in catch-up mode."""
        elapsed = (time.monotonic() - self._origin) * self.speed
        if self.catch_up:  # compare before adding, so a huge speed cannot overflow datetime
            real_now = datetime.now(UTC)
            if elapsed >= (real_now - self.start - self.offset).total_seconds():
                return real_now
        return self.start + timedelta(seconds=elapsed) + self.offset

    def advance(self, seconds: float) -> None:
        """Jump forward by `seconds` of simulated time."""
        self.offset += timedelta(seconds=seconds)


# ---------------------------------------------------------------- dossiers


@dataclass(slots=True)
class SimDossier:
    """One generated dossier: its record at receipt and the timed changes that follow."""

    id: str
    base: dict[str, Any]
    times: list[datetime]  # when each version appeared: UTC, whole seconds, increasing
    changes: list[dict[str, Any]]  # what each version changed; the first is the receipt

    def index_at(self, moment: datetime) -> int:
        """The index of the version visible at `moment`, -1 before receipt."""
        return bisect.bisect_right(self.times, moment) - 1

    def version(self, index: int) -> dict[str, Any]:
        """The full record of version `index`, as the API serves it."""
        record = dict(self.base)
        for change in self.changes[: index + 1]:
            record.update(change)
        record["NgayCapNhat"] = self.times[index]
        for name, value in record.items():  # times are kept as datetimes until served
            if isinstance(value, datetime):
                record[name] = format_local(value)
        record["LichSuBoSung"] = [
            {name: format_local(moment) for name, moment in entry.items()}
            for entry in record["LichSuBoSung"]
        ]
        return record


@dataclass(frozen=True, slots=True)
class Commune:
    """A commune of the configured province and the agencies that serve it."""

    code: int
    name: str
    weight: float
    agency_code: str  # UBND xã
    agency_name: str
    land_branch_code: str
    land_branch_name: str


def _communes(province_code: int) -> list[Commune]:
    wards = list(Ward.iter_by_province(ProvinceCode(province_code)))
    if not wards:
        raise ValueError(f"province {province_code} has no communes in vietnam-provinces")
    communes = []
    for index, ward in enumerate(wards):
        first = wards[index - index % COMMUNES_PER_LAND_BRANCH].name
        area = first.removeprefix("Phường ").removeprefix("Xã ").removeprefix("Đặc khu ")
        branch = index // COMMUNES_PER_LAND_BRANCH + 1
        communes.append(
            Commune(
                code=int(ward.code),
                name=ward.name,
                weight=3.0 if ward.name.startswith("Phường") else 1.0,
                agency_code=f"{index + 1:03d}.00.99.H{province_code:02d}",
                agency_name=f"UBND {ward.name[0].lower()}{ward.name[1:]}",
                land_branch_code=f"000.{branch:02d}.{LAND_REGISTRY_NUMBER}.H{province_code:02d}",
                land_branch_name=f"Chi nhánh Văn phòng đăng ký đất đai khu vực {area}",
            )
        )
    return communes


class DossierFactory:
    """Generates one local day's dossiers from a seeded random stream."""

    WEEKDAY_FACTORS = (1.15, 1.0, 1.0, 0.95, 0.9, 0.08, 0.0)  # Monday … Sunday

    def __init__(self, *, province_code: int, seed: int, rate_per_day: int) -> None:
        self.province_code = province_code
        self.seed = seed
        self.rate_per_day = rate_per_day
        self.calendar = WorkCalendar()
        self.communes = _communes(province_code)
        self._commune_weights = list(accumulate(c.weight for c in self.communes))
        self._procedure_weights = list(accumulate(p.weight for p in PROCEDURES))

    def day(self, day: date) -> list[SimDossier]:
        """Every dossier received on local `day`, in order of receipt."""
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        factor = 0.0 if self.calendar.is_holiday(day) else self.WEEKDAY_FACTORS[day.weekday()]
        mean = self.rate_per_day * factor
        count = max(0, round(rng.gauss(mean, mean * 0.08))) if mean else 0
        saturday = day.weekday() == 5
        arrivals = sorted(self._arrival(rng, day, morning_only=saturday) for _ in range(count))
        numbers: dict[str, int] = {}
        return [self._dossier(rng, received, numbers) for received in arrivals]

    def _arrival(self, rng: random.Random, day: date, *, morning_only: bool) -> datetime:
        # office hours 7:30–11:30 and 13:00–17:00; Saturday desks open in the morning only
        if morning_only or rng.random() < 0.62:
            opens, minutes = _at(day, 7, 30), 240
        else:
            opens, minutes = _at(day, 13), 240
        return _whole(opens + timedelta(minutes=minutes * rng.random()))

    def _moment(self, rng: random.Random, day: date, *, after: datetime) -> datetime:
        """A random office-hours time on `day` later than `after`, else on a later working day."""
        while True:
            earliest = max(_at(day, 7, 30), after + timedelta(minutes=1))
            latest = _at(day, 17)
            if earliest < latest:
                return _whole(earliest + (latest - earliest) * rng.random())
            day = self.calendar.add_working_days(day, 1)

    def _due(self, received: datetime, working_days: int) -> datetime:
        """NgayHenTra: 17:00 on the N-th working day after receipt (same-day ones by 15:00)."""
        day = local_date(received)
        if working_days == 0 and received.astimezone(LOCAL).hour >= 15:
            working_days = 1
        return _at(self.calendar.add_working_days(day, working_days), 17)

    def _agency(self, procedure: Procedure, commune: Commune) -> tuple[str, str]:
        if procedure.level is Level.COMMUNE:
            return commune.agency_code, commune.agency_name
        if procedure.level is Level.LAND_BRANCH:
            return commune.land_branch_code, commune.land_branch_name
        department = DEPARTMENTS[procedure.department or ""]
        return f"000.00.{department.number:02d}.H{self.province_code:02d}", department.name

    def _dossier(
        self, rng: random.Random, received: datetime, numbers: dict[str, int]
    ) -> SimDossier:
        procedure = rng.choices(PROCEDURES, cum_weights=self._procedure_weights)[0]
        field = FIELDS[procedure.field]
        commune = rng.choices(self.communes, cum_weights=self._commune_weights)[0]
        agency_code, agency_name = self._agency(procedure, commune)
        numbers[agency_code] = number = numbers.get(agency_code, 0) + 1
        dossier_id = f"{agency_code}-{received.astimezone(LOCAL):%y%m%d}-{number:04d}"

        draw = rng.random()
        channel = 3 if draw < 0.02 else 2 if draw < 0.02 + 0.98 * procedure.online_share else 1
        due = self._due(received, procedure.working_days)
        paid_online = procedure.fee > 0 and rng.random() < (0.75 if channel == 2 else 0.12)
        base: dict[str, Any] = {
            "MaHoSo": dossier_id,
            "MaTTHC": procedure.code,
            "TenTTHC": procedure.name,
            "MaLinhVuc": field.code,
            "TenLinhVuc": field.name,
            "DonViXuLy": agency_code,
            "TenDonViXuLy": agency_name,
            "MaDiaBan": f"{commune.code:05d}",
            "TenDiaBan": commune.name,
            "KenhThucHien": channel,
            "NgayTiepNhan": received,
            "NgayHenTra": due,
            "NgayKetThucXuLy": None,
            "NgayTra": None,
            "TrangThaiHoSo": 2,
            "PhiLePhi": procedure.fee,
            "DuocThanhToanTrucTuyen": paid_online,
            "DuocSoHoa": rng.random() < 0.82,
            "CoKetQuaDienTu": False,
            "DongBoDVCQG": rng.random() < 0.97,
            "CoPhieuXinLoi": False,
            "LichSuBoSung": [],
            "NgayCapNhat": None,
        }
        later = self._lifecycle(rng, procedure, received=received, due=due, online=channel == 2)
        events = [(received, {}), *later]
        events.sort(key=lambda event: event[0])
        times: list[datetime] = []
        for moment, _ in events:  # distinct, increasing update times
            times.append(max(moment, times[-1] + timedelta(seconds=1)) if times else moment)
        return SimDossier(dossier_id, base, times, [change for _, change in events])

    def _lifecycle(
        self,
        rng: random.Random,
        procedure: Procedure,
        *,
        received: datetime,
        due: datetime,
        online: bool,
    ) -> list[tuple[datetime, dict[str, Any]]]:
        """The timed changes after receipt; the README describes the outcome mix."""
        field = FIELDS[procedure.field]
        draw = rng.random()
        if draw < 0.015:  # không đủ điều kiện tiếp nhận: refused at the desk
            return [(received + timedelta(minutes=rng.uniform(5, 120)), {"TrangThaiHoSo": 3})]
        started = self._started(rng, received)
        events: list[tuple[datetime, dict[str, Any]]] = [(started, {"TrangThaiHoSo": 4})]
        if draw < 0.025:  # withdrawn by the citizen (rút hồ sơ)
            return [*events, (self._before_due(rng, due, after=started), {"TrangThaiHoSo": 7})]

        resumed = started
        if procedure.working_days >= 2 and rng.random() < field.supplement_rate:
            resumed, due, supplement = self._supplement(rng, due=due, after=started)
            events += supplement
        late_rate = procedure.late_rate if procedure.late_rate is not None else field.late_rate
        ended = self._ended(rng, late_rate, due=due, after=resumed)
        if ended > due and rng.random() < 0.6:  # phiếu xin lỗi và hẹn lại ngày trả kết quả
            apology = self._moment(rng, local_date(due), after=resumed)
            if apology < ended:
                events.append((apology, {"CoPhieuXinLoi": True}))
        e_result = online and rng.random() < 0.8
        processed = {"TrangThaiHoSo": 9, "NgayKetThucXuLy": ended, "CoKetQuaDienTu": e_result}
        events.append((ended, processed))
        if rng.random() < 0.95:  # the rest wait for the citizen to collect the result
            returned = self._returned(rng, ended, electronic=e_result)
            events.append((returned, {"TrangThaiHoSo": 10, "NgayTra": returned}))
        return events

    def _started(self, rng: random.Random, received: datetime) -> datetime:
        """Processing starts within the hour, or the next working morning after 17:00."""
        started = _whole(received + timedelta(minutes=rng.uniform(2, 60)))
        day = local_date(received)
        if started <= _at(day, 17):
            return started
        return self._moment(rng, self.calendar.add_working_days(day, 1), after=received)

    def _before_due(self, rng: random.Random, due: datetime, *, after: datetime) -> datetime:
        """A moment on a working day from `after` to the day before the due date."""
        days = self.calendar.working_days(local_date(after), local_date(due) - timedelta(days=1))
        return self._moment(rng, rng.choice(days) if days else local_date(due), after=after)

    def _supplement(
        self, rng: random.Random, *, due: datetime, after: datetime
    ) -> tuple[datetime, datetime, list[tuple[datetime, dict[str, Any]]]]:
        """Ask for more papers, pause the clock, resume: (resumed, new due, events)."""
        asked = self._before_due(rng, due, after=after)
        wait = rng.choice((1, 1, 2, 2, 3, 4, 5, 7, 10))
        back = self.calendar.add_working_days(local_date(asked), wait)
        resumed = self._moment(rng, back, after=asked)
        new_due = _at(self.calendar.add_working_days(local_date(due), wait), 17)
        history = [{"NgayHenTraTruoc": due, "NgayHenTraMoi": new_due}]
        resumption = {"TrangThaiHoSo": 4, "NgayHenTra": new_due, "LichSuBoSung": history}
        return resumed, new_due, [(asked, {"TrangThaiHoSo": 5}), (resumed, resumption)]

    def _ended(
        self, rng: random.Random, late_rate: float, *, due: datetime, after: datetime
    ) -> datetime:
        """NgayKetThucXuLy: late by a few working days, early, or on the due date."""
        draw, due_day = rng.random(), local_date(due)
        if draw < late_rate:
            slip = rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 7, 10, 15))
            return self._moment(rng, self.calendar.add_working_days(due_day, slip), after=after)
        if draw < late_rate + 0.55:
            return self._before_due(rng, due, after=after)
        return self._moment(rng, due_day, after=after)

    def _returned(self, rng: random.Random, ended: datetime, *, electronic: bool) -> datetime:
        """NgayTra: minutes later for an electronic result, else when the citizen comes."""
        if electronic:
            return _whole(ended + timedelta(minutes=rng.uniform(1, 30)))
        wait = rng.choice((0, 0, 1, 1, 2, 3))
        return self._moment(
            rng, self.calendar.add_working_days(local_date(ended), wait), after=ended
        )


# ---------------------------------------------------------------- faults


def _without_id(item: dict[str, Any]) -> dict[str, Any]:
    item.pop("MaHoSo", None)
    return item


def _due_before_receipt(item: dict[str, Any]) -> dict[str, Any]:
    received = datetime.strptime(item["NgayTiepNhan"], TIME_FORMAT)
    item["NgayHenTra"] = (received - timedelta(days=1)).strftime(TIME_FORMAT)
    return item


def _unknown_commune(item: dict[str, Any]) -> dict[str, Any]:
    item["MaDiaBan"] = "99999"
    return item


def _iso_receipt_time(item: dict[str, Any]) -> dict[str, Any]:
    received = datetime.strptime(item["NgayTiepNhan"], TIME_FORMAT)
    item["NgayTiepNhan"] = received.isoformat()  # the wrong format: "2025-11-19T08:15:00"
    return item


MALFORMATIONS: tuple[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("missing MaHoSo", _without_id),
    ("NgayHenTra before NgayTiepNhan", _due_before_receipt),
    ("unknown MaDiaBan 99999", _unknown_commune),
    ("NgayTiepNhan in ISO format", _iso_receipt_time),
)
"""How malformed items are broken, in rotation."""


class Faults(BaseModel):
    """Fault knobs: the upstream failure mode and how many next items to serve malformed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    mode: Literal["error", "timeout", "rate_limited"] | None = None
    timeout_seconds: float = Field(default=30, ge=0, le=3600)
    malformed: int = Field(default=0, ge=0)


class Advance(BaseModel):
    """A forward jump of the simulated clock."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=366 * 86400)


# ---------------------------------------------------------------- the simulator


Key = tuple[datetime, str]
"""A keyset position: (NgayCapNhat, MaHoSo)."""


class Simulator:
    """The simulated dossier system: clock, lazily generated days, fault knobs."""

    def __init__(
        self,
        *,
        province_code: int = 75,
        seed: int = 7,
        rate_per_day: int = 400,
        history_days: int = 30,
        start: datetime | None = None,
        speed: float = 1.0,
        catch_up: bool = False,
    ) -> None:
        real_now = datetime.now(UTC)
        if start is None:
            start = real_now - timedelta(days=history_days) if catch_up else real_now
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.factory = DossierFactory(
            province_code=province_code, seed=seed, rate_per_day=rate_per_day
        )
        self.clock = SimClock(start=start, speed=speed, catch_up=catch_up)
        self.first_day = local_date(start - timedelta(days=history_days))
        self.faults = Faults()
        self._days: dict[date, list[SimDossier]] = {}
        self._malformed_served = 0

    def now(self) -> datetime:
        """The simulated time (UTC-aware)."""
        return self.clock.now()

    def dossiers(self, moment: datetime) -> Iterator[SimDossier]:
        """Every dossier received from the first history day through `moment`'s local day."""
        day, last = self.first_day, local_date(moment)
        while day <= last:
            if day not in self._days:
                self._days[day] = self.factory.day(day)
            yield from self._days[day]
            day += timedelta(days=1)

    def page(
        self, moment: datetime, after: Key | None, limit: int
    ) -> list[tuple[Key, dict[str, Any]]]:
        """The first `limit` current versions at `moment` whose key is after `after`."""
        found: list[tuple[Key, SimDossier, int]] = []
        for dossier in self.dossiers(moment):
            index = dossier.index_at(moment)
            if index < 0:
                continue
            key = (dossier.times[index], dossier.id)
            if after is None or key > after:
                found.append((key, dossier, index))
        chosen = heapq.nsmallest(limit, found, key=lambda entry: entry[0])
        return [(key, dossier.version(index)) for key, dossier, index in chosen]

    def dossiers_as_of(self, moment: datetime) -> list[dict[str, Any]]:
        """Ground truth: every visible dossier at `moment`, unmalformed, in keyset order."""
        return [record for _, record in self.page(moment, None, limit=10**9)]

    def malform(self, item: dict[str, Any]) -> dict[str, Any]:
        """Break `item` the next way in the rotation if malformed items are still owed."""
        if self.faults.malformed <= 0:
            return item
        self.faults.malformed -= 1
        _, breaker = MALFORMATIONS[self._malformed_served % len(MALFORMATIONS)]
        self._malformed_served += 1
        return breaker(item)


# ---------------------------------------------------------------- HTTP


def _parse_after(updated_after: str | None, after_id: str | None) -> Key | None:
    if updated_after is None:
        if after_id is not None:
            raise ValueError("after_id needs updated_after")
        return None
    try:  # a "+" that was not percent-encoded arrives as a space
        moment = datetime.fromisoformat(updated_after.strip().replace(" ", "+"))
    except ValueError:
        raise ValueError(f"updated_after {updated_after!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError("updated_after needs a UTC offset, e.g. 2025-11-19T08:00:00+07:00")
    return (moment, after_id if after_id is not None else _LAST_ID)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _sleep_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client hangs up."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, 0.05))
        if await request.is_disconnected():
            return False
    return True


def create_app(
    *,
    province_code: int = 75,
    seed: int = 7,
    rate_per_day: int = 400,
    history_days: int = 30,
    start: datetime | None = None,
    speed: float = 1.0,
    catch_up: bool = False,
    api_key: str | None = None,
) -> FastAPI:
    """The simulator as an ASGI app; `app.state.simulator` holds the `Simulator`."""
    simulator = Simulator(
        province_code=province_code,
        seed=seed,
        rate_per_day=rate_per_day,
        history_days=history_days,
        start=start,
        speed=speed,
        catch_up=catch_up,
    )
    app = FastAPI(title="One-stop-shop dossier simulator (một cửa điện tử)")
    app.state.simulator = simulator

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "now": isoformat_local(simulator.now())}

    @app.get("/api/v1/dossiers")
    async def list_dossiers(
        request: Request,
        updated_after: str | None = Query(default=None, max_length=64),
        after_id: str | None = Query(default=None, min_length=1, max_length=128),
        limit: int = Query(default=200, ge=1, le=1000),
    ) -> JSONResponse:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "missing or wrong API key")
        faults = simulator.faults
        if faults.mode == "error":
            return _error(500, "simulated upstream failure")
        if faults.mode == "rate_limited":
            return _error(429, "too many requests", headers={"Retry-After": "30"})
        if faults.mode == "timeout" and not await _sleep_unless_gone(
            request, faults.timeout_seconds
        ):
            return _error(499, "client closed the request")
        try:
            after = _parse_after(updated_after, after_id)
        except ValueError as exc:
            return _error(400, str(exc))
        moment = simulator.now()
        page = simulator.page(moment, after, limit)
        items = [simulator.malform(record) for _, record in page]
        following = None
        if len(page) == limit:
            (updated, last_id), _ = page[-1]
            following = {"updated_after": isoformat_local(updated), "after_id": last_id}
        return JSONResponse(
            {"items": items, "next": following, "server_time": isoformat_local(moment)}
        )

    @app.get("/_sim/faults")
    async def read_faults() -> Faults:
        return simulator.faults

    @app.post("/_sim/faults")
    async def set_faults(update: Faults) -> Faults:
        for name in update.model_fields_set:  # keys left out keep their value
            setattr(simulator.faults, name, getattr(update, name))
        return simulator.faults

    @app.get("/_sim/clock")
    async def read_clock() -> dict[str, Any]:
        return _clock_state(simulator)

    @app.post("/_sim/advance")
    async def advance(jump: Advance) -> dict[str, Any]:
        simulator.clock.advance(jump.seconds)
        return _clock_state(simulator)

    return app


def _clock_state(simulator: Simulator) -> dict[str, Any]:
    clock = simulator.clock
    return {
        "now": isoformat_local(clock.now()),
        "start": isoformat_local(clock.start),
        "speed": clock.speed,
        "catch_up": clock.catch_up,
        "offset_seconds": clock.offset.total_seconds(),
        "history_from": simulator.first_day.isoformat(),
    }
