"""Migrations bring an empty database to the schema the code declares."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from rating_service.store import migrations
from rating_service.store.database import create_engine, with_database
from rating_service.store.schema import metadata


async def test_migrations_upgrade_an_empty_database_to_the_declared_schema(
    postgres_url: str,
) -> None:
    name = f"rating_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(with_database(postgres_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_url, name)
    engine = create_engine(url, pool_size=1)
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        async with engine.connect() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        assert version == migrations.current_head()
        assert differences == []
        # A second upgrade is a no-op, as `rating dev` relies on.
        await asyncio.to_thread(migrations.upgrade, url)
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
