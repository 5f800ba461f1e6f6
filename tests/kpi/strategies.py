"""Hypothesis strategies: random record sets around period boundaries, delivered in batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from ioc.sdk import (
    BedCensus,
    Channel,
    Dossier,
    DossierStatus,
    Encounter,
    EncounterClass,
    FeedbackReport,
    FeedbackStatus,
    Record,
    SchoolDay,
    SchoolLevel,
)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
PROVINCE = "75"
COMMUNES = ("26068", "26041", "26017", "26020")
"""Biên Hòa, Trấn Biên, Tam Hiệp, Long Bình: communes of Đồng Nai."""
FACILITIES = {f"bv-{unit}-{n}": unit for unit in COMMUNES[:3] for n in (1, 2)}
SCHOOLS = {f"th-{unit}-{n}": unit for unit in COMMUNES for n in (1, 2)}

ANCHORS = (
    date(2026, 1, 31),  # January → February
    date(2026, 2, 20),  # just after Tết 2026 (16–20 February)
    date(2026, 3, 31),  # end of Q1
    date(2026, 12, 31),  # end of the year
    date(2027, 1, 1),  # first day of a year
    date(2028, 2, 29),  # leap day
    date(2028, 3, 1),  # the day after it
)
NOTABLE_CLOCKS = (time(0, 0), time(0, 0, 1), time(23, 59, 59), time(7, 30), time(17, 0))
"""Local clock times at period boundaries (local midnight is 17:00 UTC the day before)."""
OPEN_DOSSIER = (
    DossierStatus.REGISTERED,
    DossierStatus.RECEIVED,
    DossierStatus.PROCESSING,
    DossierStatus.SUPPLEMENT_REQUESTED,
    DossierStatus.AWAITING_PAYMENT,
)
ENDED_DOSSIER = (DossierStatus.PROCESSED, DossierStatus.RETURNED)
CANCELLED_DOSSIER = (DossierStatus.NOT_ACCEPTED, DossierStatus.WITHDRAWN, DossierStatus.STOPPED)
UPDATED_BASE = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    """Records delivered in batches, each ingested at its moment, the last one at `now`."""

    now: datetime
    batches: tuple[tuple[Record, ...], ...]
    batch_nows: tuple[datetime, ...]

    @property
    def delivered(self) -> list[Record]:
        """Every version delivered, in delivery order."""
        return [record for batch in self.batches for record in batch]


def local(day: date, clock: time) -> datetime:
    """The UTC instant of a local clock time on a local day."""
    return datetime.combine(day, clock, tzinfo=TZ).astimezone(UTC)


@st.composite
def nows(draw: st.DrawFn) -> datetime:
    """A moment near a month, quarter or year end, a leap day or Tết."""
    day = draw(st.sampled_from(ANCHORS)) + timedelta(days=draw(st.integers(-1, 1)))
    clock = draw(st.one_of(st.sampled_from(NOTABLE_CLOCKS), st.times()))
    return local(day, clock)


@st.composite
def moments(draw: st.DrawFn, now: datetime, *, after: int = -10, before: int = 4) -> datetime:
    """A moment from `after` to `before` days around `now`, often at a boundary or near now."""
    if draw(st.integers(0, 5)) == 0:
        return now + timedelta(minutes=draw(st.integers(-120, 120)))
    today = now.astimezone(TZ).date()
    day = today + timedelta(days=draw(st.integers(after, before)))
    clock = draw(st.one_of(st.sampled_from(NOTABLE_CLOCKS), st.times()))
    return local(day, clock)


@st.composite
def later(draw: st.DrawFn, start: datetime, now: datetime, *, max_days: int = 12) -> datetime:
    """A moment not before `start`: a few days on, at a boundary, or near now."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        moment = now + timedelta(minutes=draw(st.integers(-120, 120)))
    elif choice == 1:
        day = start.astimezone(TZ).date() + timedelta(days=draw(st.integers(0, max_days)))
        moment = local(day, draw(st.sampled_from(NOTABLE_CLOCKS)))
    else:
        moment = start + timedelta(seconds=draw(st.integers(0, max_days * 86400)))
    return max(moment, start)


