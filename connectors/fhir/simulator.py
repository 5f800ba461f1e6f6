"""A simulated FHIR R4 server of a province's hospitals: Encounters, bed Locations, Organizations.

Each local day is generated once, deterministically, from `random.Random(f"{seed}:{day}:{site}")`
when the simulated clock first reaches it: every encounter is drawn with its whole future (a list
of timed status changes), and inpatient stays are placed on bed Locations whose operational status
follows them. What the server shows at clock time t is each resource's latest version at or
before t; nothing is ever stamped in the past of a search already answered.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import holidays
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.simkit import (
    LOCAL,
    Faults,
    SimClock,
    apply_faults,
    at_local,
    clock_start,
    control_router,
    local_date,
    whole,
)

from .hospitals import Site, sites

FHIR_JSON = "application/fhir+json"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
BED_STATUS = "http://terminology.hl7.org/CodeSystem/v2-0116"
PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
COMMUNE_CODE_EXTENSION = "https://ioc.gov.vn/fhir/StructureDefinition/commune-code"
INSURANCE_FACILITY_SYSTEM = "https://ioc.gov.vn/fhir/NamingSystem/ma-cskcb"
WARM_UP_DAYS = 21  # inpatient stays begin this long before history, so beds start realistic
PAGE_TTL_SECONDS = 900.0  # real seconds a search's paging token stays valid
MAX_SEARCHES = 50  # searches kept for paging, oldest dropped first
MAX_COUNT = 1000

CLASS_DISPLAY = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
DISPOSITIONS = {
    "home": "Home",
    "other-hcf": "Other healthcare facility",
    "aadvice": "Left against advice",
    "exp": "Expired",
    "oth": "Other",
}
BED_DISPLAY = {
    "O": "Occupied",
    "U": "Unoccupied",
    "C": "Closed",
    "H": "Housekeeping",
    "I": "Isolated",
    "K": "Contaminated",
}
AMB_WEEKDAY = (1.25, 1.1, 1.05, 1.0, 0.95, 0.45, 0.15)  # Monday … Sunday
IMP_WEEKDAY = (1.2, 1.1, 1.05, 1.0, 0.95, 0.6, 0.45)
EMER_HOURS = (  # relative arrivals per local hour: quiet before dawn, peak in the evening
    0.6, 0.45, 0.35, 0.3, 0.3, 0.4, 0.6, 0.8, 0.9, 0.9, 0.9, 0.85,
    0.8, 0.8, 0.85, 0.9, 1.0, 1.2, 1.5, 1.7, 1.6, 1.3, 1.0, 0.8,
)  # fmt: skip
ENDED = frozenset({"finished", "cancelled"})


def instant(moment: datetime) -> str:
    """An aware datetime as a FHIR instant in local time, e.g. 2025-11-19T10:02:11+07:00."""
    return moment.astimezone(LOCAL).isoformat(timespec="seconds")


def _at(day: date, hours: float) -> datetime:
    """UTC time of a local wall-clock time (hours after midnight, may exceed 24) on `day`."""
    return whole(at_local(day, hours))


def _minutes(value: float) -> timedelta:
    return timedelta(seconds=round(value * 60))


def _count(rng: random.Random, mean: float) -> int:
    """A Poisson-like count: exact for small means, normal for large ones."""
    if mean <= 0:
        return 0
    if mean < 30:
        limit, product, count = math.exp(-mean), rng.random(), 0
        while product > limit:
            product *= rng.random()
            count += 1
        return count
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


# ---------------------------------------------------------------- encounters


@dataclass(slots=True)
class SimEncounter:
    """One generated encounter: its timed statuses and what it ends with."""

    id: str
    site: Site
    klass: str
    ward: str
    patient: str
    times: list[datetime]  # when each version appeared: whole seconds, strictly increasing
    statuses: list[str]
    disposition: str | None = None
    admit_source: str | None = None
    bed: Bed | None = None

    def index_at(self, moment: datetime) -> int:
        """The version visible at `moment`, -1 before the encounter exists."""
        return bisect.bisect_right(self.times, moment) - 1

    def resource(self, index: int) -> dict[str, Any]:
        """Version `index` (0-based) as an R4 Encounter resource."""
        status = self.statuses[index]
        history = []
        for step in range(index + 1):
            period = {"start": instant(self.times[step])}
            if step < index:
                period["end"] = instant(self.times[step + 1])
            history.append({"status": self.statuses[step], "period": period})
        hospital = self.site.hospital
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": self.id,
            "meta": {"versionId": str(index + 1), "lastUpdated": instant(self.times[index])},
            "status": status,
            "statusHistory": history,
            "class": {"system": ACT_CODE, "code": self.klass, "display": CLASS_DISPLAY[self.klass]},
            "serviceType": {"text": self.ward},
            "subject": {"reference": f"Patient/{self.patient}"},
        }
        if "arrived" in self.statuses[: index + 1]:
            period = {"start": instant(self.times[self.statuses.index("arrived")])}
            if status in ENDED:
                period["end"] = instant(self.times[index])
            resource["period"] = period
        hospitalization: dict[str, Any] = {}
        if self.admit_source:
            hospitalization["admitSource"] = {
                "coding": [{"system": ADMIT_SOURCE, "code": self.admit_source}]
            }
        if status == "finished" and self.disposition:
            hospitalization["dischargeDisposition"] = {
                "coding": [
                    {
                        "system": DISCHARGE_DISPOSITION,
                        "code": self.disposition,
                        "display": DISPOSITIONS[self.disposition],
                    }
                ]
            }
        if hospitalization:
            resource["hospitalization"] = hospitalization
        if self.bed is not None and "in-progress" in self.statuses[: index + 1]:
            resource["location"] = [
                {
                    "location": {"reference": f"Location/{self.bed.id}", "display": self.bed.name},
                    "status": "completed" if status in ENDED else "active",
                    "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "bd"}]},
                }
            ]
        resource["serviceProvider"] = {
            "reference": f"Organization/{hospital.id}",
            "display": hospital.name,
        }
        return resource


# ---------------------------------------------------------------- beds


@dataclass(slots=True)
class Bed:
    """A bed Location and the timeline of its operational status."""

    id: str
    name: str
    ward_id: str
    site: Site
    created: datetime
    isolation: bool  # isolation room: shows I when empty, used only when the rest are full
    free_at: datetime
    times: list[datetime] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    _sorted: bool = True

    def mark(self, moment: datetime, code: str) -> None:
        """Record that the bed turns `code` at `moment`."""
        if self.times and moment < self.times[-1]:
            self._sorted = False
        self.times.append(moment)
        self.codes.append(code)

    def state_at(self, moment: datetime) -> tuple[str, int, datetime]:
        """(operationalStatus code, versionId, lastUpdated) at `moment`."""
        if not self._sorted:
            pairs = sorted(zip(self.times, self.codes, strict=True))
            self.times, self.codes = [t for t, _ in pairs], [c for _, c in pairs]
            self._sorted = True
        index = bisect.bisect_right(self.times, moment) - 1
        if index < 0:
            return ("I" if self.isolation else "U"), 1, self.created
        return self.codes[index], index + 2, self.times[index]

    def resource(self, moment: datetime) -> dict[str, Any]:
        """The bed as an R4 Location at `moment`."""
        code, version, updated = self.state_at(moment)
        hospital = self.site.hospital
        return {
            "resourceType": "Location",
            "id": self.id,
            "meta": {"versionId": str(version), "lastUpdated": instant(updated)},
            "status": "active",
            "operationalStatus": {"system": BED_STATUS, "code": code, "display": BED_DISPLAY[code]},
            "name": self.name,
            "mode": "instance",
            "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "bd", "display": "Bed"}]},
            "managingOrganization": {
                "reference": f"Organization/{hospital.id}",
                "display": hospital.name,
            },
            "partOf": {"reference": f"Location/{self.ward_id}"},
        }


def _ward_resource(site: Site, ward_id: str, name: str, created: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Location",
        "id": ward_id,
        "meta": {"versionId": "1", "lastUpdated": instant(created)},
        "status": "active",
        "name": name,
        "mode": "instance",
        "physicalType": {"coding": [{"system": PHYSICAL_TYPE, "code": "wa", "display": "Ward"}]},
        "managingOrganization": {"reference": f"Organization/{site.hospital.id}"},
    }


def organization_resource(site: Site, created: datetime) -> dict[str, Any]:
    """A hospital as an R4 Organization, its commune code in an address extension."""
    hospital = site.hospital
    return {
        "resourceType": "Organization",
        "id": hospital.id,
        "meta": {"versionId": "1", "lastUpdated": instant(created)},
        "identifier": [{"system": INSURANCE_FACILITY_SYSTEM, "value": hospital.insurance_code}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": hospital.name,
        "alias": [hospital.alias],
        "address": [
            {
                "extension": [{"url": COMMUNE_CODE_EXTENSION, "valueCode": site.commune_code}],
                "use": "work",
                "line": [hospital.street],
                "city": site.commune_name,
                "state": site.province_name,
                "country": "VN",
            }
        ],
    }


class Beds:
    """The bed Locations of every hospital and the admissions that fill them."""

    def __init__(self, hospitals: list[Site], *, scale: float, created: datetime) -> None:
        self.by_site: dict[str, list[Bed]] = {}
        self.wards: list[dict[str, Any]] = []
        for site in hospitals:
            hospital = site.hospital
            count = max(4, round(hospital.beds * scale))
            isolation_every = 33  # about 3% isolation beds
            beds = []
            for number in range(count):
                ward_index = number * len(hospital.wards) // count
                ward_id = f"{hospital.prefix}-k{ward_index + 1:02d}"
                ward = hospital.wards[ward_index]
                beds.append(
                    Bed(
                        id=f"{hospital.prefix}-g{number + 1:04d}",
                        name=f"Giường {number + 1:03d} - {ward}",
                        ward_id=ward_id,
                        site=site,
                        created=created,
                        isolation=number % isolation_every == isolation_every - 1,
                        free_at=created,
                    )
                )
            self.by_site[hospital.id] = beds
            self.wards += [
                _ward_resource(site, f"{hospital.prefix}-k{i + 1:02d}", name, created)
                for i, name in enumerate(hospital.wards)
            ]

    def admit(
        self, rng: random.Random, site: Site, *, admitted: datetime, discharged: datetime
    ) -> Bed | None:
        """Put a stay on a free bed (an isolation bed as a last resort); None when all are full."""
        beds = self.by_site[site.hospital.id]
        free = [b for b in beds if b.free_at <= admitted and not b.isolation]
        free = free or [b for b in beds if b.free_at <= admitted]
        if not free:
            return None  # nằm ghép: the patient shares a bed, no Location of their own
        bed = rng.choice(free)
        infectious = "nhiễm" in bed.name or "xuất huyết" in bed.name
        contaminated = rng.random() < (0.3 if infectious else 0.03)
        cleaning = _minutes(rng.uniform(360, 1440) if contaminated else rng.uniform(45, 180))
        bed.mark(admitted, "O")
        bed.mark(discharged, "K" if contaminated else "H")
        bed.mark(discharged + cleaning, "I" if bed.isolation else "U")
        bed.free_at = discharged + cleaning
        return bed

    def close_some(self, rng: random.Random, site: Site, day: date) -> None:
        """Close a few free beds for maintenance for one to five days (about 2% of beds)."""
        beds = self.by_site[site.hospital.id]
        for _ in range(_count(rng, len(beds) * 0.008)):
            closes = _at(day, rng.uniform(8, 17))
            free = [b for b in beds if b.free_at <= closes and not b.isolation]
            if not free:
                return
            bed = rng.choice(free)
            reopens = closes + timedelta(days=rng.uniform(1, 5))
            bed.mark(closes, "C")
            bed.mark(reopens, "U")
            bed.free_at = reopens

    def all(self) -> Iterable[Bed]:
        """Every bed, hospital by hospital."""
        for beds in self.by_site.values():
            yield from beds


# ---------------------------------------------------------------- generation


class EncounterFactory:
    """Draws one local day of encounters of one hospital."""

    def __init__(self, *, seed: int, scale: float) -> None:
        self.seed = seed
        self.scale = scale
        self.holidays = holidays.Vietnam()

    def day(
        self,
        site: Site,
        day: date,
        beds: Beds,
        *,
        factor: float = 1.0,
        salt: str = "",
        inpatients: bool = True,
        others: bool = True,
    ) -> list[SimEncounter]:
        """The encounters of `site` whose first status falls on local `day`."""
        rng = random.Random(f"{self.seed}:{day.isoformat()}:{site.hospital.id}{salt}")
        hospital = site.hospital
        holiday = day in self.holidays
        weekday = day.weekday()
        drafts: list[tuple[str, list[datetime], list[str], dict[str, Any]]] = []
        if others:
            amb_factor = 0.15 if holiday else AMB_WEEKDAY[weekday]
            amb = hospital.outpatients_per_day * self.scale * amb_factor * factor
            drafts += [
                self._outpatient(rng, day, hospital.referral_rate) for _ in range(_count(rng, amb))
            ]
            emer = hospital.emergencies_per_day * self.scale * factor
            emer *= 1.1 if weekday >= 5 or holiday else 1.0
            drafts += [
                self._emergency(rng, day, hospital.referral_rate) for _ in range(_count(rng, emer))
            ]
        if inpatients:
            beds.close_some(rng, site, day)
            mean_stay = hospital.median_stay_days * math.exp(0.55**2 / 2)
            weekly = IMP_WEEKDAY[weekday] / (sum(IMP_WEEKDAY) / 7)
            ward_beds = beds.by_site[hospital.id]
            admissions = len(ward_beds) * hospital.occupancy_target / mean_stay
            # admissions office: fewer planned admissions when wards are full, more when not
            morning = _at(day, 8)
            occupied = sum(1 for bed in ward_beds if bed.free_at > morning) / len(ward_beds)
            admissions *= min(1.6, max(0.4, 1 + 4 * (hospital.occupancy_target - occupied)))
            wanted = admissions * weekly * factor  # admissions are planned: less noisy than Poisson
            planned = max(0, round(rng.gauss(wanted, 0.5 * math.sqrt(wanted))))
            stays = [self._stay(rng, day, site) for _ in range(planned)]
            drafts += stays
        encounters = []
        letters = {"AMB": "A", "EMER": "C", "IMP": "N"}  # khám, cấp cứu, nội trú
        numbers = {"AMB": 0, "EMER": 0, "IMP": 0}
        drafts.sort(key=lambda draft: draft[1][0])
        for klass, times, statuses, extra in drafts:
            numbers[klass] += 1
            tag = salt.replace(":", "-")  # surge top-ups get their own numbering
            encounter_id = (
                f"{hospital.prefix}-{day:%y%m%d}{tag}-{letters[klass]}{numbers[klass]:04d}"
            )
            encounter = SimEncounter(
                id=encounter_id,
                site=site,
                klass=klass,
                ward=extra.get("ward") or rng.choice(hospital.wards),
                patient=f"{hospital.prefix}-bn{rng.randrange(10**7):07d}",
                times=_increasing(times),
                statuses=statuses,
                disposition=extra.get("disposition"),
                admit_source=extra.get("admit_source"),
            )
            if klass == "IMP" and "in-progress" in statuses:
                admitted = encounter.times[statuses.index("in-progress")]
                bed = beds.admit(rng, site, admitted=admitted, discharged=encounter.times[-1])
                encounter.bed = bed
                if bed is not None:
                    encounter.ward = bed.name.split(" - ", 1)[1]
            encounters.append(encounter)
        return encounters

    def _outpatient(
        self, rng: random.Random, day: date, referral_rate: float
    ) -> tuple[str, list[datetime], list[str], dict[str, Any]]:
        saturday_or_sunday = day.weekday() >= 5
        if saturday_or_sunday or rng.random() < 0.7:  # the morning rush
            arrived = _at(day, 6 + rng.triangular(0, 5, 1.5))
        else:
            arrived = _at(day, 13 + rng.uniform(0, 3.5))
        extra: dict[str, Any] = {}
        if rng.random() < 0.25:  # booked online (đặt lịch khám): planned from early morning
            planned = max(_at(day, 5), arrived - _minutes(rng.uniform(30, 180)))
            if rng.random() < 0.06:  # no-show, cancelled at the end of the session
                ends = _at(day, 11.5 if arrived < _at(day, 12) else 16.5)
                return "AMB", [planned, max(ends, arrived)], ["planned", "cancelled"], extra
            times, statuses = [planned], ["planned"]
        else:
            times, statuses = [], []
        if rng.random() < 0.01:  # left before being seen
            left = arrived + _minutes(rng.uniform(30, 90))
            return "AMB", [*times, arrived, left], [*statuses, "arrived", "cancelled"], extra
        seen = arrived + _minutes(min(240.0, rng.lognormvariate(math.log(30), 0.7)))
        done = seen + _minutes(rng.triangular(8, 120, 20))
        if rng.random() < referral_rate / 4:  # referred on from the clinic (chuyển tuyến)
            extra["disposition"] = "other-hcf"
        statuses = [*statuses, "arrived", "in-progress", "finished"]
        return "AMB", [*times, arrived, seen, done], statuses, extra

    def _emergency(
        self, rng: random.Random, day: date, referral_rate: float
    ) -> tuple[str, list[datetime], list[str], dict[str, Any]]:
        hour = rng.choices(range(24), weights=EMER_HOURS)[0]
        arrived = _at(day, hour + rng.random())
        triaged = arrived + _minutes(rng.uniform(1, 10))
        if rng.random() < 0.02:  # left without being seen
            left = triaged + _minutes(rng.uniform(20, 120))
            return "EMER", [arrived, triaged, left], ["arrived", "triaged", "cancelled"], {}
        busy = 1.6 if 18 <= hour < 23 else 1.0
        wait = min(300.0, rng.lognormvariate(math.log(12), 0.8) * busy)
        seen = max(triaged + timedelta(minutes=1), arrived + _minutes(wait))
        done = seen + _minutes(rng.lognormvariate(math.log(150), 0.5))
        draw = rng.random()
        disposition = (
            "other-hcf" if draw < referral_rate
            else "exp" if draw < referral_rate + 0.004
            else "aadvice" if draw < referral_rate + 0.024
            else "oth" if draw < referral_rate + 0.224  # admitted (nhập viện)
            else "home"
        )  # fmt: skip
        statuses = ["arrived", "triaged", "in-progress", "finished"]
        return "EMER", [arrived, triaged, seen, done], statuses, {"disposition": disposition}

    def _stay(
        self, rng: random.Random, day: date, site: Site
    ) -> tuple[str, list[datetime], list[str], dict[str, Any]]:
        hospital = site.hospital
        times: list[datetime] = []
        statuses: list[str] = []
        if rng.random() < 0.4:  # elective: planned at dawn, admitted in the morning
            times.append(_at(day, rng.uniform(6.5, 7.5)))
            statuses.append("planned")
            if rng.random() < 0.05:
                return "IMP", [*times, _at(day, rng.uniform(8, 10))], [*statuses, "cancelled"], {}
            arrived = _at(day, rng.uniform(7.5, 10.5))
            admitted = arrived + _minutes(rng.uniform(10, 60))
            source = "outp"
        else:  # through the emergency department, any hour
            hour = rng.choices(range(24), weights=EMER_HOURS)[0]
            arrived = _at(day, hour + rng.random())
            admitted = arrived + _minutes(rng.uniform(20, 120))
            source = "emd"
        stay_days = min(
            45.0, max(0.5, rng.lognormvariate(math.log(hospital.median_stay_days), 0.55))
        )
        leaves_on = local_date(admitted + timedelta(days=stay_days))
        discharged = max(_at(leaves_on, rng.uniform(9, 16)), admitted + timedelta(hours=4))
        draw = rng.random()
        disposition = (
            "other-hcf" if draw < hospital.referral_rate
            else "exp" if draw < hospital.referral_rate + 0.006
            else "aadvice" if draw < hospital.referral_rate + 0.046
            else "home"
        )  # fmt: skip
        times += [arrived, admitted, discharged]
        statuses += ["arrived", "in-progress", "finished"]
        return "IMP", times, statuses, {"disposition": disposition, "admit_source": source}


def _increasing(times: list[datetime]) -> list[datetime]:
    out: list[datetime] = []
    for moment in times:
        out.append(max(moment, out[-1] + timedelta(seconds=1)) if out else moment)
    return out


# ---------------------------------------------------------------- malformed records


def _without_class(resource: dict[str, Any]) -> dict[str, Any]:
    resource.pop("class", None)
    return resource


def _end_before_start(resource: dict[str, Any]) -> dict[str, Any]:
    start = datetime.fromisoformat(
        resource.get("period", {}).get("start") or resource["meta"]["lastUpdated"]
    )
    resource["period"] = {"start": instant(start), "end": instant(start - timedelta(hours=1))}
    return resource


def _unknown_provider(resource: dict[str, Any]) -> dict[str, Any]:
    resource["serviceProvider"] = {"reference": "Organization/bv-khong-ton-tai"}
    return resource


def _naive_start(resource: dict[str, Any]) -> dict[str, Any]:
    start = datetime.fromisoformat(
        resource.get("period", {}).get("start") or resource["meta"]["lastUpdated"]
    )
    resource["period"] = {"start": start.replace(tzinfo=None).isoformat()}
    return resource


def _unknown_status(resource: dict[str, Any]) -> dict[str, Any]:
    resource["status"] = "done"
    return resource


MALFORMATIONS: tuple[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("class removed", _without_class),
    ("period.end an hour before period.start", _end_before_start),
    ("serviceProvider Organization/bv-khong-ton-tai (unknown)", _unknown_provider),
    ("period.start without a UTC offset", _naive_start),
    ("status 'done' (not an R4 code)", _unknown_status),
)
"""How malformed Encounters are broken, in rotation; id, meta and paging order stay intact."""


# ---------------------------------------------------------------- the simulator


@dataclass(slots=True)
class Search:
    """A search answered once and paged from a frozen result list."""

    resource_type: str
    moment: datetime
    items: list[Any]  # (SimEncounter, version index) or ready resources
    count: int
    created: float


class Simulator:
    """The simulated FHIR server: clock, lazily generated days, beds, searches, fault knobs."""

    def __init__(
        self,
        *,
        province_code: int = 75,
        seed: int = 7,
        scale: float = 0.1,
        history_days: int = 30,
        start: datetime | None = None,
        speed: float = 1.0,
        catch_up: bool = False,
    ) -> None:
        start = clock_start(start, history_days=history_days, catch_up=catch_up)
        if not 0 < scale <= 2:
            raise ValueError("scale must be in (0, 2]")
        self.seed = seed
        self.sites = sites(province_code)
        self.clock = SimClock(start=start, speed=speed, catch_up=catch_up)
        self.faults = Faults()
        self.first_day = local_date(start - timedelta(days=history_days))
        self.created = _at(self.first_day - timedelta(days=WARM_UP_DAYS), 0)
        self.factory = EncounterFactory(seed=seed, scale=scale)
        self.beds = Beds(self.sites, scale=scale, created=self.created)
        self.encounters: dict[str, SimEncounter] = {}
        self._events: list[tuple[datetime, str, int]] = []  # (time, encounter id, version)
        self._event_times: list[datetime] = []
        self._next_day = self.first_day - timedelta(days=WARM_UP_DAYS)
        self._surge = 1.0  # the surge factor the generated days were drawn with
        self._surge_day: date | None = None
        self._surges = 0
        self._searches: OrderedDict[str, Search] = OrderedDict()
        self._search_number = 0
        self._malformed_served = 0

    def now(self) -> datetime:
        """The simulated time (UTC-aware)."""
        return self.clock.now()

    # ------------------------------------------------------------ generation

    def sync(self, moment: datetime) -> None:
        """Generate every day up to `moment`'s and apply a surge knob that changed."""
        added: list[SimEncounter] = []
        while self._next_day <= local_date(moment):
            day = self._next_day
            warm_up = day < self.first_day
            factor = self._surge if self._surge_day is not None and day > self._surge_day else 1.0
            for site in self.sites:
                added += self.factory.day(site, day, self.beds, factor=factor, others=not warm_up)
            self._next_day += timedelta(days=1)
        wanted = self.faults.surge
        if wanted != self._surge:
            today = local_date(moment)
            if wanted > self._surge:  # top up the rest of today with the extra arrivals
                self._surges += 1
                for site in self.sites:
                    extra = self.factory.day(
                        site,
                        today,
                        self.beds,
                        factor=wanted - self._surge,
                        salt=f":s{self._surges}",
                        inpatients=False,
                    )
                    added += [e for e in extra if e.times[0] > moment]
            self._surge, self._surge_day = wanted, today
        history_start = _at(self.first_day, 0)
        added = [e for e in added if e.times[-1] >= history_start]  # warm-up stays over: unseen
        if added:
            for encounter in added:
                self.encounters[encounter.id] = encounter
                self._events += [(t, encounter.id, i) for i, t in enumerate(encounter.times)]
            self._events.sort()
            self._event_times = [event[0] for event in self._events]

    # ------------------------------------------------------------ ground truth

    def current(
        self, moment: datetime, *, after: datetime | None = None, inclusive: bool = False
    ) -> list[tuple[SimEncounter, int]]:
        """Encounters' versions current at `moment`, last updated after `after`, in order."""
        self.sync(moment)
        if after is None:
            low = 0
        elif inclusive:
            low = bisect.bisect_left(self._event_times, after)
        else:
            low = bisect.bisect_right(self._event_times, after)
        high = bisect.bisect_right(self._event_times, moment)
        found = []
        for _, encounter_id, index in self._events[low:high]:
            encounter = self.encounters[encounter_id]
            if encounter.index_at(moment) == index:
                found.append((encounter, index))
        return found

    def encounters_as_of(self, moment: datetime) -> list[dict[str, Any]]:
        """Ground truth: every Encounter's version visible at `moment`, unmalformed, in order."""
        return [encounter.resource(index) for encounter, index in self.current(moment)]

    def bed_locations(self, moment: datetime) -> list[dict[str, Any]]:
        """Every bed Location as it stands at `moment`."""
        self.sync(moment)
        return [bed.resource(moment) for bed in self.beds.all()]

    def bed_census(self, moment: datetime) -> dict[str, dict[str, int]]:
        """Ground truth: beds per operationalStatus code for each Organization id at `moment`."""
        census: dict[str, dict[str, int]] = {}
        for bed in self.bed_locations(moment):
            counts = census.setdefault(bed["managingOrganization"]["reference"].split("/")[1], {})
            code = bed["operationalStatus"]["code"]
            counts[code] = counts.get(code, 0) + 1
        return census

    def organizations(self) -> list[dict[str, Any]]:
        """Every hospital as an Organization resource."""
        return [organization_resource(site, self.created) for site in self.sites]

    # ------------------------------------------------------------ searches

    def search(self, resource_type: str, items: list[Any], count: int, moment: datetime) -> str:
        """Freeze a result list for paging; returns its opaque token."""
        self._search_number += 1
        token = hashlib.sha256(f"{self.seed}:{self._search_number}".encode()).hexdigest()[:24]
        self._searches[token] = Search(resource_type, moment, items, count, time.monotonic())
        while len(self._searches) > MAX_SEARCHES:
            self._searches.popitem(last=False)
        return token

    def found(self, token: str) -> Search | None:
        """A live search by its token (None when unknown or expired)."""
        search = self._searches.get(token)
        if search is None or time.monotonic() - search.created > PAGE_TTL_SECONDS:
            self._searches.pop(token, None)
            return None
        return search

    def serve(self, item: Any) -> dict[str, Any]:
        """One search item as served: Encounters rendered and maybe malformed."""
        if not isinstance(item, tuple):
            return item
        encounter, index = item
        resource = encounter.resource(index)
        if self.faults.malformed <= 0:
            return resource
        self.faults.malformed -= 1
        _, breaker = MALFORMATIONS[self._malformed_served % len(MALFORMATIONS)]
        self._malformed_served += 1
        return breaker(resource)


