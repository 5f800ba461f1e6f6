"""The read side of KPIs, for leaders drilling down from a province-wide figure: the catalogue,
series of stored cells (served from a cache of JSON bytes), a cell broken down by child unit or
by a record column (agency, field, procedure, facility, school), and the records behind a cell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
from pydantic import TypeAdapter
from sqlalchemy import false, func, not_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ioc.db import DirectReads
from ioc.kit.clock import add_months, local_date
from ioc.kpi.catalog import FRESHNESS_ALERT_INTERVALS, Direction, KpiDefinition, ValueKind
from ioc.kpi.engine import INCIDENT_AXIS, SOURCE_AXIS, cell_conditions, compute
from ioc.kpi.formulas import (
    Composite,
    IncidentResponse,
    InPeriod,
    LatestPerEntity,
    MedianInPeriod,
    OpenAt,
    SourceLag,
)
from ioc.kpi.models import KpiValue
from ioc.kpi.periods import MONTHS_IN, Period, PeriodKind
from ioc.kpi.schemas import (
    BreakdownRead,
    BreakdownRow,
    CellRecordsPage,
    KpiDeclarationRead,
    KpiRead,
)
from ioc.kpi.service import CellValue, cell_value, current_values
from ioc.records.service import (
    DEFAULT_LIMIT,
    RecordQuery,
    UnknownUnit,
    query_records,
)
from ioc.records.stores import STORES
from ioc.units.models import AdminUnit

MAX_SERIES_PERIODS = 1000
"""The most periods one series request may span."""
DEFAULT_SERIES_LENGTH = 30
"""Periods in a series when the request gives no `from`."""
KPIS_PATH = "/api/v1/kpis"

log = logging.getLogger(__name__)


class InvalidKpiRead(ValueError):
    """A KPI read asks for something that cannot be answered (a bad period, range, axis, side)."""


# ---------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Axis:
    """A record column a KPI cell can be broken down by, and the column naming its values."""

    column: str
    label_column: str | None


AXES: dict[str, dict[str, Axis]] = {
    "dossier": {
        "agency": Axis("agency_code", "agency_name"),
        "field": Axis("field_code", "field_name"),
        "procedure": Axis("procedure_code", "procedure_name"),
    },
    "feedback": {"agency": Axis("agency", None)},  # the agency column holds its name
    "encounter": {"facility": Axis("facility_code", "facility_name")},
    "bed_census": {"facility": Axis("facility_code", "facility_name")},
    "school_day": {"school": Axis("school_code", "school_name")},
    "connector": {"source": Axis(SOURCE_AXIS, None)},  # data freshness, per connector instance
    "incident": {"agency": Axis(INCIDENT_AXIS, None)},  # MTTA/MTTR, per agency code
}
"""Breakdown axes beside `unit`, per record type; each column is a records filter too."""

_VALUE_IN_WORDS = {
    ValueKind.PERCENT: "100 × numerator ÷ denominator",
    ValueKind.MEAN: "numerator ÷ denominator",
    ValueKind.MEDIAN: "the median (numerator) of the denominator's records",
    ValueKind.MAXIMUM: "the largest (numerator) of the denominator's items",
    ValueKind.COUNT: "the numerator",
}


def breakdown_axes(kpi: KpiDefinition) -> list[str]:
    """The values `by` accepts for `kpi`: `unit`, then the axes of its record type."""
    return ["unit", *AXES.get(kpi.record_type, {})]


def describe_formula(kpi: KpiDefinition) -> tuple[str, str]:
    """The formula's kind and a one-line description of it."""
    formula = kpi.formula
    if isinstance(formula, Composite):
        return "composite", f"a score combined from {', '.join(formula.components)}"
    if isinstance(formula, SourceLag):
        return "source_lag", (
            "minutes from each enabled connector source's last successful poll to the period's "
            "end (now while it runs), the largest of them; a source lagging over "
            f"{FRESHNESS_ALERT_INTERVALS}× its polling interval is stale (each source's lag in "
            "the breakdown by source, its stale flag on /api/v1/connectors)"
        )
    if isinstance(formula, IncidentResponse):
        return "incident_response", (
            f"mean minutes from opening to {formula.moment} of the incidents whose "
            f"{formula.moment} is in the period (numerator: the minutes summed; denominator: "
            "the incidents); stored by the incidents domain as incidents are acknowledged and "
            "resolved; the province counts every incident, its own included; the incidents "
            "themselves at /api/v1/incidents, response times over any range at "
            "/api/v1/incidents/stats?by=unit|agency"
        )
    if isinstance(formula, MedianInPeriod):
        return "median_in_period", (
            f"median {formula.value} of the {formula.record_type} records whose "
            f"{formula.time_column} is in the period"
        )
    if isinstance(formula, InPeriod):
        kind = "in_period"
        records = f"{formula.record_type} records whose {formula.time_column} is in the period"
    elif isinstance(formula, OpenAt):
        kind = "open_at"
        records = f"{formula.record_type} records open at the period's end (now while it runs)"
    elif isinstance(formula, LatestPerEntity):
        kind = "latest_per_entity"
        records = (
            f"the latest {formula.record_type} record of each {formula.entity} "
            "at the period's end, summed"
        )
    else:  # a formula kind this module does not know yet
        kind, records = type(formula).__name__, f"{formula.record_type} records"
    value = _VALUE_IN_WORDS.get(kpi.value_kind, kpi.value_kind.value)
    return kind, f"{records}; value = {value}"


