"""Runs the Alembic migrations from code (`ioc migrate`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def migrations_root() -> Path:
    """Where `alembic.ini` and `alembic/` are: the working directory, else the source tree."""
    for root in (Path.cwd(), SOURCE_ROOT):
        if (root / "alembic.ini").is_file() and (root / "alembic" / "env.py").is_file():
            return root
    raise FileNotFoundError(
        "alembic.ini and alembic/ not found; run from the project directory (or /app in Docker)"
    )


def alembic_config(database_url: str) -> Config:
    """An Alembic config for `database_url`, with the project's migration scripts."""
    root = migrations_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the database to `revision`."""
    command.downgrade(alembic_config(database_url), revision)