# ---------------------------------------------------------------- HTTP


class FhirResponse(JSONResponse):
    """JSON with the FHIR media type."""

    media_type = FHIR_JSON


ISSUE_CODES = {400: "invalid", 401: "security", 403: "security", 404: "not-found", 410: "not-found"}
ISSUE_CODES |= {429: "throttled", 499: "timeout", 500: "exception"}


def outcome(status: int, message: str, headers: dict[str, str] | None = None) -> FhirResponse:
    """An error as a FHIR OperationOutcome."""
    issue = {
        "severity": "error",
        "code": ISSUE_CODES.get(status, "processing"),
        "diagnostics": message,
    }
    body = {"resourceType": "OperationOutcome", "issue": [issue]}
    return FhirResponse(body, status_code=status, headers=headers)


def parse_last_updated(values: list[str]) -> tuple[datetime | None, bool, datetime | None]:
    """`_lastUpdated` values as (lower bound, lower inclusive, upper bound inclusive)."""
    lower: datetime | None = None
    inclusive = False
    upper: datetime | None = None
    for raw in values:
        value = raw.strip().replace(" ", "+")  # an unencoded "+" arrives as a space
        prefix, text = value[:2], value[2:]
        if prefix not in ("gt", "ge", "lt", "le"):
            raise ValueError(f"_lastUpdated {raw!r}: use a gt, ge, lt or le prefix")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"_lastUpdated {raw!r} is not a FHIR instant") from None
        if moment.tzinfo is None:
            raise ValueError(f"_lastUpdated {raw!r} needs a time zone, e.g. +07:00 or Z")
        if prefix in ("gt", "ge"):
            lower, inclusive = moment, prefix == "ge"
        else:
            upper = moment if prefix == "le" else moment - timedelta(microseconds=1)
    return lower, inclusive, upper