def declaration(kpi: KpiDefinition) -> KpiDeclarationRead:
    """A catalogue entry as the API presents it."""
    kind, words = describe_formula(kpi)
    return KpiDeclarationRead(
        id=kpi.id,
        name_vi=kpi.name_vi,
        name_en=kpi.name_en,
        domain=kpi.domain,
        unit_of_measure=kpi.unit_of_measure,
        good_direction=kpi.good_direction.value,
        value_kind=kpi.value_kind.value,
        headline_period=kpi.headline_period.value,
        warn=kpi.warn,
        critical=kpi.critical,
        record_type=kpi.record_type,
        additive=kpi.is_additive,
        formula_kind=kind,
        formula=words,
        breakdown_axes=breakdown_axes(kpi),
    )


# ---------------------------------------------------------------- periods


def parse_kind(kind: str) -> PeriodKind:
    """A period kind from its name, or `InvalidKpiRead`."""
    try:
        return PeriodKind(kind)
    except ValueError:
        names = ", ".join(k.value for k in PeriodKind)
        raise InvalidKpiRead(f"period must be one of {names}, not {kind!r}") from None


def resolve_period(
    kpi: KpiDefinition, kind: str | None, start: date | None, *, now: datetime, tz: ZoneInfo
) -> Period:
    """The cell's period: `kind` (the KPI's headline kind by default) starting on `start`
    (the running one by default); a `start` that does not begin a period is refused."""
    period_kind = parse_kind(kind) if kind is not None else kpi.headline_period
    if start is None:
        return Period.containing(period_kind, local_date(now, tz))
    try:
        return Period.parse(period_kind.value, start)
    except ValueError as exc:
        raise InvalidKpiRead(str(exc)) from None


def _shift(period: Period, count: int) -> Period:
    """The period `count` periods after `period` (before it when negative)."""
    if period.kind is PeriodKind.DAY:
        return Period(period.kind, period.start + timedelta(days=count))
    return Period(period.kind, add_months(period.start, count * MONTHS_IN[period.kind]))


def _periods_from(first: Period, last: Period) -> int:
    """How many periods run from `first` to `last`, both included."""
    if first.kind is PeriodKind.DAY:
        return (last.start - first.start).days + 1
    months = (last.start.year - first.start.year) * 12 + last.start.month - first.start.month
    return months // MONTHS_IN[first.kind] + 1


def series_span(
    kind: str, date_from: date | None, date_to: date | None, *, today: date
) -> tuple[Period, Period]:
    """The first and last periods of `kind` holding a day of [date_from, date_to]; by default
    the last `DEFAULT_SERIES_LENGTH` periods up to today. At most `MAX_SERIES_PERIODS`."""
    period_kind = parse_kind(kind)
    last = Period.containing(period_kind, date_to or today)
    if date_from is None:
        return _shift(last, 1 - DEFAULT_SERIES_LENGTH), last
    if date_from > (date_to or today):
        raise InvalidKpiRead(
            f"from {date_from.isoformat()} is after to {(date_to or today).isoformat()}"
        )
    first = Period.containing(period_kind, date_from)
    count = _periods_from(first, last)
    if count > MAX_SERIES_PERIODS:
        raise InvalidKpiRead(
            f"the range holds {count} {period_kind.value} periods; at most {MAX_SERIES_PERIODS} "
            "per request: narrow it or choose a longer period"
        )
    return first, last


def series_periods(first: Period, last: Period) -> list[Period]:
    """Every period from `first` to `last`, both included, in order."""
    return [_shift(first, n) for n in range(_periods_from(first, last))]


# ---------------------------------------------------------------- units


async def require_unit(session: AsyncSession, code: str) -> AdminUnit:
    """The stored unit with `code`, or `UnknownUnit`."""
    unit = await session.get(AdminUnit, code)
    if unit is None:
        raise UnknownUnit(f"unknown unit code {code!r}")
    return unit


async def _children(session: AsyncSession, code: str) -> dict[str, str]:
    """The units directly below `code`: code → name."""
    rows = await session.execute(
        select(AdminUnit.code, AdminUnit.name).where(AdminUnit.parent_code == code)
    )
    return {key: name for key, name in rows.all()}


async def counted_units(session: AsyncSession, code: str) -> list[str]:
    """The communes a unit's cells are computed from: its children, or itself if it has none."""
    return sorted(await _children(session, code)) or [code]


# ---------------------------------------------------------------- series and its cache


class SeriesKey(NamedTuple):
    """What a cached read answers: a KPI's unit over a run of periods of one kind; or, with
    `kpi` = `ANY_KPI`, a view of several KPIs of one unit (`kind` names the view)."""

    kpi: str
    unit: str
    kind: str
    first: date
    last: date


ANY_KPI = "*"
"""The `kpi` of a cached view that depends on every KPI of its unit."""


Ticket = tuple[int, int]
"""What `SeriesCache.ticket` hands out: the generation of the key's (kpi, unit) and how many
remote updates the cache had taken in."""


