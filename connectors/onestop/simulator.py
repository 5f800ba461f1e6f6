"""A simulated provincial one-stop-shop (một cửa điện tử) dossier system, served over HTTP.

Dossiers are generated lazily and deterministically per local calendar day of receipt from
`random.Random(f"{seed}:{day}")`, so the stream is endless and stable across restarts. Each
dossier is a receipt version plus timed changes (processing, supplement, apology, processed,
returned); what the API serves at clock time t is each dossier's latest version at or before t.

A surge (`faults.surge`) and scenarios add dossiers from further seeded streams, each with its
own seed, so the base stream never changes and the data stays a function of the seed and of
when (in simulated time) each knob was set. The clock, fault knobs and `/_sim/*` control
routes come from `connectors.simkit`.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from itertools import accumulate
from typing import Any, Literal

import holidays
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from vietnam_provinces import ProvinceCode, Ward

from connectors.simkit import (
    LOCAL,
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

from .catalog import (
    APPLICATION_FORM,
    COMMUNES_PER_LAND_BRANCH,
    DEPARTMENTS,
    DOCUMENTS,
    FIELDS,
    LAND,
    LAND_REGISTRY_NUMBER,
    PROCEDURES,
    Level,
    Procedure,
)
from .units import LegacyWard, predecessors

TIME_FORMAT = "%Y%m%d%H%M%S"  # the sync API's yyyyMMddHHmmss, in local time
RESULT_FILES = "https://motcua.example.gov.vn/ketqua"  # where electronic results are kept
_LAST_ID = "\uffff"  # sorts after every MaHoSo: "updated_after" alone skips that whole second


def format_local(moment: datetime) -> str:
    """An aware datetime as the sync API's local "yyyyMMddHHmmss" string."""
    return moment.astimezone(LOCAL).strftime(TIME_FORMAT)


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


class HistoryClock(SimClock):
    """The shared simulated clock, also telling on which local day the generated history begins."""

    def __init__(self, *, history_from: date, **clock: Any) -> None:
        super().__init__(**clock)
        self.history_from = history_from

    def state(self) -> dict[str, Any]:
        """The clock as `/_sim/clock` shows it, plus `history_from`."""
        return super().state() | {"history_from": self.history_from.isoformat()}


# ---------------------------------------------------------------- dossiers


@dataclass(slots=True)
class SimDossier:
    """One generated dossier: its record at receipt and the timed changes that follow."""

    id: str
    base: dict[str, Any]
    times: list[datetime]  # when each version appeared: UTC, whole seconds, increasing
    changes: list[dict[str, Any]]  # what each version changed; the first is the receipt
    layer: int = 0  # 0 for the base stream, k for the k-th surge layer
    side_seed: str = ""  # seeds this dossier's own stream: presence, then the `extras`
    extras: Callable[[random.Random], dict[str, Any]] | None = None  # drawn on first serve
    _presence: float | None = None

    @property
    def received_at(self) -> datetime:
        """NgayTiepNhan, as UTC."""
        return self.times[0]

    @property
    def presence(self) -> float:
        """Layer + a uniform draw: the dossier exists while this is below the surge factor."""
        if self._presence is None:
            self._presence = self.layer + random.Random(self.side_seed).random()
        return self._presence

    def index_at(self, moment: datetime) -> int:
        """The index of the version visible at `moment`, -1 before receipt."""
        return bisect.bisect_right(self.times, moment) - 1

    def version(self, index: int) -> dict[str, Any]:
        """The full record of version `index`, as the API serves it."""
        if self.extras is not None:  # drawn lazily: a page costs only what it serves
            side = random.Random(self.side_seed)
            side.random()  # the presence draw comes first
            self.base.update(self.extras(side))
            self.extras = None
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
    predecessors: tuple[LegacyWard, ...] = ()  # pre-2025 wards merged into it, old codes


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
                predecessors=predecessors(f"{int(ward.code):05d}"),
            )
        )
    return communes


@dataclass(frozen=True, slots=True)
class Mix:
    """What a stream of dossiers is drawn from: procedures, communes, an optional late rate."""

    procedures: tuple[Procedure, ...]
    procedure_weights: tuple[float, ...]  # cumulative
    communes: tuple[Commune, ...]
    commune_weights: tuple[float, ...]  # cumulative
    late_rate: float | None = None  # overrides every procedure's and field's late rate

    @classmethod
    def of(
        cls,
        procedures: Sequence[Procedure],
        communes: Sequence[Commune],
        *,
        late_rate: float | None = None,
    ) -> Mix:
        """A mix weighted by each procedure's volume and each commune's weight."""
        return cls(
            tuple(procedures),
            tuple(accumulate(p.weight for p in procedures)),
            tuple(communes),
            tuple(accumulate(c.weight for c in communes)),
            late_rate,
        )


