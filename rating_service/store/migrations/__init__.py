"""Alembic migrations: `rating db upgrade` applies them."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

SCRIPTS = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for this package's migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    # Alembic's ini interpolation treats % specially; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema up to `revision` (blocking; run it off the event loop)."""
    command.upgrade(alembic_config(database_url), revision)


def current_head() -> str | None:
    """The newest migration this code ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