class SeriesCache:
    """An LRU of serialized reads (JSON bytes), dropped when a cell of their (kpi, unit)
    changes — a view of `ANY_KPI` when any cell of its unit does. `ttl_seconds` bounds
    staleness from writers this process never hears of (another replica's recompute,
    `ioc rebuild`); an entry may be given a shorter one (values that move with time alone).

    Another process's recompute arrives as the new headline state of a KPI topic
    (`update_topic`): it patches the series of that KPI and unit in place with the cells it
    lists as changed, and the unit's current-values views with the headline (the state is the
    very `KpiRead` they hold), including a view whose read is in flight when its `put` comes,
    so that a stream of updates does not keep every series and view of its units a miss."""

    def __init__(
        self,
        *,
        max_entries: int = 512,
        ttl_seconds: float = 300.0,
        computed_ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.computed_ttl_seconds = computed_ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[SeriesKey, tuple[bytes, float, float]] = OrderedDict()
        """Bytes by key, with when they expire and until when they may still be served stale."""
        self._keys_of: dict[tuple[str, str], set[SeriesKey]] = {}
        # Bumped on every invalidation, so that a read made before a change cannot be
        # cached after it (bounded by the number of KPIs × units).
        self._generations: dict[tuple[str, str], int] = {}
        # Remote headline states, the latest per (kpi, unit), numbered in order of arrival:
        # a view read before one of them arrived is patched with it when it is put.
        self._updates = 0
        self._cleared_at = 0
        """`_updates` when the cache was last cleared: older tickets are refused."""
        self._latest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._also: dict[SeriesKey, frozenset[tuple[str, str]]] = {}
        """The other cells than its (kpi, unit) that a cached read depends on (a breakdown's
        child units)."""
        self._views: dict[SeriesKey, Any] = {}
        """Patched entries not serialized again yet (a view's items, a series' document; `get`
        serializes them)."""
        self._computed: OrderedDict[tuple[str, str, Period], tuple[int, float, KpiRead]] = (
            OrderedDict()
        )
        """Cells computed on read (none stored): by (kpi, unit, period), with the generation
        of their (kpi, unit) when computed and when they expire."""
        self.flights: dict[tuple[SeriesKey, int], asyncio.Future[bytes]] = {}
        """Reads in progress by key and generation, shared by the requests that miss the same
        entry meanwhile (their bytes are patched with what arrives until they are put)."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: SeriesKey) -> bytes | None:
        """The cached bytes of `key`, or None (never cached, dropped, or expired)."""
        return self._read(key, stale=False)

    def stale(self, key: SeriesKey) -> bytes | None:
        """The bytes of `key` expired but not yet past the stale time they were put with, or
        None (see `put`)."""
        return self._read(key, stale=True)

    def _read(self, key: SeriesKey, *, stale: bool) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        data, expires_at, kept_until = entry
        now = self._clock()
        if now > kept_until:
            self._drop(key)
            return None
        if (now > expires_at) != stale:
            return None
        self._entries.move_to_end(key)
        patched = self._views.pop(key, None)
        if patched is not None:
            data = (
                _KPI_READS.dump_json(_KPI_READS.validate_python(patched))
                if _is_current_view(key)
                else orjson.dumps(patched)
            )
            self._entries[key] = (data, expires_at, kept_until)
        return data

    def ticket(self, key: SeriesKey, *, also: Iterable[tuple[str, str]] = ()) -> Ticket:
        """Take before reading the database; `put` refuses bytes an invalidation made stale
        (of the key's (kpi, unit), or of the other cells `also` its read depends on)."""
        return self._generation(key, also), self._updates

    def _generation(self, key: SeriesKey, also: Iterable[tuple[str, str]]) -> int:
        """The sum of the generations of the cells `key` depends on (each only grows)."""
        cells = {(key.kpi, key.unit), *also}
        return sum(self._generations.get(cell, 0) for cell in cells)

    def put(
        self,
        key: SeriesKey,
        data: bytes,
        ticket: Ticket,
        *,
        ttl_seconds: float | None = None,
        stale_seconds: float = 0.0,
        also: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """Cache `data` for `key`, unless a cell of its (kpi, unit) changed since `ticket`; a
        current-values view is first patched with the remote updates that came since. Once
        expired, the bytes are still `stale` for `stale_seconds` (kept up to date like fresh
        ones, but for the time passing). Bytes read from other cells than the key's (kpi, unit)
        name them in `also` (as in their ticket): dropped or patched when one of them changes.
        Returns the bytes cached (or `data` when refused)."""
        cell = (key.kpi, key.unit)
        also = frozenset(also) - {cell}
        generation, updates = ticket
        if self._generation(key, also) != generation or updates < self._cleared_at:
            return data
        if updates != self._updates and _is_current_view(key):
            patched = self._catch_up(key, data, since=updates)
            if patched is None:
                return data
            data = patched
        ttl = self.ttl_seconds if ttl_seconds is None else min(ttl_seconds, self.ttl_seconds)
        expires_at = self._clock() + ttl
        self._entries[key] = (data, expires_at, expires_at + stale_seconds)
        self._entries.move_to_end(key)
        self._views.pop(key, None)
        for depended in (cell, *also):
            self._keys_of.setdefault(depended, set()).add(key)
        if also:
            self._also[key] = also
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))
        return data

    def computed_ticket(self, kpi_id: str, unit_code: str) -> int:
        """Take before computing a cell on read; `remember_computed` refuses it if a cell of
        its (kpi, unit) changed meanwhile."""
        return self._generations.get((kpi_id, unit_code), 0)

    def computed(self, kpi_id: str, unit_code: str, period: Period) -> KpiRead | None:
        """A cell computed on read before, unless a cell of its (kpi, unit) changed since (a
        recompute stored it, or changed the records it counts) or `computed_ttl_seconds`
        passed (the interval of the time-driven refresh, which is how late a stored cell of a
        value that moves with time alone may be too)."""
        key = (kpi_id, unit_code, period)
        entry = self._computed.get(key)
        if entry is None:
            return None
        generation, expires_at, read = entry
        if generation != self.computed_ticket(kpi_id, unit_code) or self._clock() >= expires_at:
            del self._computed[key]
            return None
        self._computed.move_to_end(key)
        return read

    def remember_computed(
        self, kpi_id: str, unit_code: str, period: Period, read: KpiRead, ticket: int
    ) -> None:
        """Keep a cell computed on read after `ticket` was taken, if nothing changed since."""
        if ticket != self.computed_ticket(kpi_id, unit_code):
            return
        key = (kpi_id, unit_code, period)
        self._computed[key] = (ticket, self._clock() + self.computed_ttl_seconds, read)
        self._computed.move_to_end(key)
        while len(self._computed) > self.max_entries:
            self._computed.popitem(last=False)

    def invalidate(self, cells: Iterable[CellValue]) -> None:
        """Forget every read of the (kpi, unit) of these changed cells, and their units' views."""
        self._forget({(c.kpi.id, c.unit_code) for c in cells})

    def clear(self) -> None:
        """Forget everything."""
        for key in list(self._entries):
            self._drop(key)
        self._latest.clear()
        self._computed.clear()
        self._updates += 1
        self._cleared_at = self._updates

    def invalidate_topic(self, topic: str) -> None:
        """Forget what `invalidate` would for a changed cell of a `kpi:<kpi>:<unit>` topic's KPI
        and unit (another process recomputed it; the PostgreSQL fan-out names the topic).
        Other topics are ignored."""
        cell = _kpi_cell(topic)
        if cell is not None:
            self._forget({cell})

    def forget_series_of_topic(self, topic: str) -> None:
        """Forget the series of a `kpi:<kpi>:<unit>` topic's KPI and unit, not its unit's
        current-values views: another process changed cells of the topic other than the
        headline one (`"c"` in the fan-out), which those views do not show."""
        cell = _kpi_cell(topic)
        if cell is not None:
            self._forget_reads(cell)

    def update_topic(self, topic: str, state: Any) -> None:
        """Another process published `state`, the new headline `KpiRead` of a KPI topic with
        the cells it changed: patch the series of the KPI and unit with those cells (refusing
        their reads in flight) and the unit's current-values views with the headline. A state
        of another shape drops what `invalidate_topic` drops. Other topics are ignored."""
        cell = _kpi_cell(topic)
        if cell is None:
            return
        read = _headline_read(state)
        if read is None:
            self._forget({cell})
            return
        self._patch_series(cell, state.get("changed"))
        self._updates += 1
        self._latest[cell] = (self._updates, read)
        _kpi, unit = cell
        for key in list(self._keys_of.get((ANY_KPI, unit), ())):
            if not _is_current_view(key) or not self._patch(key, read):
                self._drop(key)

    def _patch(self, key: SeriesKey, read: dict[str, Any]) -> bool:
        """Put `read` in place of its KPI's item of a cached view; False if it does not fit."""
        items = self._views.get(key)
        if items is None:
            entry = self._entries.get(key)
            if entry is None:
                return False
            items = orjson.loads(entry[0])
        for index, item in enumerate(items):
            if item.get("kpi") == read["kpi"]:
                if (item.get("period_kind"), item.get("period_start")) != (
                    read["period_kind"],
                    read["period_start"],
                ):
                    return False  # another headline period (the day turned): read it again
                items[index] = read
                self._views[key] = items
                return True
        return True  # the view does not show this KPI

    def _patch_series(self, cell: tuple[str, str], changes: Any) -> None:
        """Put the `changes` (cells of one KPI and unit, as `publish_changes` lists them) into
        the cached series of that KPI and unit, dropping those they do not fit; refuse the
        reads in flight and forget the cells computed on read, as a drop does."""
        self._generations[cell] = self._generations.get(cell, 0) + 1
        for key in list(self._keys_of.get(cell, ())):
            document = self._views.get(key)
            if document is None:
                document = orjson.loads(self._entries[key][0])
            fits = (
                _patch_breakdown(document, cell[1], changes)
                if key.kind.startswith(BREAKDOWN_VIEW)
                else _patch_points(document, changes)
            )
            if fits:
                self._views[key] = document
            else:
                self._drop(key)

    def _catch_up(self, key: SeriesKey, data: bytes, *, since: int) -> bytes | None:
        """`data` of a view read before remote updates numbered after `since`, patched with
        them; None if one does not fit."""
        items = orjson.loads(data)
        patched = False
        for index, item in enumerate(items):
            latest = self._latest.get((item.get("kpi"), key.unit))
            if latest is None or latest[0] <= since:
                continue
            read = latest[1]
            if (item.get("period_kind"), item.get("period_start")) != (
                read["period_kind"],
                read["period_start"],
            ):
                return None
            items[index] = read
            patched = True
        return _KPI_READS.dump_json(_KPI_READS.validate_python(items)) if patched else data

    def _forget(self, changed: set[tuple[str, str]]) -> None:
        """Drop the reads of these (kpi, unit) and their units' views; refuse older bytes."""
        for cell in changed | {(ANY_KPI, unit) for _kpi, unit in changed}:
            self._forget_reads(cell)

    def _forget_reads(self, cell: tuple[str, str]) -> None:
        """Drop the cached reads of one (kpi, unit) and refuse the ones in flight."""
        self._generations[cell] = self._generations.get(cell, 0) + 1
        for key in list(self._keys_of.get(cell, ())):
            self._drop(key)

    def _drop(self, key: SeriesKey) -> None:
        self._entries.pop(key, None)
        self._views.pop(key, None)
        for cell in ((key.kpi, key.unit), *self._also.pop(key, ())):
            keys = self._keys_of.get(cell)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_of[cell]


CURRENT_VIEW = "current:"
"""The `kind` of a cached current-values view begins so (the KPI ids follow)."""

BREAKDOWN_VIEW = "breakdown:"
"""The `kind` of a cached breakdown by child unit begins so (period kind, sort, links follow)."""


def _is_current_view(key: SeriesKey) -> bool:
    return key.kpi == ANY_KPI and key.kind.startswith(CURRENT_VIEW)


def _patch_points(document: dict[str, Any], changes: Any) -> bool:
    """Put each of `changes` (changed cells: period kind and start, value, numerator,
    denominator, computed_at) in place of its period's point of a series document, unless the
    point was computed later (updates may arrive out of order); False when they are not such a
    list."""
    if not isinstance(changes, list):
        return False
    kind, points = document["period_kind"], document["points"]
    at = {point["period_start"]: index for index, point in enumerate(points)}
    for change in changes:
        if not isinstance(change, dict) or not change.keys() >= _CHANGE_FIELDS:
            return False
        index = at.get(change["period_start"])
        if change["period_kind"] != kind or index is None:
            continue  # another kind of period, or outside the series
        computed_at = datetime.fromisoformat(change["computed_at"])
        before = points[index]["computed_at"]
        if before is not None and datetime.fromisoformat(before) > computed_at:
            continue
        points[index] = {
            "period_start": change["period_start"],
            "value": change["value"],
            "numerator": change["numerator"],
            "denominator": change["denominator"],
            "computed_at": orjson.dumps(computed_at, option=orjson.OPT_UTC_Z)[1:-1].decode(),
        }
    return True


def _patch_breakdown(document: dict[str, Any], unit: str, changes: Any) -> bool:
    """Put the cell of `changes` (of one KPI and `unit`: the breakdown's own unit or one of its
    children) whose period is the breakdown's in place of the total or of that child's row, the
    rows sorted again; False when the changes are not such a list or name no row."""
    if not isinstance(changes, list):
        return False
    period = (document["period_kind"], document["period_start"])
    for change in changes:
        if not isinstance(change, dict) or not change.keys() >= _CHANGE_FIELDS:
            return False
        if (change["period_kind"], change["period_start"]) != period:
            continue
        if unit == document["unit"]:
            row = document["total"]
        else:
            row = next((r for r in document["rows"] if r["key"] == unit), None)
            if row is None:
                return False
        ratio = document["value_kind"] != ValueKind.COUNT.value  # as `KpiDefinition.is_ratio`
        denominator = change["denominator"]
        row["numerator"], row["value"] = change["numerator"], change["value"]
        row["denominator"] = 0.0 if ratio and denominator is None else denominator
    if document["sort"] == "value":
        sign = 1.0 if document["good_direction"] == Direction.UP.value else -1.0
        document["rows"].sort(
            key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0), r["key"] or "")
        )
    return True


