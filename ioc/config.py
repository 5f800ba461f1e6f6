"""Service settings: the one place that reads the environment (`IOC_*` variables)."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.kpi.calendar import WorkingCalendar, calendar_from_settings

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./ioc.db"


class Settings(BaseSettings):
    """Configuration of one IOC deployment."""

    model_config = SettingsConfigDict(env_prefix="IOC_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///… or postgresql+asyncpg://…",
    )
    province: int = Field(default=75, description="Province code (GSO); 75 is Đồng Nai")
    timezone: str = "Asia/Ho_Chi_Minh"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    connectors_file: Path | None = Field(
        default=None, description="TOML file that seeds connector instances at start"
    )
    scheduler_enabled: bool = True
    poll_max_pages: int = Field(
        default=50, ge=1, description="Pages one scheduled run may fetch before yielding"
    )
    kpi_refresh_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often KPIs that drift with time alone (overdue, on time) are refreshed",
    )
    makeup_workdays: list[date] = Field(
        default_factory=list,
        description="Make-up working Saturdays (ngày làm bù) that `holidays` does not know",
    )
    extra_days_off: list[date] = Field(
        default_factory=list, description="Extra days off decided by the province"
    )
    incident_evaluate_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often every incident rule is judged (time alone makes dossiers "
        "overdue, connectors stale and quiet periods end)",
    )
    incident_default_rules: bool = Field(
        default=True,
        description="Store the default incident rules (from the KPI catalogue) at start",
    )
    ws_ping_seconds: float = Field(default=20.0, gt=0)
    ws_client_queue: int = Field(
        default=256, ge=1, description="Topics a slow client may have pending before it is dropped"
    )
    log_level: str = "INFO"
    demo: bool = Field(
        default=False, description="Demo mode: open access, announced on the wall display"
    )

    @cached_property
    def tz(self) -> ZoneInfo:
        """The deployment's local time zone, used for periods and presentation."""
        return ZoneInfo(self.timezone)

    @property
    def calendar(self) -> WorkingCalendar:
        """The working-day calendar for deadlines and resolution times."""
        return calendar_from_settings(self.makeup_workdays, self.extra_days_off)

    @property
    def is_postgres(self) -> bool:
        """Whether the configured database is PostgreSQL."""
        return self.database_url.startswith("postgresql")
