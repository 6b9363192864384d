"""Database engine construction and URL handling; connects only when asked to."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
"""A raw asyncpg connection, owned or borrowed from a pool (the hot path's SQL takes either)."""


def async_url(url: str) -> str:
    """The SQLAlchemy asyncpg form of any PostgreSQL URL (`postgres://`, `postgresql://`, ...)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"only PostgreSQL is supported, got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """The same server's URL for another database (sockets and options kept)."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An async engine over asyncpg; pre-ping so a restarted database heals the pool."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def asyncpg_dsn(url: str) -> str:
    """The plain libpq-style URL asyncpg.connect accepts (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
