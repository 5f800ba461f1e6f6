"""Stored KPI values: one row per (kpi, unit, period kind, period start)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from ioc.db import Base
from ioc.kit.types import UTCDateTime


def _key(length: int) -> String:
    """A key column of ASCII identifiers, compared byte by byte on PostgreSQL (see migration
    0008: writing a rebuild's cells into the primary key is then about three times faster)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


class KpiValue(Base):
    """A KPI cell with its numerator and denominator, so that roll-ups stay exact. On
    PostgreSQL its pages keep 20 % free for updates in place (migration 0009)."""

    __tablename__ = "kpi_values"

    kpi: Mapped[str] = mapped_column(_key(80), primary_key=True)
    unit_code: Mapped[str] = mapped_column(_key(10), primary_key=True)
    period_kind: Mapped[str] = mapped_column(_key(10), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    numerator: Mapped[float] = mapped_column(Float)
    denominator: Mapped[float | None] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