_CHANGE_FIELDS = frozenset(
    ("period_kind", "period_start", "value", "numerator", "denominator", "computed_at")
)


def _kpi_cell(topic: str) -> tuple[str, str] | None:
    """(kpi id, unit code) of a `kpi:<kpi>:<unit>` topic; None for any other topic."""
    family, _, rest = topic.partition(":")
    kpi_id, _, unit = rest.rpartition(":")
    return (kpi_id, unit) if family == "kpi" and kpi_id and unit else None


_READ_FIELDS = frozenset(KpiRead.model_fields)


def _headline_read(state: Any) -> dict[str, Any] | None:
    """A KPI topic's published state as the `KpiRead` it carries (its `changed` list left
    out); None when it is not one."""
    if not isinstance(state, dict) or not state.keys() >= _READ_FIELDS:
        return None
    return {name: state[name] for name in KpiRead.model_fields}


def _series_query(kpi: KpiDefinition, unit: str, first: Period, last: Period) -> Any:
    """The unit (to tell an unknown one) outer-joined with its stored cells of the range."""
    cells = KpiValue.__table__
    units = AdminUnit.__table__
    return (
        select(
            units.c.code,
            cells.c.period_start,
            cells.c.numerator,
            cells.c.denominator,
            cells.c.computed_at,
        )
        .select_from(units)
        .outerjoin(
            cells,
            (cells.c.unit_code == units.c.code)
            & (cells.c.kpi == kpi.id)
            & (cells.c.period_kind == first.kind.value)
            & cells.c.period_start.between(first.start, last.start),
        )
        .where(units.c.code == unit)
    )


