"""Settings refuse to run open or with well-known secrets in production."""

from __future__ import annotations

import pytest

from ioc.config import Settings

DEFAULT_PASSWORD_URL = "postgresql+asyncpg://ioc:ioc@db:5432/ioc"


def test_production_refuses_to_run_without_authentication() -> None:
    with pytest.raises(ValueError, match="IOC_AUTH_DISABLED is refused in production"):
        Settings(auth_disabled=True)


def test_production_refuses_a_default_database_password() -> None:
    with pytest.raises(ValueError, match="default or empty password"):
        Settings(database_url=DEFAULT_PASSWORD_URL)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://ioc:Vq7-long-random@db:5432/ioc",
        "postgresql+asyncpg://ioc@db:5432/ioc",  # .pgpass, PGPASSWORD or certificates
        "sqlite+aiosqlite:///./ioc.db",
    ],
    ids=["real-password", "no-password", "sqlite"],
)
def test_production_accepts_a_database_without_a_well_known_password(url: str) -> None:
    assert Settings(database_url=url).database_url == url


def test_development_allows_open_access_and_default_passwords() -> None:
    settings = Settings(
        environment="development", auth_disabled=True, database_url=DEFAULT_PASSWORD_URL
    )
    assert settings.open_access and not settings.demo


def test_production_enforces_tokens_by_default_and_the_demo_runs_open() -> None:
    assert not Settings().open_access
    demo = Settings(environment="demo")
    assert demo.demo and demo.open_access
    assert not Settings(environment="demo", auth_disabled=False).open_access
