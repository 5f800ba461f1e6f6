"""The KPI catalogue: declarations of what is measured, how it is labelled and judged.

Adding a KPI is adding a declaration here and, when its measure is new, a measure function.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ioc.kpi.periods import PeriodKind


class Direction(StrEnum):
    """Which way is good for a KPI."""

    UP = "up"
    DOWN = "down"


class Measure(StrEnum):
    """How a KPI's numerator and denominator are computed from records (see kpi/measures.py)."""

    DUE_ON_TIME = "due_on_time"
    OPEN_OVERDUE = "open_overdue"


@dataclass(frozen=True)
class KpiDefinition:
    """One KPI: identity, labels, unit, thresholds and the measure behind it."""

    id: str
    name_vi: str
    name_en: str
    domain: str
    unit_of_measure: str
    good_direction: Direction
    measure: Measure
    headline_period: PeriodKind
    warn: float | None = None
    critical: float | None = None
    record_type: str = "dossier"

    @property
    def is_ratio(self) -> bool:
        """Whether the value is a percentage of numerator over denominator."""
        return self.unit_of_measure == "%"

    def value(self, numerator: float, denominator: float | None) -> float | None:
        """The displayed value of a cell."""
        if not self.is_ratio:
            return numerator
        if not denominator:
            return None
        return round(100.0 * numerator / denominator, 4)


CATALOG: tuple[KpiDefinition, ...] = (
    KpiDefinition(
        id="onestop.on_time_rate",
        name_vi="Tỷ lệ hồ sơ đúng hạn",
        name_en="On-time dossier rate",
        domain="onestop",
        unit_of_measure="%",
        good_direction=Direction.UP,
        measure=Measure.DUE_ON_TIME,
        headline_period=PeriodKind.MONTH,
        warn=95.0,
        critical=90.0,
    ),
    KpiDefinition(
        id="onestop.overdue_open",
        name_vi="Hồ sơ đang quá hạn",
        name_en="Open overdue dossiers",
        domain="onestop",
        unit_of_measure="count",
        good_direction=Direction.DOWN,
        measure=Measure.OPEN_OVERDUE,
        headline_period=PeriodKind.DAY,
        warn=0.0,
    ),
)

KPIS: dict[str, KpiDefinition] = {k.id: k for k in CATALOG}


class UnknownKpi(LookupError):
    """No KPI with this id is in the catalogue."""


def get_kpi(kpi_id: str) -> KpiDefinition:
    """The declaration of `kpi_id`, or `UnknownKpi`."""
    try:
        return KPIS[kpi_id]
    except KeyError:
        raise UnknownKpi(f"unknown KPI {kpi_id!r}; known: {', '.join(sorted(KPIS))}") from None