def _shifted(moment: datetime, seconds: int) -> datetime:
    return moment + timedelta(seconds=seconds)


def _updated(version: int) -> datetime:
    return UPDATED_BASE + timedelta(minutes=version)


@st.composite
def dossier_versions(draw: st.DrawFn, now: datetime) -> list[Dossier]:
    """One dossier's versions (each a whole state), oldest first."""
    versions = []
    for version in range(draw(st.integers(1, 3))):
        received = draw(moments(now))
        due = draw(later(received, now))
        outcome = draw(st.sampled_from(["open", "ended", "ended", "cancelled"]))
        resolved: datetime | None = None
        if outcome != "open" and (outcome == "ended" or draw(st.booleans())):
            resolved = draw(
                st.one_of(
                    st.just(due),
                    later(received, now),
                    st.integers(-3 * 86400, 3 * 86400).map(partial(_shifted, due)),
                )
            )
            resolved = max(resolved, received)
        statuses = {"open": OPEN_DOSSIER, "ended": ENDED_DOSSIER, "cancelled": CANCELLED_DOSSIER}
        fee = draw(st.sampled_from([0.0, 0.0, 50_000.0]))
        versions.append(
            Dossier(
                external_id="pending",
                unit_code=draw(st.sampled_from(COMMUNES)),
                procedure_code="1.004227",
                field_code="DD",
                channel=draw(st.sampled_from(list(Channel))),
                status=draw(st.sampled_from(statuses[outcome])),
                received_at=received,
                due_at=due,
                resolved_at=resolved,
                fee=fee,
                paid_online=draw(st.booleans()),
                digitised=draw(st.booleans()),
                synced_to_portal=draw(st.booleans()),
                apology_issued=draw(st.booleans()),
                source_updated_at=_updated(version),
            )
        )
    return versions


@st.composite
def feedback_versions(draw: st.DrawFn, now: datetime) -> list[FeedbackReport]:
    """One feedback report's versions, oldest first."""
    versions = []
    for version in range(draw(st.integers(1, 3))):
        requested = draw(moments(now))
        expected = draw(st.one_of(st.none(), later(requested, now, max_days=20)))
        closed = draw(st.one_of(st.none(), later(requested, now, max_days=20)))
        versions.append(
            FeedbackReport(
                external_id="pending",
                unit_code=draw(st.sampled_from(COMMUNES)),
                service_code="road",
                status=FeedbackStatus.CLOSED if closed else FeedbackStatus.OPEN,
                requested_at=requested,
                expected_at=expected,
                closed_at=closed,
                source_updated_at=_updated(version),
            )
        )
    return versions


ENCOUNTER_STATUSES = {
    EncounterClass.AMBULATORY: ("finished", "in-progress", "arrived", "cancelled"),
    EncounterClass.INPATIENT: ("in-progress", "finished", "cancelled", "planned"),
    EncounterClass.EMERGENCY: ("finished", "in-progress"),
}


@st.composite
def encounter_versions(draw: st.DrawFn, now: datetime) -> list[Encounter]:
    """One hospital encounter's versions, oldest first: stays and visits, open or ended."""
    versions = []
    for version in range(draw(st.integers(1, 3))):
        facility = draw(st.sampled_from(sorted(FACILITIES)))
        encounter_class = draw(st.sampled_from(list(ENCOUNTER_STATUSES)))
        status = draw(st.sampled_from(ENCOUNTER_STATUSES[encounter_class]))
        start = draw(moments(now))
        end = draw(later(start, now)) if status == "finished" else None
        versions.append(
            Encounter(
                external_id="pending",
                unit_code=FACILITIES[facility],
                facility_code=facility,
                encounter_class=encounter_class,
                status=status,
                start_at=start,
                end_at=end,
                referred_out=draw(st.booleans()) if end else False,
                source_updated_at=_updated(version),
            )
        )
    return versions


