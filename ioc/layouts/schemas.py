"""Layouts in and out: a grid of tiles, each naming a KPI, a unit and a visualisation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ioc.kpi.catalog import UnknownKpi, get_kpi

VISUALISATIONS = ("number", "gauge", "sparkline", "bars", "incidents", "freshness")
"""number: the headline value; gauge: the value on a dial with its thresholds; sparkline: today
against yesterday; bars: the value by child unit (communes), worst first; incidents: open
incidents; freshness: when each source last delivered data."""

KPI_VISUALISATIONS = ("number", "gauge", "sparkline", "bars")
SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Thresholds(BaseModel):
    """Colour limits overriding the KPI's catalogue thresholds (judged in its good direction)."""

    model_config = ConfigDict(extra="forbid")

    warn: float | None = None
    critical: float | None = None


class TileSpec(BaseModel):
    """One tile: where it sits on the grid and what it draws."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=SLUG, description="Assigned (t1, t2…) if omitted")
    visualisation: str = Field(description=", ".join(VISUALISATIONS))
    kpi: str | None = Field(default=None, description="Required for number, gauge, sparkline, bars")
    unit: str | None = Field(default=None, description="Unit code; the layout's unit by default")
    x: int = Field(ge=0, description="First column (0-based)")
    y: int = Field(ge=0, description="First row (0-based)")
    w: int = Field(default=1, ge=1, description="Columns spanned")
    h: int = Field(default=1, ge=1, description="Rows spanned")
    title_vi: str | None = Field(default=None, max_length=200)
    title_en: str | None = Field(default=None, max_length=200)
    thresholds: Thresholds | None = None
    limit: int | None = Field(default=None, ge=1, le=100, description="Rows of bars or incidents")

    @field_validator("visualisation")
    @classmethod
    def _known_visualisation(cls, value: str) -> str:
        if value not in VISUALISATIONS:
            raise ValueError(
                f"unknown visualisation {value!r}; expected one of {', '.join(VISUALISATIONS)}"
            )
        return value

    @field_validator("kpi")
    @classmethod
    def _known_kpi(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                get_kpi(value)
            except UnknownKpi:
                raise ValueError(
                    f"unknown KPI {value!r}; GET /api/v1/kpis/catalog lists the known ones"
                ) from None
        return value

    @model_validator(mode="after")
    def _kpi_when_needed(self) -> TileSpec:
        if self.visualisation in KPI_VISUALISATIONS and self.kpi is None:
            raise ValueError(f"a {self.visualisation} tile needs a kpi")
        if self.visualisation not in KPI_VISUALISATIONS and self.kpi is not None:
            raise ValueError(f"a {self.visualisation} tile takes no kpi")
        return self


class LayoutBase(BaseModel):
    """Fields a layout is made of."""

    model_config = ConfigDict(extra="forbid")

    name_vi: str = Field(min_length=1, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, description="Unit code; the province by default")
    columns: int = Field(default=4, ge=1, le=24)
    rows: int = Field(default=3, ge=1, le=24)
    tiles: list[TileSpec] = Field(default_factory=list, max_length=96)
    is_default: bool = False

    @model_validator(mode="after")
    def _tiles_fit_the_grid(self) -> LayoutBase:
        taken: dict[tuple[int, int], int] = {}
        seen_ids: set[str] = set()
        for index, tile in enumerate(self.tiles, start=1):
            if tile.id is None:
                tile.id = _free_id(self.tiles)
            if tile.id in seen_ids:
                raise ValueError(f"tile {index}: id {tile.id!r} is used twice")
            seen_ids.add(tile.id)
            if tile.x + tile.w > self.columns or tile.y + tile.h > self.rows:
                raise ValueError(
                    f"tile {index} ({tile.id}) spans columns {tile.x}–{tile.x + tile.w - 1}, rows "
                    f"{tile.y}–{tile.y + tile.h - 1}: outside the {self.columns}×{self.rows} grid"
                )
            for cell in ((tile.x + c, tile.y + r) for c in range(tile.w) for r in range(tile.h)):
                if cell in taken:
                    raise ValueError(
                        f"tile {index} ({tile.id}) overlaps tile {taken[cell]} at column "
                        f"{cell[0]}, row {cell[1]}"
                    )
                taken[cell] = index
        return self


def _free_id(tiles: list[TileSpec]) -> str:
    used = {t.id for t in tiles}
    return next(f"t{n}" for n in range(1, len(tiles) + 2) if f"t{n}" not in used)


class LayoutCreate(LayoutBase):
    """A new layout; `id` names it in `/?layout=<id>` and in the `layout:<id>` topic."""

    id: str = Field(pattern=SLUG, description="Lower-case letters, digits, - and _")


class LayoutUpdate(BaseModel):
    """Fields to change; the result is validated as a whole."""

    model_config = ConfigDict(extra="forbid")

    name_vi: str | None = Field(default=None, min_length=1, max_length=200)
    name_en: str | None = Field(default=None, max_length=200)
    unit: str | None = None
    columns: int | None = Field(default=None, ge=1, le=24)
    rows: int | None = Field(default=None, ge=1, le=24)
    tiles: list[dict[str, Any]] | None = None
    is_default: bool | None = None


class LayoutRead(BaseModel):
    """A stored layout."""

    id: str
    name_vi: str
    name_en: str
    unit: str
    columns: int
    rows: int
    tiles: list[TileSpec]
    is_default: bool
    topic: str = Field(description="The live topic delivering its tiles ready to draw")
    created_at: datetime
    updated_at: datetime