_SERIES_SQL = (
    f"SELECT u.code, v.period_start, v.numerator, v.denominator, v.computed_at "
    f"FROM {AdminUnit.__tablename__} AS u LEFT OUTER JOIN {KpiValue.__tablename__} AS v "
    "ON v.unit_code = u.code AND v.kpi = $1 AND v.period_kind = $2 "
    "AND v.period_start BETWEEN $3 AND $4 WHERE u.code = $5"
)
"""`_series_query` for asyncpg itself: one round trip, no transaction, a prepared statement."""


async def _series_rows(
    kpi: KpiDefinition,
    unit: str,
    first: Period,
    last: Period,
    *,
    engine: AsyncEngine,
    direct: DirectReads | None,
) -> list[Any]:
    if direct is not None:  # PostgreSQL: no transaction round trips
        return await direct.fetch(
            _SERIES_SQL, kpi.id, first.kind.value, first.start, last.start, unit
        )
    async with engine.connect() as connection:
        return list((await connection.execute(_series_query(kpi, unit, first, last))).all())


def series_document(
    kpi: KpiDefinition, unit: str, periods: Sequence[Period], rows: list[Any]
) -> dict[str, Any]:
    """The stored cells of `kpi` for `unit` in `periods` (rows of `_series_query`), shaped as
    `SeriesRead`; a missing cell reads as zero. No row: `UnknownUnit`."""
    if not rows:
        raise UnknownUnit(f"unknown unit code {unit!r}")
    first, last = periods[0], periods[-1]
    stored = {row[1]: row[2:] for row in rows if row[1] is not None}
    zero_denominator = 0.0 if kpi.is_ratio else None
    points = []
    for period in periods:
        numerator, denominator, computed_at = stored.get(
            period.start, (0.0, zero_denominator, None)
        )
        points.append(
            {
                "period_start": period.start,
                "value": kpi.value(numerator, denominator),
                "numerator": numerator,
                "denominator": denominator,
                "computed_at": computed_at,
            }
        )
    return {
        "kpi": kpi.id,
        "unit": unit,
        "name_vi": kpi.name_vi,
        "name_en": kpi.name_en,
        "unit_of_measure": kpi.unit_of_measure,
        "good_direction": kpi.good_direction.value,
        "value_kind": kpi.value_kind.value,
        "warn": kpi.warn,
        "critical": kpi.critical,
        "period_kind": first.kind.value,
        "date_from": first.start,
        "date_to": last.last_day,
        "points": points,
    }


