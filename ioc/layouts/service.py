"""Layouts: create, edit, list and delete them (validated against the catalogue and the units),
the province's default layout, and every tile of a layout rendered ready to draw."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.db import unique_or
from ioc.kit.clock import local_date, local_midnight
from ioc.kpi.catalog import Direction, KpiDefinition, get_kpi
from ioc.kpi.engine import TOTAL, compute
from ioc.kpi.formulas import LatestPerEntity, OpenAt
from ioc.kpi.periods import Period, PeriodKind
from ioc.kpi.reads import breakdown, counted_units, series
from ioc.kpi.schemas import KpiRead
from ioc.kpi.service import current_value
from ioc.layouts.models import WallLayout
from ioc.layouts.schemas import LayoutCreate, LayoutRead, LayoutUpdate, TileSpec
from ioc.units.models import AdminUnit

DEFAULT_LAYOUT_ID = "default"
SPARKLINE_DAYS = 14
BARS_LIMIT = 10
INCIDENTS_LIMIT = 8


class LayoutNotFound(LookupError):
    """No layout with this id."""


class LayoutExists(ValueError):
    """A layout with this id already exists."""


class LayoutInvalid(ValueError):
    """A layout that cannot be drawn: an unknown unit, a bar chart of a unit with no children…"""


# ---------------------------------------------------------------- CRUD


async def list_layouts(session: AsyncSession) -> Sequence[WallLayout]:
    """Every layout, the default first."""
    query = select(WallLayout).order_by(WallLayout.is_default.desc(), WallLayout.id)
    return (await session.scalars(query)).all()


async def get_layout(session: AsyncSession, layout_id: str) -> WallLayout:
    """One layout, or `LayoutNotFound`."""
    layout = await session.get(WallLayout, layout_id)
    if layout is None:
        raise LayoutNotFound(f"no layout {layout_id!r}")
    return layout


async def default_layout(session: AsyncSession) -> WallLayout | None:
    """The layout a wall shows when none is asked for."""
    layouts = await list_layouts(session)
    return layouts[0] if layouts else None


async def create_layout(
    session: AsyncSession, data: LayoutCreate, *, province_code: str, now: datetime
) -> WallLayout:
    """Store a new layout after checking its units."""
    taken = LayoutExists(f"layout {data.id!r} already exists")
    if await session.get(WallLayout, data.id) is not None:
        raise taken
    unit = data.unit or province_code
    await _check_units(session, data.tiles, layout_unit=unit)
    if data.is_default:
        await _clear_default(session)
    layout = WallLayout(
        id=data.id,
        name_vi=data.name_vi,
        name_en=data.name_en or data.name_vi,
        unit_code=unit,
        columns=data.columns,
        rows=data.rows,
        tiles=[t.model_dump(exclude_none=True) for t in data.tiles],
        is_default=data.is_default,
        created_at=now,
        updated_at=now,
    )
    session.add(layout)
    with unique_or(taken):
        await session.flush()
    return layout


async def update_layout(
    session: AsyncSession, layout_id: str, data: LayoutUpdate, *, now: datetime
) -> WallLayout:
    """Change a layout; the result is validated as a whole (grid, tiles, units)."""
    layout = await get_layout(session, layout_id)
    merged: dict[str, Any] = {
        "id": layout.id,
        "name_vi": layout.name_vi,
        "name_en": layout.name_en,
        "unit": layout.unit_code,
        "columns": layout.columns,
        "rows": layout.rows,
        "tiles": layout.tiles,
        "is_default": layout.is_default,
    }
    merged.update(data.model_dump(exclude_unset=True))
    try:
        checked = LayoutCreate.model_validate(merged)
    except ValidationError as exc:
        raise LayoutInvalid(_first_error(exc)) from None
    unit = checked.unit or layout.unit_code
    await _check_units(session, checked.tiles, layout_unit=unit)
    if checked.is_default and not layout.is_default:
        await _clear_default(session)
    layout.name_vi = checked.name_vi
    layout.name_en = checked.name_en or checked.name_vi
    layout.unit_code = unit
    layout.columns, layout.rows = checked.columns, checked.rows
    layout.tiles = [t.model_dump(exclude_none=True) for t in checked.tiles]
    layout.is_default = checked.is_default
    layout.updated_at = now
    await session.flush()
    return layout


async def delete_layout(session: AsyncSession, layout_id: str) -> None:
    """Remove a layout."""
    await session.delete(await get_layout(session, layout_id))
    await session.flush()


def to_read(layout: WallLayout) -> LayoutRead:
    """A stored layout as presented."""
    return LayoutRead(
        id=layout.id,
        name_vi=layout.name_vi,
        name_en=layout.name_en,
        unit=layout.unit_code,
        columns=layout.columns,
        rows=layout.rows,
        tiles=[TileSpec.model_validate(t) for t in layout.tiles],
        is_default=layout.is_default,
        topic=f"layout:{layout.id}",
        created_at=layout.created_at,
        updated_at=layout.updated_at,
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


async def _clear_default(session: AsyncSession) -> None:
    await session.execute(update(WallLayout).values(is_default=False))


async def _check_units(session: AsyncSession, tiles: list[TileSpec], *, layout_unit: str) -> None:
    """Every unit a layout names exists; a bar chart's unit has units below it."""
    codes = {layout_unit} | {t.unit for t in tiles if t.unit}
    found = set(await session.scalars(select(AdminUnit.code).where(AdminUnit.code.in_(codes))))
    if layout_unit not in found:
        raise LayoutInvalid(f"unit: unknown unit code {layout_unit!r}")
    for index, tile in enumerate(tiles, start=1):
        unit = tile.unit or layout_unit
        if unit not in found:
            raise LayoutInvalid(f"tiles.{index - 1}.unit: unknown unit code {unit!r}")
        if tile.visualisation == "bars":
            child = await session.scalar(
                select(AdminUnit.code).where(AdminUnit.parent_code == unit).limit(1)
            )
            if child is None:
                raise LayoutInvalid(
                    f"tiles.{index - 1}: unit {unit} has no units below it to draw bars of"
                )