def create_app(
    *,
    seed: int = 7,
    speed: float = 1.0,
    catch_up: bool = False,
    start: datetime | None = None,
    history_days: int = 30,
    province_code: int = 75,
    scale: float = 0.1,
    api_key: str | None = None,
) -> FastAPI:
    """The simulator as an ASGI app; `app.state.simulator` holds the `Simulator`."""
    simulator = Simulator(
        province_code=province_code,
        seed=seed,
        scale=scale,
        history_days=history_days,
        start=start,
        speed=speed,
        catch_up=catch_up,
    )
    app = FastAPI(title="Hospital FHIR R4 simulator (HIS)")
    app.state.simulator = simulator
    app.include_router(control_router(simulator.clock, simulator.faults))

    @app.middleware("http")
    async def surge_from_now(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.method == "POST" and request.url.path == "/_sim/faults":
            simulator.sync(simulator.now())  # a new surge factor applies from this moment
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> FhirResponse:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
        )
        return outcome(400, reasons)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> FhirResponse:
        return outcome(exc.status_code, str(exc.detail))

    async def refuse(request: Request) -> FhirResponse | None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return outcome(401, "missing or wrong API key")
        failure = await apply_faults(request, simulator.faults)
        if failure is None:
            return None
        message = json.loads(bytes(failure.body)).get("detail", "failure")
        headers = {k: v for k, v in failure.headers.items() if k.lower() == "retry-after"}
        return outcome(failure.status_code, message, headers)

    def bundle(
        request: Request, token: str, search: Search, offset: int, total: bool = True
    ) -> FhirResponse:
        page = search.items[offset : offset + search.count]
        base = str(request.base_url).rstrip("/")
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + search.count < len(search.items):
            query = {
                "_getpages": token,
                "_getpagesoffset": offset + search.count,
                "_count": search.count,
                "_bundletype": "searchset",
            }
            links.append({"relation": "next", "url": f"{base}/?{urlencode(query)}"})
        entries = []
        for item in page:
            resource = simulator.serve(item)
            full_url = f"{base}/{search.resource_type}/{resource.get('id', '')}"
            entries.append({"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}})
        body: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": token,
            "meta": {"lastUpdated": instant(search.moment)},
            "type": "searchset",
        }
        if total:
            body["total"] = len(search.items)
        body |= {"link": links, "entry": entries}
        return FhirResponse(body)

    @app.get("/metadata")
    async def metadata(request: Request) -> FhirResponse:
        if (refused := await refuse(request)) is not None:
            return refused
        return FhirResponse(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": instant(simulator.now()),
                "kind": "instance",
                "software": {"name": "IOC hospital FHIR simulator", "version": "1"},
                "fhirVersion": "4.0.1",
                "format": [FHIR_JSON],
                "rest": [
                    {
                        "mode": "server",
                        "resource": [
                            {
                                "type": "Encounter",
                                "interaction": [{"code": "read"}, {"code": "search-type"}],
                                "searchParam": [{"name": "_lastUpdated", "type": "date"}],
                            },
                            {
                                "type": "Location",
                                "interaction": [{"code": "search-type"}],
                                "searchParam": [{"name": "physical-type", "type": "token"}],
                            },
                            {"type": "Organization", "interaction": [{"code": "search-type"}]},
                        ],
                    }
                ],
            }
        )

    @app.get("/Organization")
    async def organizations(
        request: Request, count: int = Query(default=50, alias="_count", ge=1)
    ) -> FhirResponse:
        if (refused := await refuse(request)) is not None:
            return refused
        moment = simulator.now()
        items = simulator.organizations()
        token = simulator.search("Organization", items, min(count, MAX_COUNT), moment)
        return bundle(request, token, simulator.found(token), 0)  # type: ignore[arg-type]

    @app.get("/Encounter")
    async def encounters(
        request: Request,
        last_updated: Annotated[list[str], Query(alias="_lastUpdated", max_length=64)] = [],  # noqa: B006
        count: int = Query(default=50, alias="_count", ge=1),
        sort: str = Query(default="_lastUpdated", alias="_sort", max_length=64),
    ) -> FhirResponse:
        if (refused := await refuse(request)) is not None:
            return refused
        if sort not in ("_lastUpdated", ""):
            return outcome(400, f"_sort={sort!r} is not supported; use _sort=_lastUpdated")
        try:
            lower, inclusive, upper = parse_last_updated(last_updated)
        except ValueError as exc:
            return outcome(400, str(exc))
        moment = simulator.now()
        items = simulator.current(moment, after=lower, inclusive=inclusive)
        if upper is not None:
            items = [(e, i) for e, i in items if e.times[i] <= upper]
        token = simulator.search("Encounter", items, min(count, MAX_COUNT), moment)
        return bundle(request, token, simulator.found(token), 0)  # type: ignore[arg-type]

    @app.get("/Encounter/{encounter_id}")
    async def encounter(request: Request, encounter_id: str) -> FhirResponse:
        if (refused := await refuse(request)) is not None:
            return refused
        moment = simulator.now()
        simulator.sync(moment)
        found = simulator.encounters.get(encounter_id)
        index = found.index_at(moment) if found is not None else -1
        if found is None or index < 0:
            return outcome(404, f"Encounter/{encounter_id} is not known")
        return FhirResponse(found.resource(index))

    @app.get("/Location")
    async def locations(
        request: Request,
        physical_type: str | None = Query(default=None, alias="physical-type", max_length=200),
        count: int = Query(default=50, alias="_count", ge=1),
    ) -> FhirResponse:
        if (refused := await refuse(request)) is not None:
            return refused
        moment = simulator.now()
        items = simulator.bed_locations(moment) + simulator.beds.wards
        if physical_type:
            wanted = {code.split("|")[-1] for code in physical_type.split(",")}
            items = [item for item in items if item["physicalType"]["coding"][0]["code"] in wanted]
        token = simulator.search("Location", items, min(count, MAX_COUNT), moment)
        return bundle(request, token, simulator.found(token), 0)  # type: ignore[arg-type]

    @app.get("/")
    async def next_page(
        request: Request,
        token: str = Query(alias="_getpages", min_length=1, max_length=64),
        offset: int = Query(default=0, alias="_getpagesoffset", ge=0),
    ) -> FhirResponse:
        if (refused := await refuse(request)) is not None:
            return refused
        search = simulator.found(token)
        if search is None:
            return outcome(410, f"search {token!r} is unknown or expired: search again")
        return bundle(request, token, search, offset)

    return app