@st.composite
def census_identities(draw: st.DrawFn, now: datetime) -> tuple[str, datetime]:
    """A facility and the moment its beds were counted."""
    return draw(st.sampled_from(sorted(FACILITIES))), draw(moments(now, after=-33))


@st.composite
def census_versions(draw: st.DrawFn, facility: str, measured_at: datetime) -> list[BedCensus]:
    """One census's versions: same facility and moment, corrected counts."""
    versions = []
    for version in range(draw(st.integers(1, 2))):
        total = draw(st.integers(0, 60))
        closed = draw(st.integers(0, total))
        versions.append(
            BedCensus(
                external_id="pending",
                unit_code=FACILITIES[facility],
                facility_code=facility,
                measured_at=measured_at,
                beds_total=total,
                beds_closed=closed,
                beds_occupied=draw(st.integers(0, total - closed)),
                source_updated_at=_updated(version),
            )
        )
    return versions


@st.composite
def school_day_versions(draw: st.DrawFn, school: str, day: date) -> list[SchoolDay]:
    """One school day's versions: same school and day, corrected counts."""
    versions = []
    for version in range(draw(st.integers(1, 2))):
        enrolled = draw(st.integers(0, 400))
        versions.append(
            SchoolDay(
                external_id="pending",
                unit_code=SCHOOLS[school],
                school_code=school,
                level=SchoolLevel.PRIMARY,
                day=day,
                enrolled=enrolled,
                present=draw(st.integers(0, enrolled)),
                teachers=draw(st.integers(0, 20)),
                source_updated_at=_updated(version),
            )
        )
    return versions


@st.composite
def scenarios(draw: st.DrawFn, *, same_day_batches: bool = True) -> Scenario:
    """Records of every type in 1–3 batches, some versions re-delivered or delivered late."""
    now = draw(nows())
    today = now.astimezone(TZ).date()
    histories: list[list[Record]] = []
    histories += draw(st.lists(dossier_versions(now), max_size=10))
    histories += draw(st.lists(feedback_versions(now), max_size=5))
    histories += draw(st.lists(encounter_versions(now), max_size=6))
    censuses = draw(st.lists(census_identities(now), max_size=6, unique=True))
    histories += [draw(census_versions(f, m)) for f, m in censuses]
    school_days = draw(
        st.lists(
            st.tuples(
                st.sampled_from(sorted(SCHOOLS)),
                st.integers(-33, 4).map(lambda n: today + timedelta(days=n)),
            ),
            max_size=6,
            unique=True,
        )
    )
    histories += [draw(school_day_versions(s, d)) for s, d in school_days]
    # Ids by position, so that a replayed example stores the same rows.
    histories = [
        [v.model_copy(update={"external_id": f"R{n:04d}"}) for v in versions]
        for n, versions in enumerate(histories)
    ]
    deliveries: list[Record] = []
    for versions in histories:
        # Each record's versions in any order, some twice: a re-delivery, or an older version
        # arriving after a newer one.
        picks = draw(
            st.lists(st.integers(0, len(versions) - 1), min_size=1, max_size=len(versions) + 1)
        )
        deliveries += [versions[i] for i in picks]
    deliveries = draw(st.permutations(deliveries))
    cuts = sorted(draw(st.lists(st.integers(0, len(deliveries)), max_size=2)))
    bounds = [0, *cuts, len(deliveries)]
    batches = tuple(tuple(deliveries[a:b]) for a, b in pairwise(bounds))
    since_midnight = int((now - local(today, time.min)).total_seconds())
    earliest = since_midnight if same_day_batches else 3 * 86400
    offsets = sorted(
        draw(st.lists(st.integers(0, earliest), min_size=len(batches), max_size=len(batches))),
        reverse=True,
    )
    offsets[-1] = 0
    batch_nows = tuple(now - timedelta(seconds=s) for s in offsets)
    return Scenario(now=now, batches=batches, batch_nows=batch_nows)