def default_layout_spec(province_code: str) -> LayoutCreate:
    """The layout a new deployment starts with: two or three KPIs per domain, the communes'
    on-time rate as bars, the open incidents and the month's mean time to resolve them."""

    def tile(visualisation: str, kpi: str | None, x: int, y: int, **extra: Any) -> dict[str, Any]:
        return {"visualisation": visualisation, "kpi": kpi, "x": x, "y": y, **extra}

    return LayoutCreate.model_validate(
        {
            "id": DEFAULT_LAYOUT_ID,
            "name_vi": "Tổng quan tỉnh",
            "name_en": "Province overview",
            "unit": province_code,
            "columns": 5,
            "rows": 3,
            "is_default": True,
            "tiles": [
                tile("gauge", "onestop.on_time_rate", 0, 0),
                tile("number", "onestop.overdue_open", 1, 0),
                tile("sparkline", "onestop.backlog", 2, 0),
                tile("gauge", "health.bed_occupancy", 3, 0),
                tile("number", "feedback.on_time_rate", 4, 0),
                tile("bars", "onestop.on_time_rate", 0, 1, w=2, h=2, limit=BARS_LIMIT),
                tile("sparkline", "health.inpatients", 2, 1),
                tile("number", "education.attendance_rate", 3, 1),
                tile("number", "feedback.overdue_open", 4, 1),
                tile("incidents", None, 2, 2, w=2, limit=INCIDENTS_LIMIT),
                tile("number", "incidents.mttr_minutes", 4, 2),
            ],
        }
    )


async def ensure_default_layout(
    session: AsyncSession, *, province_code: str, now: datetime
) -> WallLayout | None:
    """Create the default layout when no layout exists at all; returns it if created."""
    if await session.scalar(select(WallLayout.id).limit(1)) is not None:
        return None
    return await create_layout(
        session, default_layout_spec(province_code), province_code=province_code, now=now
    )


# ---------------------------------------------------------------- rendering


def tile_status(
    value: float | None, direction: str, warn: float | None, critical: float | None
) -> str:
    """ok, warn or critical by the thresholds in the KPI's good direction; none without any;
    empty without a value."""
    if value is None:
        return "empty"
    if direction == Direction.NONE or (warn is None and critical is None):
        return "none"

    def worse(limit: float) -> bool:
        return value < limit if direction == Direction.UP else value > limit

    if critical is not None and worse(critical):
        return "critical"
    if warn is not None and worse(warn):
        return "warn"
    return "ok"


