"""What every `rating` command shares: settings, an event loop, --tenant, timestamps, tables."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from rating_service.core.errors import DomainError
from rating_service.settings import Settings

T = TypeVar("T")

tenant_option = click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
"""The `--tenant NAME_OR_ID` every per-tenant operator command takes."""


def load_settings() -> Settings:
    """The settings from the environment; a wrong one ends the command with its message."""
    try:
        return Settings.from_env()
    except DomainError as exc:
        raise click.ClickException(str(exc)) from exc


def require_database_url(settings: Settings) -> str:
    """RATING_DATABASE_URL; when it is unset, the command ends saying where to find one."""
    if not settings.database_url:
        raise click.ClickException(
            "RATING_DATABASE_URL is not set; `rating dev` prints the URL of its embedded database"
        )
    return settings.database_url


def run_async(coroutine_function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a command's coroutine in an event loop of its own; every async command goes here.

    Its Temporal clients are shut down inside the loop (see rating_service.runtime.temporal):
    left to interpreter exit, they abort the process about one run in four.
    """
    from rating_service.runtime.temporal import temporal_runtime

    async def command() -> T:
        async with temporal_runtime():
            return await coroutine_function(*args)

    try:
        return asyncio.run(command())
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc


def parse_timestamp(option: str, text: str | None) -> datetime | None:
    """An option's ISO 8601 timestamp; a naive one is refused (it names no moment)."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.ClickException(f"{option} {text!r} is not an ISO 8601 timestamp") from None
    if at.utcoffset() is None:
        raise click.ClickException(
            f"{option} {text!r} has no UTC offset, so it names no moment:"
            " add one, e.g. 2026-01-01T00:00:00Z or 2026-01-01T00:00:00+02:00"
        )
    return at


def echo_table(rows: Sequence[Sequence[str]], right_aligned: set[int]) -> None:
    """Rows as columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if n in right_aligned else cell.ljust(width)
            for n, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())