async def series(
    session: AsyncSession, kpi: KpiDefinition, unit: str, periods: Sequence[Period]
) -> dict[str, Any]:
    """The series as `series_document` shapes it, read in the caller's session."""
    rows = (await session.execute(_series_query(kpi, unit, periods[0], periods[-1]))).all()
    return series_document(kpi, unit, periods, list(rows))


async def series_bytes(
    kpi: KpiDefinition,
    unit: str,
    span: tuple[Period, Period],
    *,
    engine: AsyncEngine,
    cache: SeriesCache,
    direct: DirectReads | None = None,
) -> tuple[bytes, bool]:
    """The series over `span` as JSON bytes (the shape of `SeriesRead`), from `cache` when it
    holds them; and whether it did. A miss is one statement (with `direct`, one round trip)."""
    first, last = span
    key = SeriesKey(kpi.id, unit, first.kind.value, first.start, last.start)
    cached = cache.get(key)
    if cached is not None:
        return cached, True
    ticket = cache.ticket(key)
    rows = await _series_rows(kpi, unit, first, last, engine=engine, direct=direct)
    document = series_document(kpi, unit, series_periods(first, last), rows)
    data = orjson.dumps(document, option=orjson.OPT_UTC_Z)
    return cache.put(key, data, ticket), False


CURRENT_VALUES_TTL_SECONDS = 5.0
"""How long current values stay cached when no cell of their unit changes: a few of them move
with time alone (minutes since a source's last poll, incident response times)."""

CURRENT_VALUES_STALE_SECONDS = 5.0
"""For how long after that they are still served while one request's read replaces them: a
request never waits for that read, and a value moving with time alone is at most this much
older (plus the read) than it would be otherwise."""

_KPI_READS = TypeAdapter(list[KpiRead])


async def current_values_bytes(
    sessionmaker: async_sessionmaker[AsyncSession],
    cache: SeriesCache,
    unit: str,
    kpis: Sequence[KpiDefinition],
    *,
    now: datetime,
    tz: ZoneInfo,
) -> tuple[bytes, bool]:
    """The current values of `kpis` for `unit` as JSON bytes (a list of `KpiRead`), from `cache`
    when it holds them, and whether it did. Dropped when any cell of the unit changes here;
    patched when another process publishes a new headline value. Requests that miss while the
    same read is in progress share it; expired values, for `CURRENT_VALUES_STALE_SECONDS`, are
    answered at once while the read goes on."""
    today = local_date(now, tz)
    view = CURRENT_VIEW + ",".join(kpi.id for kpi in kpis)
    key = SeriesKey(ANY_KPI, unit, view, today, today)
    cached = cache.get(key)
    if cached is not None:
        return cached, True
    ticket = cache.ticket(key)
    flying = (key, ticket[0])
    flight = cache.flights.get(flying)
    if flight is None:

        async def read() -> bytes:
            async with sessionmaker() as session:
                await require_unit(session, unit)
                values = await current_values(
                    session, unit, now=now, tz=tz, kpis=kpis, computed=cache
                )
            data = _KPI_READS.dump_json(values)
            return cache.put(
                key,
                data,
                ticket,
                ttl_seconds=CURRENT_VALUES_TTL_SECONDS,
                stale_seconds=CURRENT_VALUES_STALE_SECONDS,
            )

        def landed(flight: asyncio.Future[bytes]) -> None:
            cache.flights.pop(flying, None)
            failure = None if flight.cancelled() else flight.exception()
            if failure is not None:  # also when no request waits for it (a stale answer)
                log.warning("reading the current values of %s failed", unit, exc_info=failure)

        flight = asyncio.ensure_future(read())
        cache.flights[flying] = flight
        flight.add_done_callback(landed)
    stale = cache.stale(key)
    if stale is not None:
        return stale, True
    return await asyncio.shield(flight), False


# ---------------------------------------------------------------- breakdown

Sums = tuple[float, float | None]


def _axis(kpi: KpiDefinition, by: str) -> Axis | None:
    """The axis `by` names for `kpi` (None for `unit`), or `InvalidKpiRead`."""
    if by == "unit":
        return None
    axis = AXES.get(kpi.record_type, {}).get(by)
    if axis is None:
        raise InvalidKpiRead(
            f"cannot break {kpi.id} down by {by!r}; its axes are {', '.join(breakdown_axes(kpi))}"
        )
    return axis


