"""`rating db`: the database schema and its migrations."""

from __future__ import annotations

import click

from rating_service.cli.command_line import load_settings, require_database_url
from rating_service.core.errors import DomainError


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations to RATING_DATABASE_URL."""
    from rating_service.services.webhook import webhook_secret_keys
    from rating_service.store import migrations

    settings = load_settings()
    try:
        # The keys: a migration seals webhook secrets stored before they were encrypted (0007).
        migrations.upgrade(require_database_url(settings), revision, webhook_secret_keys(settings))
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"database at {revision}")
