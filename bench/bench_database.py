"""The benchmarks' PostgreSQL: embedded, or RATING_DATABASE_URL's; a fresh database on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from rating_service.cli.progress import step


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[tuple[str, bool]]:
    """(base URL, embedded?): RATING_DATABASE_URL's server, or an embedded one in `workdir`."""
    configured = os.environ.get("RATING_DATABASE_URL")
    if configured:
        yield configured, False
        return
    from rating_service.runtime.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(workdir / "pgdata")
    with step("starting PostgreSQL (embedded)"), warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers); harmless.
        warnings.simplefilter("ignore")
        base_url = embedded.start()
    try:
        yield base_url, True
    finally:
        embedded.stop()


async def create_database(base_url: str) -> str:
    """A new, migrated database beside `base_url`'s; its URL."""
    from rating_service.cli.dev import ensure_database
    from rating_service.store import migrations

    database_url = await ensure_database(base_url, f"rating_bench_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrations.upgrade, database_url)
    return database_url


async def drop_database(base_url: str, database_url: str) -> None:
    """Drop a database `create_database` made on someone else's server."""
    from sqlalchemy.engine import make_url

    from rating_service.store.database import asyncpg_dsn, with_database

    name = make_url(database_url).database
    conn = await asyncpg.connect(asyncpg_dsn(with_database(base_url, "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server whose data directory this is, if it runs here."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def keep_session(conn: asyncpg.Connection[Any]) -> None:
    """A pool `reset` that sends nothing (seeding pools leave no session state behind)."""