def records_path(
    kpi: KpiDefinition, unit: str, period: Period, filters: Mapping[str, str] | None = None
) -> str | None:
    """The path listing the records behind a cell (or a part of it): its denominator's for a
    ratio, its numerator's for a count; None for a composite score, which has none."""
    if isinstance(kpi.formula, Composite | SourceLag | IncidentResponse):
        return None
    side = "denominator" if kpi.is_ratio else "numerator"
    params = {
        "unit": unit,
        "period": period.kind.value,
        "start": period.start.isoformat(),
        "side": side,
        **(filters or {}),
    }
    return f"{KPIS_PATH}/{kpi.id}/records?{urlencode(params)}"


async def breakdown(
    session: AsyncSession,
    kpi: KpiDefinition,
    unit: str,
    period: Period,
    *,
    by: str,
    sort: str = "value",
    now: datetime,
    tz: ZoneInfo,
    children: dict[str, str] | None = None,
) -> BreakdownRead:
    """One cell (the total) and its parts: by `unit`, the child units' stored cells (computed
    on read when none is stored yet); by an axis, the cell computed per value of a record column.
    For an additive KPI the parts' numerators and denominators sum to the total's. `children`:
    the unit's, when the caller has read them (`_children`)."""
    if sort not in ("value", "key"):
        raise InvalidKpiRead(f"sort must be value or key, not {sort!r}")
    axis = _axis(kpi, by)
    place = await require_unit(session, unit)
    if children is None:
        children = await _children(session, unit)
    if axis is None:
        if not children:
            raise InvalidKpiRead(
                f"unit {unit} has no units below it; break it down by one of "
                f"{', '.join(breakdown_axes(kpi)[1:]) or 'nothing else'}"
            )
        parts = await _unit_parts(session, kpi, sorted(children), period, now=now, tz=tz)
        labels = children
        links = {code: records_path(kpi, code, period) for code in parts}
    else:
        communes = sorted(children) or [unit]
        if isinstance(kpi.formula, IncidentResponse) and children:
            communes.append(unit)  # incidents filed under the unit itself count in its cell
        computed = await compute(session, kpi, communes, [period], now=now, tz=tz, by=axis.column)
        parts = {key: sums for (key, _), sums in computed.items()}
        labels = await _labels(kpi, axis, parts, session)
        links = {
            key: records_path(kpi, unit, period, {axis.column: key})
            for key in parts
            if key is not None
        }
    rows = [
        _row(kpi, key, labels.get(key) if key is not None else None, sums, links.get(key))
        for key, sums in parts.items()
    ]
    whole = await cell_value(session, kpi, unit, period, now=now, tz=tz)
    total = _row(
        kpi, unit, place.name, (whole.numerator, whole.denominator), records_path(kpi, unit, period)
    )
    return BreakdownRead(
        kpi=kpi.id,
        unit=unit,
        period_kind=period.kind.value,
        period_start=period.start,
        by=by,
        column=axis.column if axis is not None else None,
        value_kind=kpi.value_kind.value,
        good_direction=kpi.good_direction.value,
        additive=kpi.is_additive,
        sort=sort,
        rows=sorted(rows, key=_by_value(kpi) if sort == "value" else _by_key),
        total=total,
    )


async def breakdown_bytes(
    session: AsyncSession,
    cache: SeriesCache,
    kpi: KpiDefinition,
    unit: str,
    period: Period,
    *,
    by: str,
    sort: str,
    links: bool,
    now: datetime,
    tz: ZoneInfo,
) -> tuple[bytes, bool]:
    """`breakdown` as JSON bytes (the records paths left out unless `links`), and whether they
    came from `cache`. By child unit they are cached like current values: patched with the
    cells of the unit and its children that other processes publish, dropped when one changes
    here, read again after `CURRENT_VALUES_TTL_SECONDS` (the KPIs computed on read)."""
    if by != "unit":
        found = await breakdown(session, kpi, unit, period, by=by, sort=sort, now=now, tz=tz)
        return _breakdown_json(found, links=links), False
    kind = f"{BREAKDOWN_VIEW}{period.kind.value}:{sort}:{'links' if links else 'plain'}"
    key = SeriesKey(kpi.id, unit, kind, period.start, period.start)
    cached = cache.get(key)
    if cached is not None:
        return cached, True
    children = await _children(session, unit)
    depends = [(kpi.id, code) for code in children]
    ticket = cache.ticket(key, also=depends)  # before the cells are read
    found = await breakdown(
        session, kpi, unit, period, by=by, sort=sort, now=now, tz=tz, children=children
    )
    data = _breakdown_json(found, links=links)
    return cache.put(key, data, ticket, ttl_seconds=CURRENT_VALUES_TTL_SECONDS, also=depends), False


def _breakdown_json(found: BreakdownRead, *, links: bool) -> bytes:
    document = found.model_dump(mode="json")
    if not links:
        for row in (*document["rows"], document["total"]):
            row["records"] = None
    return orjson.dumps(document)


