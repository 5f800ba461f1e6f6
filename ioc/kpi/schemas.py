"""KPI payloads, shared by REST and the live topics."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from ioc.records.schemas import Page


class KpiRead(BaseModel):
    """The value of one KPI cell with everything a tile needs to draw and judge it."""

    kpi: str
    unit: str
    name_vi: str
    name_en: str
    domain: str
    unit_of_measure: str
    good_direction: str
    warn: float | None
    critical: float | None
    period_kind: str
    period_start: date
    value: float | None
    numerator: float
    denominator: float | None
    computed_at: datetime | None


class KpiDeclarationRead(BaseModel):
    """A catalogue entry: what a KPI measures, how it is labelled, judged and drilled into."""

    id: str
    name_vi: str
    name_en: str
    domain: str
    unit_of_measure: str
    good_direction: str
    value_kind: str = Field(description="percent (100 × n ÷ d), mean (n ÷ d) or count (n)")
    headline_period: str
    warn: float | None
    critical: float | None
    record_type: str
    additive: bool = Field(description="Whether a cell is the sum of its parts (communes…)")
    formula_kind: str = Field(
        description="in_period, open_at, latest_per_entity, median_in_period or composite"
    )
    formula: str = Field(description="The formula in words")
    breakdown_axes: list[str] = Field(description="Values `by` accepts in a breakdown")


class SeriesPoint(BaseModel):
    """One period of a series; a period with no stored cell reads as zero."""

    period_start: date
    value: float | None
    numerator: float
    denominator: float | None
    computed_at: datetime | None


class SeriesRead(BaseModel):
    """A KPI's stored cells for one unit, one per period of the range, in order."""

    kpi: str
    unit: str
    name_vi: str
    name_en: str
    unit_of_measure: str
    good_direction: str
    value_kind: str
    warn: float | None
    critical: float | None
    period_kind: str
    date_from: date = Field(description="The first day of the first period")
    date_to: date = Field(description="The last day of the last period")
    points: list[SeriesPoint]


class BreakdownRow(BaseModel):
    """One part of a cell (a child unit, an agency, a field…) or the whole cell."""

    key: str | None = Field(description="Unit code or the record column's value")
    label: str | None = Field(description="Its name, when known")
    numerator: float
    denominator: float | None
    value: float | None
    records: str | None = Field(
        description="Path of the records behind this row; null for a composite score"
    )


class BreakdownRead(BaseModel):
    """One KPI cell broken down into parts that sum (numerators, denominators) to the whole."""

    kpi: str
    unit: str
    period_kind: str
    period_start: date
    by: str
    column: str | None = Field(description="The record column of the axis; null for units")
    value_kind: str
    good_direction: str
    additive: bool = Field(description="Whether the parts sum to the total")
    sort: str
    rows: list[BreakdownRow]
    total: BreakdownRow


class CellRecordsPage(Page):
    """One page of the records behind a KPI cell, with the cell it explains."""

    kpi: str
    unit: str
    period_kind: str
    period_start: date
    side: str