class DossierFactory:
    """Generates one local day's dossiers of one stream from a seeded random stream."""

    WEEKDAY_FACTORS = (1.15, 1.0, 1.0, 0.95, 0.9, 0.08, 0.0)  # Monday … Sunday

    def __init__(
        self,
        *,
        province_code: int,
        seed: int,
        rate_per_day: float,
        legacy_code_share: float = 0.0,
    ) -> None:
        self.province_code = province_code
        self.seed = seed
        self.rate_per_day = rate_per_day
        self.legacy_code_share = legacy_code_share
        self.calendar = WorkCalendar()
        self.communes = _communes(province_code)
        self.mix = Mix.of(PROCEDURES, self.communes)

    def day(
        self,
        day: date,
        *,
        stream: str = "",
        rate_per_day: float | None = None,
        mix: Mix | None = None,
        layer: int = 0,
    ) -> list[SimDossier]:
        """Every dossier of `stream` received on local `day`, in order of receipt.

        The base stream ("") is what the simulator always serves; other streams (surge layers,
        scenarios) draw from their own seeded generator and number their dossiers
        `<stream><NNNN>`, so adding them never changes the base stream.
        """
        seed = f"{self.seed}:{day.isoformat()}" + (f":{stream}" if stream else "")
        rng = random.Random(seed)
        factor = 0.0 if self.calendar.is_holiday(day) else self.WEEKDAY_FACTORS[day.weekday()]
        mean = (self.rate_per_day if rate_per_day is None else rate_per_day) * factor
        count = max(0, round(rng.gauss(mean, mean * 0.08))) if mean else 0
        saturday = day.weekday() == 5
        arrivals = sorted(self._arrival(rng, day, morning_only=saturday) for _ in range(count))
        numbers: dict[str, int] = {}
        return [
            self._dossier(rng, received, numbers, mix=mix or self.mix, stream=stream, layer=layer)
            for received in arrivals
        ]

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
        self,
        rng: random.Random,
        received: datetime,
        numbers: dict[str, int],
        *,
        mix: Mix,
        stream: str,
        layer: int,
    ) -> SimDossier:
        procedure = rng.choices(mix.procedures, cum_weights=mix.procedure_weights)[0]
        field = FIELDS[procedure.field]
        commune = rng.choices(mix.communes, cum_weights=mix.commune_weights)[0]
        agency_code, agency_name = self._agency(procedure, commune)
        numbers[agency_code] = number = numbers.get(agency_code, 0) + 1
        dossier_id = f"{agency_code}-{received.astimezone(LOCAL):%y%m%d}-{stream}{number:04d}"

        draw = rng.random()
        channel = 3 if draw < 0.02 else 2 if draw < 0.02 + 0.98 * procedure.online_share else 1
        due = self._due(received, procedure.working_days)
        paid_online = procedure.fee > 0 and rng.random() < (0.75 if channel == 2 else 0.12)
        digitised = rng.random() < 0.82
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
            "DuocSoHoa": digitised,
            "DanhSachGiayTo": [],
            "CoKetQuaDienTu": False,
            "DanhSachGiayToKetQua": [],
            "DongBoDVCQG": rng.random() < 0.97,
            "CoPhieuXinLoi": False,
            "LichSuBoSung": [],
            "NgayCapNhat": None,
        }
        later = self._lifecycle(
            rng,
            procedure,
            received=received,
            due=due,
            online=channel == 2,
            late_rate=mix.late_rate,
            result_link=f"{RESULT_FILES}/{dossier_id}.pdf",
        )
        events = [(received, {}), *later]
        events.sort(key=lambda event: event[0])
        times: list[datetime] = []
        for moment, _ in events:  # distinct, increasing update times
            times.append(max(moment, times[-1] + timedelta(seconds=1)) if times else moment)
        # a stream of its own per dossier, so these draws leave the day's main stream as it was
        extras = partial(self._extras, commune=commune, digitised=digitised, online=channel == 2)
        return SimDossier(
            dossier_id,
            base,
            times,
            [change for _, change in events],
            layer=layer,
            side_seed=f"{self.seed}:{dossier_id}",
            extras=extras,
        )

    def _extras(
        self, side: random.Random, *, commune: Commune, digitised: bool, online: bool
    ) -> dict[str, Any]:
        """The old commune code some older systems send, and the documents (DanhSachGiayTo)."""
        extras: dict[str, Any] = {}
        if commune.predecessors and side.random() < self.legacy_code_share:
            old = side.choice(commune.predecessors)  # sent by an older, district-era system
            extras |= {"MaDiaBan": old.code, "TenDiaBan": old.name}
        documents = self._documents(side, digitised=digitised, online=online)
        return extras | {"DanhSachGiayTo": documents}

    def _documents(
        self, side: random.Random, *, digitised: bool, online: bool
    ) -> list[dict[str, Any]]:
        """The form and 1–3 papers; a dossier is digitised when all of them are."""
        names = [(APPLICATION_FORM, False), *side.sample(DOCUMENTS, side.randint(1, 3))]
        reuse_rate = 0.8 if online else 0.55  # e-services pull from the national data stores
        documents = []
        for name, reusable in names:
            reused = reusable and side.random() < reuse_rate
            documents.append({"TenGiayTo": name, "DuocSoHoa": True, "DuocLayTuKhoDMQG": reused})
        if not digitised:  # at least one paper stays on paper: the form, and maybe more
            for document in documents:
                if document is documents[0] or (
                    not document["DuocLayTuKhoDMQG"] and side.random() < 0.5
                ):
                    document["DuocSoHoa"] = False
        return documents

    def _lifecycle(
        self,
        rng: random.Random,
        procedure: Procedure,
        *,
        received: datetime,
        due: datetime,
        online: bool,
        late_rate: float | None,
        result_link: str,
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
        if late_rate is None:
            late_rate = procedure.late_rate if procedure.late_rate is not None else field.late_rate
        ended = self._ended(rng, late_rate, due=due, after=resumed)
        if ended > due and rng.random() < 0.6:  # phiếu xin lỗi và hẹn lại ngày trả kết quả
            apology = self._moment(rng, local_date(due), after=resumed)
            if apology < ended:
                events.append((apology, {"CoPhieuXinLoi": True}))
        e_result = online and rng.random() < 0.8
        processed = {"TrangThaiHoSo": 9, "NgayKetThucXuLy": ended, "CoKetQuaDienTu": e_result}
        if e_result:  # the signed result file (kết quả điện tử) the citizen downloads
            result = {"TenGiayTo": "Kết quả giải quyết TTHC", "DuongDanTepTinKetQua": result_link}
            processed["DanhSachGiayToKetQua"] = [result]
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
        history = [{"NgayYeuCauBoSung": asked, "NgayHenTraTruoc": due, "NgayHenTraMoi": new_due}]
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


# ---------------------------------------------------------------- surge and scenarios


class LateLandSurge(BaseModel):
    """Scenario: extra land dossiers in one commune, most of which will end late."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["late_land_surge"] = "late_land_surge"
    commune: str = Field(pattern=r"^\d{5}$", description="current 5-digit commune code")
    per_day: float = Field(default=40, gt=0, le=5000, description="extra dossiers a weekday")
    late_rate: float = Field(default=0.9, ge=0, le=1)
    hours: float | None = Field(
        default=None, gt=0, le=366 * 24, description="how long; None = until stopped"
    )


@dataclass(slots=True)
class RunningScenario:
    """A scenario as started: its stream of extra dossiers and when it runs."""

    number: int
    spec: LateLandSurge
    mix: Mix
    since: datetime
    until: datetime | None

    def covers(self, moment: datetime) -> bool:
        """Whether a dossier received at `moment` belongs to this scenario's window."""
        return self.since <= moment and (self.until is None or moment < self.until)

    def describe(self) -> dict[str, Any]:
        """The scenario as `/_sim/scenario` shows it."""
        return self.spec.model_dump() | {
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
        }


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
        legacy_code_share: float = 0.05,
    ) -> None:
        start = clock_start(start, history_days=history_days, catch_up=catch_up)
        if not 0 <= legacy_code_share <= 1:
            raise ValueError("legacy_code_share must be between 0 and 1")
        self.factory = DossierFactory(
            province_code=province_code,
            seed=seed,
            rate_per_day=rate_per_day,
            legacy_code_share=legacy_code_share,
        )
        self.first_day = local_date(start - timedelta(days=history_days))
        self.clock = HistoryClock(
            history_from=self.first_day, start=start, speed=speed, catch_up=catch_up
        )
        self.faults = Faults()
        self.scenarios: list[RunningScenario] = []
        self._surges: list[tuple[datetime, float]] = []  # (since, factor), since increasing
        self._streams: dict[tuple[date, str], list[SimDossier]] = {}
        self._malformed_served = 0

    def now(self) -> datetime:
        """The simulated time (UTC-aware)."""
        return self.clock.now()

    # ------------------------------------------------------------ surge

    def observe_faults(self) -> None:
        """Record a change of `faults.surge` as starting now (called after every request)."""
        factor = self.faults.surge
        if factor == (self._surges[-1][1] if self._surges else 1.0):
            return
        now = self.now()
        if self._surges and self._surges[-1][0] >= now:  # changed twice at one instant
            self._surges.pop()
        self._surges.append((now, factor))

    def surge_at(self, moment: datetime) -> float:
        """The surge factor in force for dossiers received at `moment`."""
        index = bisect.bisect_right(self._surges, moment, key=lambda entry: entry[0]) - 1
        return self._surges[index][1] if index >= 0 else 1.0

    # ------------------------------------------------------------ scenarios

    def start_scenario(self, spec: LateLandSurge) -> RunningScenario:
        """Start a scenario now; its dossiers arrive from this moment on."""
        commune = next((c for c in self.factory.communes if f"{c.code:05d}" == spec.commune), None)
        if commune is None:
            raise ValueError(f"commune {spec.commune} is not a current commune of this province")
        land = [p for p in PROCEDURES if p.field == LAND]
        now = self.now()
        until = now + timedelta(hours=spec.hours) if spec.hours is not None else None
        mix = Mix.of(land, [commune], late_rate=spec.late_rate)
        scenario = RunningScenario(len(self.scenarios) + 1, spec, mix, now, until)
        self.scenarios.append(scenario)
        return scenario

    def stop_scenarios(self) -> None:
        """End every running scenario now; the dossiers it produced stay."""
        now = self.now()
        for scenario in self.scenarios:
            if scenario.until is None or scenario.until > now:
                scenario.until = now

    # ------------------------------------------------------------ data

    def _stream(self, day: date, stream: str, **options: Any) -> list[SimDossier]:
        key = (day, stream)
        if key not in self._streams:
            self._streams[key] = self.factory.day(day, stream=stream, **options)
        return self._streams[key]

    def dossiers(self, moment: datetime) -> Iterator[SimDossier]:
        """Every dossier received from the first history day through `moment`'s local day."""
        self.observe_faults()
        surges, scenarios = self._surges, self.scenarios
        layers = math.ceil(max(factor for _, factor in surges)) - 1 if surges else 0
        surge_day = local_date(surges[0][0]) if surges else None
        day, last = self.first_day, local_date(moment)
        while day <= last:
            if surge_day is None or day < surge_day:
                yield from self._stream(day, "")
            else:
                for layer in range(layers + 1):
                    stream = f"{layer:02d}" if layer else ""
                    for dossier in self._stream(day, stream, layer=layer):
                        if dossier.presence < self.surge_at(dossier.received_at):
                            yield dossier
            for scenario in scenarios:
                if local_date(scenario.since) <= day and (
                    scenario.until is None or day <= local_date(scenario.until)
                ):
                    stream = f"K{scenario.number}"
                    options = {"rate_per_day": scenario.spec.per_day, "mix": scenario.mix}
                    for dossier in self._stream(day, stream, **options):
                        if scenario.covers(dossier.received_at):
                            yield dossier
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