async def _unit_parts(
    session: AsyncSession,
    kpi: KpiDefinition,
    children: list[str],
    period: Period,
    *,
    now: datetime,
    tz: ZoneInfo,
) -> dict[str | None, Sums]:
    """Every child unit's cell: stored ones (missing reads as zero), or all computed on read
    when the period has no stored cell at all yet (it has just begun)."""
    zero: Sums = (0.0, 0.0 if kpi.is_ratio else None)
    parts: dict[str | None, Sums] = dict.fromkeys(children, zero)
    stored = (
        await session.execute(
            select(KpiValue.unit_code, KpiValue.numerator, KpiValue.denominator).where(
                KpiValue.kpi == kpi.id,
                KpiValue.unit_code.in_(children),
                KpiValue.period_kind == period.kind.value,
                KpiValue.period_start == period.start,
            )
        )
    ).all()
    if stored:
        parts.update({code: (numerator, denominator) for code, numerator, denominator in stored})
        return parts
    computed = await compute(session, kpi, children, [period], now=now, tz=tz)
    parts.update({code: sums for (code, _), sums in computed.items()})
    return parts


async def _labels(
    kpi: KpiDefinition, axis: Axis, parts: Mapping[str | None, Sums], session: AsyncSession
) -> dict[str | None, str]:
    """Names of the axis values, looked up from the records (one grouped query)."""
    keys = [k for k in parts if k is not None]
    if axis.label_column is None or not keys:
        return {k: k for k in keys}
    table = STORES[kpi.record_type].model
    column, label = getattr(table, axis.column), getattr(table, axis.label_column)
    rows = await session.execute(
        select(column, func.max(label)).where(column.in_(keys)).group_by(column)
    )
    return {key: name for key, name in rows.all()}


def _row(
    kpi: KpiDefinition, key: str | None, label: str | None, sums: Sums, link: str | None
) -> BreakdownRow:
    numerator, denominator = sums
    if kpi.is_ratio and denominator is None:
        denominator = 0.0
    return BreakdownRow(
        key=key,
        label=label,
        numerator=numerator,
        denominator=denominator,
        value=kpi.value(numerator, denominator),
        records=link,
    )


def _by_value(kpi: KpiDefinition) -> Callable[[BreakdownRow], tuple[Any, ...]]:
    """Worst first: lowest first when up is good, highest first otherwise; no value last."""
    sign = 1.0 if kpi.good_direction is Direction.UP else -1.0
    return lambda r: (r.value is None, sign * (r.value or 0.0), r.key or "")


def _by_key(row: BreakdownRow) -> tuple[bool, str]:
    return row.key is None, row.key or ""


# ---------------------------------------------------------------- records behind a cell

SIDES = ("numerator", "denominator", "late")
"""`late`: the denominator's records not counted in the numerator (for on-time rates, the late
ones); only for percentages whose numerator picks some of the denominator's records."""


def side_conditions(
    kpi: KpiDefinition, period: Period, side: str, *, now: datetime, tz: ZoneInfo
) -> list[Any]:
    """Conditions selecting the records behind one side of a cell."""
    if side not in SIDES:
        raise InvalidKpiRead(f"side must be one of {', '.join(SIDES)}, not {side!r}")
    if isinstance(kpi.formula, Composite):
        raise InvalidKpiRead(
            f"{kpi.id} is a score combined from other KPIs and has no records of its own; "
            f"see those of {', '.join(kpi.formula.components)}"
        )
    if side != "numerator" and not kpi.is_ratio:
        raise InvalidKpiRead(f"{kpi.id} is a count and has no denominator; use side=numerator")
    if side != "late":
        return cell_conditions(kpi, period, side=side, now=now, tz=tz)
    formula = kpi.formula
    if (
        kpi.value_kind is not ValueKind.PERCENT
        or not isinstance(formula, InPeriod)
        or formula.numerator.where is None
    ):
        raise InvalidKpiRead(
            f"side=late needs a percentage whose numerator counts some of its denominator's "
            f"records; {kpi.id} is not one"
        )
    table = STORES[kpi.record_type].model
    # The numerator's own condition negated, NULL counting as false: one pass over the
    # denominator's records, where `id NOT IN (the numerator's ids)` read them twice.
    counted = formula.numerator.where(table, now)
    return [
        *cell_conditions(kpi, period, side="denominator", now=now, tz=tz),
        not_(func.coalesce(counted, false())),
    ]


async def records_behind(
    session: AsyncSession,
    kpi: KpiDefinition,
    unit: str,
    period: Period,
    *,
    side: str,
    now: datetime,
    tz: ZoneInfo,
    time_column: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    filters: Mapping[str, Sequence[str | int]] | None = None,
    q: str | None = None,
    sort: str | Sequence[str] = (),
    limit: int = DEFAULT_LIMIT,
    offset: int = 0,
) -> CellRecordsPage:
    """One page of the records counted in one side of a cell, filtered, sorted and paged like
    any records query (whose filters narrow them further)."""
    if isinstance(kpi.formula, SourceLag):
        raise InvalidKpiRead(
            f"{kpi.id} is not counted from records: see each source's poll runs at "
            "/api/v1/connectors/{id}/runs"
        )
    if isinstance(kpi.formula, IncidentResponse):
        raise InvalidKpiRead(
            f"{kpi.id} is not counted from records: see the incidents at /api/v1/incidents"
        )
    conditions = side_conditions(kpi, period, side, now=now, tz=tz)
    query = RecordQuery(
        record_type=kpi.record_type,
        unit=unit,
        time_column=time_column,
        date_from=date_from,
        date_to=date_to,
        filters=filters or {},
        q=q,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    await require_unit(session, unit)
    table = STORES[kpi.record_type].model
    # Only the communes the cell counts (a record filed under the province itself is not).
    communes = await counted_units(session, unit)
    page = await query_records(
        session, query, extra_conditions=[*conditions, table.unit_code.in_(communes)]
    )
    return CellRecordsPage(
        **page.model_dump(),
        kpi=kpi.id,
        unit=unit,
        period_kind=period.kind.value,
        period_start=period.start,
        side=side,
    )
