"""Administrative units: the configured province and its communes."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ioc.db import Base


class AdminUnit(Base):
    """A province or a commune/ward (xã, phường, đặc khu) with its GSO code."""

    __tablename__ = "admin_units"

    code: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    division_type: Mapped[str] = mapped_column(String(40))
    level: Mapped[str] = mapped_column(String(20), index=True)
    parent_code: Mapped[str | None] = mapped_column(
        ForeignKey("admin_units.code", ondelete="CASCADE"), index=True
    )
