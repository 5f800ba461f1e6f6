"""Service settings: the one place that reads the environment (`IOC_*` variables)."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ioc.kpi.calendar import WorkingCalendar, calendar_from_settings
from ioc.kpi.service_index import parse_weights

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./ioc.db"

WELL_KNOWN_PASSWORDS = frozenset({"ioc", "postgres", "password", "secret", "changeme", "admin"})
"""Database passwords refused in production: docker-compose's default and tutorials' favourites.
(No password at all is allowed: .pgpass, PGPASSWORD, certificates or trust on a socket.)"""

Environment = Literal["production", "development", "demo"]


class Settings(BaseSettings):
    """Configuration of one IOC deployment."""

    model_config = SettingsConfigDict(env_prefix="IOC_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///… or postgresql+asyncpg://…",
    )
    db_pool_size: int = Field(
        default=5, ge=1, description="PostgreSQL connections a process keeps open"
    )
    db_max_overflow: int = Field(
        default=10, ge=0, description="Extra PostgreSQL connections opened under load"
    )
    db_pool_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to wait for a free connection before failing"
    )
    province: int = Field(default=75, description="Province code (GSO); 75 is Đồng Nai")
    timezone: str = "Asia/Ho_Chi_Minh"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    connectors_file: Path | None = Field(
        default=None, description="TOML file that seeds connector instances at start"
    )
    scheduler_enabled: bool = Field(
        default=True,
        description="Poll, recompute and judge in this process; false on API processes when "
        "`ioc worker` does it (PostgreSQL)",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Processes `ioc serve` runs (uvicorn workers); more than one needs "
        "PostgreSQL and IOC_SCHEDULER_ENABLED=false (the scheduler runs in `ioc worker`)",
    )
    worker_port: int = Field(
        default=8001, ge=1, le=65535, description="Where `ioc worker` answers /healthz, /readyz"
    )
    poll_max_pages: int = Field(
        default=50, ge=1, description="Pages one scheduled run may fetch before yielding"
    )
    ingest_batch_records: int = Field(
        default=10_000,
        ge=1,
        description="Most records one ingest transaction stores: a connector's pages fetched "
        "ahead of the store are stored together up to this many (a larger page alone); as "
        "many may wait fetched ahead",
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
    ws_ping_seconds: float = Field(
        default=20.0, gt=0, description="How often the server pings each WebSocket client"
    )
    ws_idle_seconds: float = Field(
        default=60.0, gt=0, description="A client not heard from for this long is disconnected"
    )
    ws_history: int = Field(
        default=32, ge=0, description="Updates kept per topic for clients that resume"
    )
    ws_compression: bool = Field(
        default=False,
        description="Accept permessage-deflate from WebSocket clients (browsers offer it). Off by "
        "default: updates are a few hundred bytes, and a compressed client costs about three "
        "times the CPU per update and 43 kB of memory, and misses the shared-frame fast path",
    )
    ws_max_topics: int = Field(default=200, ge=1, description="Topics one client may follow")
    ws_send_timeout: float = Field(
        default=10.0, gt=0, description="A client that takes no frame for this long is dropped"
    )
    ws_client_queue: int = Field(
        default=256, ge=1, description="Topics a slow client may have pending before it is dropped"
    )
    service_index_weights: dict[str, float | tuple[float, float]] | None = Field(
        default=None,
        description=(
            "Decision 766 service index weights (JSON): indicator → points or [points, "
            "full-points rate %]; the points sum to 100. Defaults in ioc/kpi/service_index.py"
        ),
    )
    layout_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often followed wall layouts are re-rendered for what moves with time",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="`json`: one JSON object per line with request and connector context",
    )
    environment: Environment = Field(
        default="production",
        description=(
            "production refuses open access and default secrets; development allows them; "
            "demo runs open and says so on the wall display"
        ),
    )
    auth_disabled: bool | None = Field(
        default=None,
        description="Open access without tokens (the demo by default); refused in production",
    )
    auth_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a replica trusts a token it looked up (a revocation on another "
        "replica takes effect within this time)",
    )
    oidc_jwks_url: str | None = Field(
        default=None, description="OpenID Connect: the identity provider's JWKS address"
    )
    oidc_jwks_file: Path | None = Field(
        default=None, description="OpenID Connect: a JWKS file, instead of an address"
    )
    oidc_issuer: str | None = Field(default=None, description="Required `iss` of a JWT")
    oidc_audience: str | None = Field(default=None, description="Required `aud` of a JWT")
    oidc_roles_claim: str = Field(
        default="roles",
        description="Claim holding the user's roles; dots walk into objects (realm_access.roles)",
    )
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict,
        description="Identity provider role → IOC role (JSON); IOC role names map to themselves",
    )
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) encrypting connector secrets at rest, comma-separated: the "
        "first encrypts, any decrypts (`ioc secrets-key` makes one)",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest request body accepted (413 beyond)"
    )
    rate_limit_per_minute: float = Field(
        default=600.0, gt=0, description="Requests a token may make per minute, per replica"
    )
    rate_limit_burst: int = Field(
        default=120, ge=1, description="Requests a token may make at once before the rate applies"
    )

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        """Outside development and the demo, refuse open access and well-known secrets."""
        if (self.oidc_jwks_url or self.oidc_jwks_file) and not (
            self.oidc_issuer and self.oidc_audience
        ):
            raise ValueError("OpenID Connect needs IOC_OIDC_ISSUER and IOC_OIDC_AUDIENCE")
        if self.environment != "production":
            return self
        if self.auth_disabled:
            raise ValueError(
                "IOC_AUTH_DISABLED is refused in production: set IOC_ENVIRONMENT=development "
                "(or demo) to run without tokens"
            )
        url = urlsplit(self.database_url.replace("+asyncpg", ""))
        if url.scheme.startswith("postgres") and (url.password or "") in WELL_KNOWN_PASSWORDS:
            raise ValueError(
                "IOC_DATABASE_URL uses a default or empty password, refused in production: "
                "set a real one, or IOC_ENVIRONMENT=development"
            )
        if (self.oidc_jwks_url or self.oidc_jwks_file) and not (
            self.oidc_issuer and self.oidc_audience
        ):
            raise ValueError("OpenID Connect needs IOC_OIDC_ISSUER and IOC_OIDC_AUDIENCE")
        return self

    @property
    def demo(self) -> bool:
        """Demo mode: simulated data, announced on the wall display."""
        return self.environment == "demo"

    @property
    def open_access(self) -> bool:
        """Whether requests need no token (the demo by default, or IOC_AUTH_DISABLED)."""
        return self.auth_disabled if self.auth_disabled is not None else self.demo

    @property
    def oidc_enabled(self) -> bool:
        """Whether JWTs from an OpenID Connect provider are accepted."""
        return self.oidc_jwks_url is not None or self.oidc_jwks_file is not None

    @field_validator("service_index_weights")
    @classmethod
    def _valid_weights(
        cls, value: dict[str, float | tuple[float, float]] | None
    ) -> dict[str, float | tuple[float, float]] | None:
        if value is not None:
            parse_weights(value)  # raises ValueError with what is wrong
        return value

    @property
    def service_index(self) -> dict[str, tuple[float, float]] | None:
        """The configured service index weights (None: the defaults)."""
        if self.service_index_weights is None:
            return None
        return parse_weights(self.service_index_weights)

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
