"""A wall layout as stored: its grid and its tiles (a JSON list validated by `schemas`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ioc.db import Base
from ioc.kit.types import UTCDateTime


class WallLayout(Base):
    """A grid of tiles shown on a wall display (`/?layout=<id>`)."""

    __tablename__ = "wall_layouts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name_vi: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    unit_code: Mapped[str] = mapped_column(String(10))
    columns: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    tiles: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
