"""KPI payloads, shared by REST and the live topics."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel


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
