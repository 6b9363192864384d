"""Alembic migrations: `rating db upgrade` applies them."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from rating_service.core.encryption import EncryptionKeys

SCRIPTS = Path(__file__).resolve().parent


def alembic_config(database_url: str, webhook_secret_keys: EncryptionKeys | None = None) -> Config:
    """An Alembic configuration for this package's migrations and the given database.

    `webhook_secret_keys` are for the migrations that seal or open webhook secrets (0007).
    """
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    # Alembic's ini interpolation treats % specially; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if webhook_secret_keys is not None:
        config.attributes["webhook_secret_keys"] = webhook_secret_keys
    return config


def upgrade(
    database_url: str, revision: str = "head", webhook_secret_keys: EncryptionKeys | None = None
) -> None:
    """Bring the database schema up to `revision` (blocking; run it off the event loop)."""
    command.upgrade(alembic_config(database_url, webhook_secret_keys), revision)


def current_head() -> str | None:
    """The newest migration this code ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
