"""A simulated provincial citizen-feedback system (hệ thống tiếp nhận phản ánh kiến nghị, PAKN)
speaking Open311 GeoReport v2 (JSON) over HTTP.

Requests are generated lazily and deterministically per local calendar day from
`random.Random(f"{seed}:{day}")`, each drawn once with its whole future (received, accepted,
in progress, overdue reminder, closed); what the API serves at clock time t is each request's
latest version at or before t, and requests made after t do not exist yet. A `surge` adds extra
requests (or thins them, below 1) from the moment it is set.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import accumulate
from typing import Any

import holidays
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import PrivateAttr
from vietnam_provinces import Province, ProvinceCode, Ward

from connectors.simkit import (
    LOCAL,
    Faults,
    SimClock,
    apply_faults,
    clock_start,
    control_router,
    isoformat_local,
    local_date,
)
from connectors.simkit import at_local as _at
from connectors.simkit import whole as _whole

from .catalog import (
    AREA_CENTRES,
    COMMUNE_AGENCY,
    HAMLETS,
    PROVINCE_CENTRE,
    ROADS,
    SERVICES,
    STREETS,
)
from .catalog import Service as CatalogService

MAX_SPAN = timedelta(days=90)  # GeoReport v2: a date range may not span more than 90 days
HOUR_WEIGHTS = (
    0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.5, 3.5, 3.5, 3.2, 2.8,
    2.0, 2.2, 2.8, 3.0, 2.8, 2.4, 2.0, 1.8, 1.5, 1.0, 0.6, 0.3,
)  # fmt: skip
"""Relative arrivals per local hour: citizens report around the clock, mostly by day."""
DAY_FACTORS = (1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.6)  # Monday … Sunday; public holidays 0.5
TRIAGE_NOTE = "Đã tiếp nhận, chuyển {agency} xử lý."
RECEIVED_NOTE = "Đã gửi phản ánh, chờ tiếp nhận."
PROGRESS_NOTE = "Đơn vị đang xác minh, kiểm tra thực tế tại hiện trường."
OVERDUE_NOTE = "Quá thời hạn xử lý, Trung tâm đã đôn đốc {agency}."
DUPLICATE_NOTE = "Phản ánh trùng lặp hoặc không thuộc phạm vi tiếp nhận, đã hướng dẫn người dân."


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


# ---------------------------------------------------------------- calendar


class WorkCalendar:
    """Vietnamese working days: Monday to Friday except public holidays (make-up days ignored)."""

    def __init__(self) -> None:
        self._holidays = holidays.Vietnam()
        self._working: dict[date, bool] = {}

    def is_holiday(self, day: date) -> bool:
        """A public holiday or substitute day off."""
        return day in self._holidays

    def is_working_day(self, day: date) -> bool:
        """A weekday that is not a holiday."""
        if day not in self._working:
            self._working[day] = day.weekday() < 5 and day not in self._holidays
        return self._working[day]

    def add_working_days(self, day: date, count: int) -> date:
        """The `count`-th working day after `day` (the first working day from `day`, for 0)."""
        if count <= 0:
            while not self.is_working_day(day):
                day += timedelta(days=1)
            return day
        while count:
            day += timedelta(days=1)
            count -= self.is_working_day(day)
        return day

    def working_days(self, first: date, last: date) -> list[date]:
        """The working days from `first` to `last`, both included."""
        days, day = [], first
        while day <= last:
            if self.is_working_day(day):
                days.append(day)
            day += timedelta(days=1)
        return days


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Commune:
    """A commune (xã, phường) of the configured province, with a rough location."""

    code: str
    name: str
    weight: float
    latitude: float
    longitude: float


@dataclass(slots=True)
class SimRequest:
    """One generated service request: its record when made and the timed changes that follow."""

    id: str
    requested: datetime
    keep_draw: float  # below the surge multiplier at `requested`, or it is thinned away
    base: dict[str, Any]
    times: list[datetime]  # when each version appeared: UTC, whole seconds, increasing
    changes: list[dict[str, Any]] = field(default_factory=list)

    def index_at(self, moment: datetime) -> int:
        """The index of the version visible at `moment`, -1 before it was made."""
        return bisect.bisect_right(self.times, moment) - 1

    def version(self, index: int) -> dict[str, Any]:
        """The full record of version `index`, as the API serves it."""
        record = dict(self.base)
        for change in self.changes[: index + 1]:
            record.update(change)
        record["updated_datetime"] = self.times[index]
        return {
            name: isoformat_local(value) if isinstance(value, datetime) else value
            for name, value in record.items()
        }


def _communes(province_code: int) -> list[Commune]:
    wards = list(Ward.iter_by_province(ProvinceCode(province_code)))
    if not wards:
        raise ValueError(f"province {province_code} has no communes in vietnam-provinces")
    centres = {name: centre for centre, names in AREA_CENTRES.items() for name in names}
    communes = []
    for ward in wards:
        bare = ward.name.removeprefix("Phường ").removeprefix("Xã ").removeprefix("Đặc khu ")
        spot = random.Random(f"commune:{int(ward.code)}")
        lat, lon = centres.get(bare, PROVINCE_CENTRE)
        if bare not in centres:
            lat, lon = lat + spot.uniform(-0.4, 0.4), lon + spot.uniform(-0.3, 0.3)
        communes.append(
            Commune(
                code=f"{int(ward.code):05d}",
                name=ward.name,
                weight=3.0 if ward.name.startswith("Phường") else 1.0,
                latitude=lat + spot.uniform(-0.04, 0.04),
                longitude=lon + spot.uniform(-0.04, 0.04),
            )
        )
    return communes


class RequestFactory:
    """Draws service requests (arrival, place, category and whole lifecycle) from seeded streams."""

    def __init__(
        self,
        *,
        province_code: int,
        seed: int,
        rate_per_day: float,
        jurisdiction_id: str,
        unlocated_share: float,
    ) -> None:
        self.seed = seed
        self.rate_per_day = rate_per_day
        self.jurisdiction_id = jurisdiction_id
        self.unlocated_share = unlocated_share
        self.calendar = WorkCalendar()
        self.communes = _communes(province_code)
        self.province_name = Province.from_code(ProvinceCode(province_code)).name
        self.zipcode = "76000" if province_code == 75 else None
        self._commune_weights = list(accumulate(c.weight for c in self.communes))
        self._service_weights = list(accumulate(s.weight for s in SERVICES))
        self._hour_weights = list(accumulate(HOUR_WEIGHTS))

    def day_mean(self, day: date) -> float:
        """Expected requests on local `day`."""
        factor = 0.5 if self.calendar.is_holiday(day) else DAY_FACTORS[day.weekday()]
        return self.rate_per_day * factor

    def hour_mean(self, hour_start: datetime) -> float:
        """Expected requests in the local hour starting at `hour_start`."""
        local = hour_start.astimezone(LOCAL)
        return self.day_mean(local.date()) * HOUR_WEIGHTS[local.hour] / sum(HOUR_WEIGHTS)

    def day(self, day: date) -> list[SimRequest]:
        """Every ordinary request made on local `day`, in order of arrival."""
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        mean = self.day_mean(day)
        count = max(0, round(rng.gauss(mean, mean * 0.1)))
        arrivals = sorted(self._arrival(rng, day) for _ in range(count))
        return [
            self._request(rng, f"PAKN-{day:%y%m%d}-{number:04d}", requested)
            for number, requested in enumerate(arrivals, start=1)
        ]

    def extra_hour(self, segment: int, hour_start: datetime, multiplier: float) -> list[SimRequest]:
        """The extra requests of surge `segment` in the hour starting at `hour_start`."""
        rng = random.Random(f"{self.seed}:surge:{segment}:{hour_start.isoformat()}")
        count = _poisson(rng, (multiplier - 1) * self.hour_mean(hour_start))
        arrivals = sorted(
            _whole(hour_start + timedelta(seconds=rng.uniform(0, 3599))) for _ in range(count)
        )
        local = hour_start.astimezone(LOCAL)
        return [
            self._request(rng, f"PAKN-{local:%y%m%d}-S{segment}-{local:%H}{number:02d}", moment)
            for number, moment in enumerate(arrivals, start=1)
        ]

    def _arrival(self, rng: random.Random, day: date) -> datetime:
        hour = bisect.bisect_right(self._hour_weights, rng.random() * self._hour_weights[-1])
        return _whole(_at(day, 0) + timedelta(hours=min(hour, 23), seconds=rng.uniform(0, 3599)))

    # ------------------------------------------------------------ one request

    def _request(self, rng: random.Random, request_id: str, requested: datetime) -> SimRequest:
        service = rng.choices(SERVICES, cum_weights=self._service_weights)[0]
        commune = rng.choices(self.communes, cum_weights=self._commune_weights)[0]
        agency = (
            f"UBND {commune.name[0].lower()}{commune.name[1:]}"
            if service.agency == COMMUNE_AGENCY
            else service.agency
        )
        street = rng.choice(STREETS)
        number = rng.randint(1, 420)
        located = rng.random()
        if located < self.unlocated_share:  # only a position and a road: no commune to read
            road = rng.choice(ROADS)
            address = f"Km {rng.randint(2, 90)}+{rng.randint(0, 9)}00 {road}, {self.province_name}"
        else:
            hamlet = (
                f"{HAMLETS[0 if commune.name.startswith('Phường') else 1]} {rng.randint(1, 12)}"
            )
            address = f"Số {number}, {street}, {hamlet}, {commune.name}, {self.province_name}"
        with_ward = located >= self.unlocated_share + 0.15  # hotline and app reports lack it
        expected = _at(
            self.calendar.add_working_days(local_date(requested), service.sla_working_days), 17
        )
        base: dict[str, Any] = {
            "service_request_id": request_id,
            "status": "open",
            "status_notes": RECEIVED_NOTE,
            "service_name": service.name,
            "service_code": service.code,
            "description": _sentence(
                rng.choice(service.complaints).format(street=street, number=number)
            ),
            "agency_responsible": agency,
            "service_notice": (
                f"Thời hạn xử lý {service.sla_working_days} ngày làm việc kể từ ngày tiếp nhận."
            ),
            "requested_datetime": requested,
            "updated_datetime": requested,
            "expected_datetime": expected,
            "address": address,
            "address_id": f"DC{commune.code}{rng.randint(0, 99999):05d}" if with_ward else None,
            "zipcode": self.zipcode,
            "lat": round(commune.latitude + rng.uniform(-0.02, 0.02), 6),
            "long": round(commune.longitude + rng.uniform(-0.02, 0.02), 6),
            "media_url": (
                f"https://pakn.{self.jurisdiction_id}/media/{request_id}.jpg"
                if rng.random() < 0.45
                else None
            ),
        }
        if with_ward:
            base["ward_code"] = commune.code
        keep_draw = rng.random()
        events = self._lifecycle(rng, service, agency, requested=requested, expected=expected)
        times: list[datetime] = [requested]
        changes: list[dict[str, Any]] = [{}]
        for moment, change in sorted(events, key=lambda event: event[0]):
            times.append(max(moment, times[-1] + timedelta(seconds=1)))
            changes.append(change)
        return SimRequest(request_id, requested, keep_draw, base, times, changes)

    def _lifecycle(
        self,
        rng: random.Random,
        service: CatalogService,
        agency: str,
        *,
        requested: datetime,
        expected: datetime,
    ) -> list[tuple[datetime, dict[str, Any]]]:
        """Accepted, maybe in progress, maybe reminded when overdue, then closed (README)."""
        accepted = self._soon(rng, requested + timedelta(minutes=rng.uniform(10, 180)), 90)
        events = [(accepted, {"status_notes": TRIAGE_NOTE.format(agency=agency)})]
        due_day = local_date(expected)
        draw = rng.random()
        if draw < 0.03:  # trùng lặp, không thuộc phạm vi: closed soon after triage
            closed = self._soon(rng, accepted, 240)
            return [*events, (closed, {"status": "closed", "status_notes": DUPLICATE_NOTE})]
        if draw < 0.07:  # stays open long (tồn đọng kéo dài)
            later = self.calendar.add_working_days(due_day, rng.randint(15, 80))
            closed = self._office_moment(rng, later, after=expected)
        elif draw < 0.07 + service.late_rate:
            slip = rng.choice((1, 1, 2, 2, 3, 5, 7, 10))
            closed = self._office_moment(
                rng, self.calendar.add_working_days(due_day, slip), after=expected
            )
        else:
            days = self.calendar.working_days(local_date(accepted), due_day)
            closed = min(self._office_moment(rng, rng.choice(days), after=accepted), expected)
        if closed - accepted > timedelta(days=1) and rng.random() < 0.6:  # xác minh, early on
            days = self.calendar.working_days(
                local_date(accepted), local_date(min(closed, expected))
            )
            progress = self._office_moment(rng, rng.choice(days), after=accepted)
            if progress < closed:
                events.append((progress, {"status_notes": PROGRESS_NOTE}))
        if closed > expected:  # overdue: the centre chases the agency next morning
            reminder = self._soon(rng, expected + timedelta(hours=1), 60)
            if reminder < closed:
                events.append((reminder, {"status_notes": OVERDUE_NOTE.format(agency=agency)}))
        result = rng.choice(service.results)
        events.append((closed, {"status": "closed", "status_notes": f"Đã xử lý xong: {result}"}))
        return events

    def _office_moment(self, rng: random.Random, day: date, *, after: datetime) -> datetime:
        """A random office-hours time on `day` later than `after`, else on a later working day."""
        while True:
            if self.calendar.is_working_day(day):
                earliest = max(_at(day, 7, 30), after + timedelta(minutes=1))
                latest = _at(day, 17)
                if earliest < latest:
                    return _whole(earliest + (latest - earliest) * rng.random())
            day += timedelta(days=1)

    def _soon(self, rng: random.Random, after: datetime, within_minutes: float) -> datetime:
        """Within `within_minutes` office minutes of `after` (next working morning if closed)."""
        day = local_date(after)
        while True:
            if self.calendar.is_working_day(day):
                earliest = max(_at(day, 7, 30), after)
                if earliest < _at(day, 17):
                    latest = min(_at(day, 17), earliest + timedelta(minutes=within_minutes))
                    return _whole(earliest + (latest - earliest) * rng.random())
            day += timedelta(days=1)


# ---------------------------------------------------------------- faults


def _without_id(item: dict[str, Any]) -> dict[str, Any]:
    item.pop("service_request_id", None)
    return item


def _naive_requested_time(item: dict[str, Any]) -> dict[str, Any]:
    item["requested_datetime"] = item["requested_datetime"][:19]  # offset dropped
    return item


def _unknown_status(item: dict[str, Any]) -> dict[str, Any]:
    item["status"] = "pending"
    return item


def _unlocated(item: dict[str, Any]) -> dict[str, Any]:
    item.pop("ward_code", None)
    item["address"] = "Gần chợ, ven đường lớn"
    return item


def _lat_in_words(item: dict[str, Any]) -> dict[str, Any]:
    item["lat"] = "mười một độ bắc"
    return item


MALFORMATIONS: tuple[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("service_request_id removed", _without_id),
    ("requested_datetime without its UTC offset", _naive_requested_time),
    ("status 'pending'", _unknown_status),
    ("no ward_code and no commune in the address", _unlocated),
    ("lat in words", _lat_in_words),
)
"""How malformed items are broken, in rotation."""


class SimFaults(Faults):
    """The shared fault knobs, telling the simulator when `surge` changes (by HTTP or Python)."""

    _on_surge: Callable[[float], None] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "surge" and self._on_surge is not None:
            self._on_surge(self.surge)


# ---------------------------------------------------------------- the simulator


class QueryError(Exception):
    """A request the API refuses: HTTP status and the Open311 error description."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def parse_time(name: str, value: str) -> datetime:
    """A query-string ISO 8601 time with its offset (a "+" sent unencoded arrives as a space)."""
    text = value.strip().replace(" ", "+")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(400, f"{name} {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise QueryError(400, f"{name} needs a UTC offset, e.g. 2025-11-19T08:00:00+07:00")
    return moment


def _list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class Simulator:
    """The simulated feedback system: clock, lazily generated requests, surge, fault knobs."""

    def __init__(
        self,
        *,
        seed: int = 7,
        speed: float = 1.0,
        catch_up: bool = False,
        start: datetime | None = None,
        history_days: int = 30,
        province_code: int = 75,
        rate_per_day: float = 60,
        jurisdiction_id: str = "dongnai.gov.vn",
        max_results: int = 1000,
        unlocated_share: float = 0.01,
    ) -> None:
        start = clock_start(start, history_days=history_days, catch_up=catch_up)
        if not 0 <= unlocated_share <= 0.5:
            raise ValueError("unlocated_share must be between 0 and 0.5")
        self.factory = RequestFactory(
            province_code=province_code,
            seed=seed,
            rate_per_day=rate_per_day,
            jurisdiction_id=jurisdiction_id,
            unlocated_share=unlocated_share,
        )
        self.jurisdiction_id = jurisdiction_id
        self.max_results = max_results
        self.clock = SimClock(start=start, speed=speed, catch_up=catch_up)
        self.first_day = local_date(start - timedelta(days=history_days))
        self.faults = SimFaults()
        self.faults._on_surge = self._surge_changed
        self.surges: list[tuple[datetime, float]] = []  # (since, multiplier), in time order
        self._days: dict[date, list[SimRequest]] = {}
        self._extras: dict[tuple[int, datetime], list[SimRequest]] = {}
        self._malformed_served = 0

    def now(self) -> datetime:
        """The simulated time (UTC-aware)."""
        return self.clock.now()

    def set_surge(self, multiplier: float) -> None:
        """Multiply the rate of new requests from now on (same as POST /_sim/faults)."""
        self.faults.surge = multiplier

    def _surge_changed(self, multiplier: float) -> None:
        current = self.surges[-1][1] if self.surges else 1.0
        if multiplier != current:
            self.surges.append((self.now(), multiplier))

    def _multiplier_at(self, moment: datetime) -> float:
        multiplier = 1.0
        for since, value in self.surges:
            if since > moment:
                break
            multiplier = value
        return multiplier

    # ------------------------------------------------------------ generation

    def requests(self, moment: datetime) -> Iterator[SimRequest]:
        """Every request made up to `moment` (ordinary ones, thinned or surged)."""
        day, last = self.first_day, local_date(moment)
        while day <= last:
            if day not in self._days:
                self._days[day] = self.factory.day(day)
            for request in self._days[day]:
                if request.requested > moment:
                    break
                if request.keep_draw < self._multiplier_at(request.requested):
                    yield request
            day += timedelta(days=1)
        yield from self._surge_extras(moment)

    def _surge_extras(self, moment: datetime) -> Iterator[SimRequest]:
        for index, (since, multiplier) in enumerate(self.surges):
            if multiplier <= 1 or since > moment:
                continue
            until = self.surges[index + 1][0] if index + 1 < len(self.surges) else None
            last = moment if until is None else min(until, moment)
            hour = since.replace(minute=0, second=0, microsecond=0)
            while hour <= last:
                key = (index, hour)
                if key not in self._extras:
                    self._extras[key] = self.factory.extra_hour(index, hour, multiplier)
                for request in self._extras[key]:
                    if since <= request.requested <= moment and (
                        until is None or request.requested < until
                    ):
                        yield request
                hour += timedelta(hours=1)

    def requests_as_of(self, moment: datetime | None = None) -> list[dict[str, Any]]:
        """Ground truth: every request's version visible at `moment` (default now), unmalformed,
        newest requested first."""
        moment = moment or self.now()
        found = [
            (request.requested, request.id, request.version(request.index_at(moment)))
            for request in self.requests(moment)
        ]
        found.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
        return [record for _, _, record in found]

    # ------------------------------------------------------------ API

    def check_jurisdiction(self, value: str | None) -> None:
        """Refuse a missing or foreign jurisdiction_id."""
        if not value:
            raise QueryError(400, "jurisdiction_id is required")
        if value != self.jurisdiction_id:
            raise QueryError(400, f"jurisdiction_id {value!r} is not served here")

    def search(self, params: dict[str, str], moment: datetime) -> list[dict[str, Any]]:
        """GET /requests.json: the requests matching GeoReport v2 query parameters at `moment`."""
        ids = _list(params.get("service_request_id"))
        if ids:  # the spec: other parameters are then ignored
            wanted = set(ids)
            return [r for r in self.requests_as_of(moment) if r["service_request_id"] in wanted]
        start = parse_time("start_date", params["start_date"]) if params.get("start_date") else None
        end = parse_time("end_date", params["end_date"]) if params.get("end_date") else None
        if start is None and end is None:
            start, end = moment - MAX_SPAN, moment  # the spec's default: the last 90 days
        elif start is None:
            assert end is not None
            start = end - MAX_SPAN
        elif end is None:
            end = moment
        if end < start:
            raise QueryError(400, "end_date is before start_date")
        if end - start > MAX_SPAN:
            raise QueryError(400, "start_date and end_date may not span more than 90 days")
        statuses = _list(params.get("status"))
        if unknown := set(statuses) - {"open", "closed"}:
            raise QueryError(400, f"status {sorted(unknown)[0]!r} is not open or closed")
        codes = set(_list(params.get("service_code")))
        found = []
        for request in self.requests(min(end, moment)):
            if not start <= request.requested <= end:
                continue
            if codes and request.base["service_code"] not in codes:
                continue
            record = request.version(request.index_at(moment))
            if statuses and record["status"] not in statuses:
                continue
            found.append((request.requested, request.id, record))
        found.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
        return [record for _, _, record in found[: self.max_results]]

    def malform(self, item: dict[str, Any]) -> dict[str, Any]:
        """Break `item` the next way in the rotation if malformed items are still owed."""
        if self.faults.malformed <= 0:
            return item
        self.faults.malformed -= 1
        _, breaker = MALFORMATIONS[self._malformed_served % len(MALFORMATIONS)]
        self._malformed_served += 1
        return breaker(item)


def services_document() -> list[dict[str, Any]]:
    """GET /services.json: the service list (agency and SLA told in the description)."""
    documents = []
    for service in SERVICES:
        owner = (
            "UBND xã, phường nơi phản ánh" if service.agency == COMMUNE_AGENCY else service.agency
        )
        documents.append(
            {
                "service_code": service.code,
                "service_name": service.name,
                "description": (
                    f"{service.description} Đơn vị xử lý: {owner}. "
                    f"Thời hạn: {service.sla_working_days} ngày làm việc."
                ),
                "metadata": False,
                "type": "realtime",
                "keywords": ", ".join(service.keywords),
                "group": service.group,
            }
        )
    return documents


def open311_error(status: int, description: str) -> JSONResponse:
    """A GeoReport v2 error: a JSON array of {code, description}."""
    return JSONResponse([{"code": status, "description": description}], status_code=status)


# ---------------------------------------------------------------- HTTP


def create_app(
    *,
    seed: int = 7,
    speed: float = 1.0,
    catch_up: bool = False,
    start: datetime | None = None,
    history_days: int = 30,
    province_code: int = 75,
    rate_per_day: float = 60,
    jurisdiction_id: str = "dongnai.gov.vn",
    api_key: str | None = None,
    max_results: int = 1000,
    unlocated_share: float = 0.01,
) -> FastAPI:
    """The simulator as an ASGI app; `app.state.simulator` holds the `Simulator`."""
    simulator = Simulator(
        seed=seed,
        speed=speed,
        catch_up=catch_up,
        start=start,
        history_days=history_days,
        province_code=province_code,
        rate_per_day=rate_per_day,
        jurisdiction_id=jurisdiction_id,
        max_results=max_results,
        unlocated_share=unlocated_share,
    )
    app = FastAPI(title="Citizen feedback simulator (phản ánh kiến nghị, Open311 GeoReport v2)")
    app.state.simulator = simulator
    app.include_router(control_router(simulator.clock, simulator.faults))

    async def guard(request: Request) -> JSONResponse | None:
        """Key check, fault knobs and jurisdiction check, in that order."""
        if api_key is not None:
            given = request.query_params.get("api_key")
            if not given:
                return open311_error(401, "api_key is required")
            if given != api_key:
                return open311_error(403, "api_key is not valid")
        failure = await apply_faults(request, simulator.faults)
        if failure is not None:
            return failure
        try:
            simulator.check_jurisdiction(request.query_params.get("jurisdiction_id"))
        except QueryError as exc:
            return open311_error(exc.status, exc.description)
        return None

    @app.get("/services.json")
    async def list_services(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        return JSONResponse(services_document())

    @app.get("/requests.json")
    async def list_requests(request: Request) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        try:
            found = simulator.search(dict(request.query_params), simulator.now())
        except QueryError as exc:
            return open311_error(exc.status, exc.description)
        return JSONResponse([simulator.malform(item) for item in found])

    @app.get("/requests/{service_request_id}.json")
    async def read_request(request: Request, service_request_id: str) -> JSONResponse:
        if (refused := await guard(request)) is not None:
            return refused
        found = simulator.search({"service_request_id": service_request_id}, simulator.now())
        if not found:
            return open311_error(404, f"service request {service_request_id!r} not found")
        return JSONResponse([simulator.malform(item) for item in found])

    return app