class SampleCache:
    """Sparkline points already computed for moments in the past: (kpi, unit, moment) → value."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self.values: dict[tuple[str, str, datetime], float | None] = {}

    def get(self, key: tuple[str, str, datetime]) -> tuple[bool, float | None]:
        """(found, value)."""
        if key in self.values:
            return True, self.values[key]
        return False, None

    def put(self, key: tuple[str, str, datetime], value: float | None) -> None:
        """Remember a point; forget everything once full (points are cheap to recompute)."""
        if len(self.values) >= self.max_entries:
            self.values.clear()
        self.values[key] = value


class Renderer:
    """Renders a layout's tiles in one session at one moment."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        now: datetime,
        tz: ZoneInfo,
        samples: SampleCache,
        incidents: list[dict[str, Any]] | None,
        connectors: list[dict[str, Any]] | None,
    ) -> None:
        self.session = session
        self.now = now
        self.tz = tz
        self.samples = samples
        self.incidents = incidents
        self.connectors = connectors
        self._names: dict[str, str] = {}
        self._counted: dict[str, list[str]] = {}

    async def layout(self, layout: WallLayout) -> dict[str, Any]:
        """The layout with every tile's data."""
        tiles = [await self.tile(TileSpec.model_validate(t), layout) for t in layout.tiles]
        return {
            "id": layout.id,
            "name_vi": layout.name_vi,
            "name_en": layout.name_en,
            "unit": layout.unit_code,
            "unit_name": await self._unit_name(layout.unit_code),
            "columns": layout.columns,
            "rows": layout.rows,
            "updated_at": layout.updated_at.isoformat(),
            "rendered_at": self.now.isoformat(),
            "tiles": tiles,
        }

    async def tile(self, tile: TileSpec, layout: WallLayout) -> dict[str, Any]:
        """One tile's place, labels and data."""
        unit = tile.unit or layout.unit_code
        out: dict[str, Any] = {
            "id": tile.id,
            "visualisation": tile.visualisation,
            "x": tile.x,
            "y": tile.y,
            "w": tile.w,
            "h": tile.h,
            "unit": unit,
            "unit_name": await self._unit_name(unit),
            "kpi": tile.kpi,
        }
        if tile.kpi is not None:
            kpi = get_kpi(tile.kpi)
            warn, critical = kpi.warn, kpi.critical
            if tile.thresholds is not None:
                warn, critical = tile.thresholds.warn, tile.thresholds.critical
            headline = await current_value(self.session, kpi, unit, now=self.now, tz=self.tz)
            out["title_vi"] = tile.title_vi or kpi.name_vi
            out["title_en"] = tile.title_en or kpi.name_en
            out["data"] = self._value(kpi, headline, warn, critical)
            if tile.visualisation == "gauge":
                out["data"]["range"] = _gauge_range(kpi, headline.value, warn, critical)
            elif tile.visualisation == "sparkline":
                out["data"].update(await self._sparkline(kpi, unit))
            elif tile.visualisation == "bars":
                out["data"]["bars"] = await self._bars(kpi, unit, warn, critical, tile.limit)
        elif tile.visualisation == "incidents":
            out["title_vi"] = tile.title_vi or "Sự cố đang mở"
            out["title_en"] = tile.title_en or "Open incidents"
            out["data"] = await self._incidents(unit, tile.limit or INCIDENTS_LIMIT)
        else:
            out["title_vi"] = tile.title_vi or "Nguồn dữ liệu"
            out["title_en"] = tile.title_en or "Data sources"
            out["data"] = {
                "available": self.connectors is not None,
                "sources": self.connectors or [],
            }
        return out

    def _value(
        self, kpi: KpiDefinition, read: KpiRead, warn: float | None, critical: float | None
    ) -> dict[str, Any]:
        return {
            "value": read.value,
            "numerator": read.numerator,
            "denominator": read.denominator,
            "unit_of_measure": kpi.unit_of_measure,
            "value_kind": kpi.value_kind.value,
            "good_direction": kpi.good_direction.value,
            "warn": warn,
            "critical": critical,
            "status": tile_status(read.value, kpi.good_direction.value, warn, critical),
            "period_kind": read.period_kind,
            "period_start": read.period_start.isoformat(),
            "computed_at": read.computed_at.isoformat() if read.computed_at else None,
        }

    async def _sparkline(self, kpi: KpiDefinition, unit: str) -> dict[str, Any]:
        """Today against yesterday: for stocks (open at a moment, latest per entity) the day's
        value at every hour mark; for other KPIs, whose records carry only a day, the day cells
        of the last two weeks (today and yesterday are their last two points)."""
        today = local_date(self.now, self.tz)
        yesterday = today - timedelta(days=1)
        if isinstance(kpi.formula, OpenAt | LatestPerEntity):
            return {
                "mode": "hourly",
                "today": await self._hourly(kpi, unit, today, until=self.now),
                "yesterday": await self._hourly(kpi, unit, yesterday, until=None),
            }
        periods = [Period(PeriodKind.DAY, today - timedelta(days=n)) for n in range(13, -1, -1)]
        points = (await series(self.session, kpi, unit, periods))["points"]
        return {
            "mode": "daily",
            "days": [{"date": p["period_start"].isoformat(), "value": p["value"]} for p in points],
            "today_value": points[-1]["value"],
            "yesterday_value": points[-2]["value"],
        }

    async def _hourly(
        self, kpi: KpiDefinition, unit: str, day: date, *, until: datetime | None
    ) -> list[dict[str, Any]]:
        start = local_midnight(day, self.tz)
        marks = [start + timedelta(hours=h) for h in range(25)]
        if until is not None:
            marks = [m for m in marks if m < until] + [until]
        period = Period(PeriodKind.DAY, day)
        units = await self._counted_units(unit)
        points = []
        for mark in marks:
            key = (kpi.id, unit, mark)
            found, value = self.samples.get(key)
            if not found:
                cells = await compute(
                    self.session, kpi, units, [period], now=mark, tz=self.tz, by=None
                )
                sums = cells.get((TOTAL, period))
                value = kpi.value(*sums) if sums else kpi.value(0.0, 0.0 if kpi.is_ratio else None)
                if mark < self.now - timedelta(minutes=5):
                    self.samples.put(key, value)
            hour = (mark - start).total_seconds() / 3600
            points.append({"hour": round(hour, 3), "value": value})
        return points

    async def _bars(
        self,
        kpi: KpiDefinition,
        unit: str,
        warn: float | None,
        critical: float | None,
        limit: int | None,
    ) -> dict[str, Any]:
        period = Period.containing(kpi.headline_period, local_date(self.now, self.tz))
        split = await breakdown(
            self.session, kpi, unit, period, by="unit", now=self.now, tz=self.tz
        )
        rows = [r for r in split.rows if r.value is not None]
        return {
            "parts": len(split.rows),
            "rows": [
                {
                    "unit": r.key,
                    "name": r.label,
                    "value": r.value,
                    "numerator": r.numerator,
                    "denominator": r.denominator,
                    "status": tile_status(r.value, kpi.good_direction.value, warn, critical),
                }
                for r in rows[: limit or BARS_LIMIT]
            ],
        }

    async def _incidents(self, unit: str, limit: int) -> dict[str, Any]:
        """Open incidents under `unit`, critical first, newest first; unavailable until the
        incidents domain serves the `incidents` topic."""
        if self.incidents is None:
            return {"available": False, "items": [], "open": 0}
        counted = set(await self._counted_units(unit)) | {unit}
        items = [
            i
            for i in self.incidents
            if i.get("status") != "resolved" and (i.get("unit_code") in counted)
        ]
        items.sort(key=lambda i: str(i.get("opened_at") or ""), reverse=True)
        items.sort(key=lambda i: i.get("severity") != "critical")
        return {"available": True, "items": items[:limit], "open": len(items)}

    async def _unit_name(self, code: str) -> str:
        if code not in self._names:
            unit = await self.session.get(AdminUnit, code)
            self._names[code] = unit.name if unit is not None else code
        return self._names[code]

    async def _counted_units(self, code: str) -> list[str]:
        if code not in self._counted:
            self._counted[code] = await counted_units(self.session, code)
        return self._counted[code]


def _gauge_range(
    kpi: KpiDefinition, value: float | None, warn: float | None, critical: float | None
) -> dict[str, float]:
    """The dial's scale: 0–100 for a percentage; otherwise up to a margin over the largest of
    the value and the thresholds."""
    if kpi.unit_of_measure == "%":
        return {"min": 0.0, "max": 100.0}
    top = max([v for v in (value, warn, critical) if v is not None] or [1.0])
    return {"min": 0.0, "max": float(top * 1.25 or 1.0)}