class _ObserveFaults:
    """ASGI middleware: a surge set through `/_sim/faults` starts when its answer is sent."""

    def __init__(self, app: ASGIApp, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.simulator.observe_faults()
            await send(message)

        await self.app(scope, receive, observed_send)


def create_app(
    *,
    seed: int = 7,
    speed: float = 1.0,
    catch_up: bool = False,
    start: datetime | None = None,
    history_days: int = 30,
    province_code: int = 75,
    rate_per_day: int = 400,
    legacy_code_share: float = 0.05,
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
        legacy_code_share=legacy_code_share,
    )
    app = FastAPI(title="One-stop-shop dossier simulator (một cửa điện tử)")
    app.state.simulator = simulator
    app.add_middleware(_ObserveFaults, simulator=simulator)
    app.include_router(control_router(simulator.clock, simulator.faults))

    @app.get("/api/v1/dossiers")
    async def list_dossiers(
        request: Request,
        updated_after: str | None = Query(default=None, max_length=64),
        after_id: str | None = Query(default=None, min_length=1, max_length=128),
        limit: int = Query(default=200, ge=1, le=1000),
    ) -> JSONResponse:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return error_response(401, "missing or wrong API key")
        if (failure := await apply_faults(request, simulator.faults)) is not None:
            return failure
        try:
            after = _parse_after(updated_after, after_id)
        except ValueError as exc:
            return error_response(400, str(exc))
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

    @app.get("/_sim/scenario")
    async def read_scenarios() -> list[dict[str, Any]]:
        return [scenario.describe() for scenario in simulator.scenarios]

    @app.post("/_sim/scenario", response_model=None)
    async def start_scenario(spec: LateLandSurge) -> dict[str, Any] | JSONResponse:
        try:
            return simulator.start_scenario(spec).describe()
        except ValueError as exc:
            return error_response(422, str(exc))

    @app.delete("/_sim/scenario")
    async def stop_scenarios() -> list[dict[str, Any]]:
        simulator.stop_scenarios()
        return [scenario.describe() for scenario in simulator.scenarios]

    return app
