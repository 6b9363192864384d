"""Webhook signing secrets at rest, on a real PostgreSQL: sealed, rotated, migrated, never plain.

Delivery with sealed secrets, signatures verified by a receiver, is test_notifications.py's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields, replace

import asyncpg
import pytest
from alembic import command
from click.testing import CliRunner

from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.core.encryption import EncryptionKeys, Sealed, new_key
from rating_service.core.errors import FailedPrecondition
from rating_service.runtime.server import RunningServer
from rating_service.runtime.worker import run_worker
from rating_service.services.webhook import Webhooks
from rating_service.settings import Settings
from rating_service.store import migrations
from rating_service.store.database import asyncpg_dsn, with_database
from rating_service.store.webhook import WebhookEndpoint, WebhookStore, secret_context
from tests.conftest import TenantKeys
from tests.integration.cycles import api_env, serving, worker_settings

OLD = new_key("old")
NEW = new_key("new")


@asynccontextmanager
async def notifications_with(database_url: str, keys: str) -> AsyncIterator[Webhooks]:
    """The notifications service over the test's database, with these webhook-secret keys."""
    pool = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=2)
    try:
        keyring = EncryptionKeys.parse(keys, "RATING_WEBHOOK_SECRET_KEYS")
        yield Webhooks(WebhookStore(pool, keyring))
    finally:
        await pool.close()


async def opened_secret(database_url: str, keys: str, tenant_id: str, endpoint_id: str) -> str:
    """The endpoint's secret as delivery opens it to sign, with these keys."""
    pool = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=1)
    try:
        store = WebhookStore(pool, EncryptionKeys.parse(keys))
        target = await store.delivery_target(tenant_id, endpoint_id)
    finally:
        await pool.close()
    assert target is not None
    return target.secret


async def every_row_as_text(database_url: str) -> str:
    """Every row of every table in the database, as PostgreSQL prints it."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(table_name) AS name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        dumped = []
        for table in tables:
            rows = await conn.fetch(f"SELECT t::text AS row FROM {table['name']} t")
            dumped += [row["row"] for row in rows]
        return "\n".join(dumped)
    finally:
        await conn.close()


def rating_cli(database_url: str, keys: str, *args: str, exit_code: int = 0) -> str:
    """Run `rating ARGS…` with these webhook-secret keys; its output (it must exit so)."""
    env = {"RATING_DATABASE_URL": database_url, "RATING_WEBHOOK_SECRET_KEYS": keys}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == exit_code, result.output
    return result.output


async def test_a_secret_is_stored_sealed_shown_once_and_opened_only_to_sign(
    database_url: str, acme: TenantKeys
) -> None:
    async with notifications_with(database_url, NEW) as notifications:
        added = await notifications.add_endpoint(
            acme.tenant_id, "https://example.com/hooks", ["alert"], "test"
        )
        listed = await notifications.endpoints(acme.tenant_id)

    assert added.secret.startswith("whsec_")
    opened = await opened_secret(database_url, NEW, acme.tenant_id, added.endpoint.endpoint_id)
    assert opened == added.secret
    # Listing shows the endpoint, never its secret: the type has no field that could hold it.
    assert listed == [added.endpoint]
    assert not [f.name for f in fields(WebhookEndpoint) if "secret" in f.name]
    # Nowhere in the database in clear: not the endpoint's row, not the audit log, nowhere.
    assert added.endpoint.endpoint_id in await every_row_as_text(database_url)
    assert added.secret not in await every_row_as_text(database_url)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT secret_ciphertext, secret_key_id FROM webhook_endpoints WHERE endpoint_id = $1",
            added.endpoint.endpoint_id,
        )
    finally:
        await conn.close()
    assert row is not None and row["secret_key_id"] == "new"
    assert added.secret.encode() not in row["secret_ciphertext"]


async def test_rotation_old_key_listed_second_still_opens_and_reencrypt_moves_rows(
    database_url: str, acme: TenantKeys
) -> None:
    async with notifications_with(database_url, OLD) as notifications:
        before = [
            await notifications.add_endpoint(acme.tenant_id, f"https://example.com/{n}", [], "t")
            for n in range(3)
        ]
    # Step 1: the new key goes first; the old one, second, still opens what it sealed.
    rotating = f"{NEW},{OLD}"
    for added in before:
        opened = await opened_secret(
            database_url, rotating, acme.tenant_id, added.endpoint.endpoint_id
        )
        assert opened == added.secret
    async with notifications_with(database_url, rotating) as notifications:
        during = await notifications.add_endpoint(acme.tenant_id, "https://example.com/x", [], "t")
        assert await notifications.secrets_per_key() == {"new": 1, "old": 3}
        # Dropping the old key now would strand three secrets: the worker would not start.
    async with notifications_with(database_url, NEW) as notifications:
        with pytest.raises(FailedPrecondition, match="3 under key 'old'"):
            await notifications.check_keys()
    # Step 2: the operator re-encrypts (in batches: 3 rows, batch of 2).
    pool = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=1)
    try:
        store = WebhookStore(pool, EncryptionKeys.parse(rotating))
        assert await store.reseal_secrets(batch_size=2) == {"old": 3}
        assert await store.secrets_per_key() == {"new": 4}
        assert await store.reseal_secrets() == {}  # nothing left: a no-op
    finally:
        await pool.close()
    # Step 3: the old key is dropped; every secret still opens, and still says the same.
    async with notifications_with(database_url, NEW) as notifications:
        await notifications.check_keys()
    for added in [*before, during]:
        opened = await opened_secret(database_url, NEW, acme.tenant_id, added.endpoint.endpoint_id)
        assert opened == added.secret


def api_cli(server: RunningServer, tenant: TenantKeys, *args: str, exit_code: int = 0) -> str:
    """Run `rating ARGS…` through the server's API with the tenant's admin key; its output."""
    env = api_env(server, tenant.tokens[Role.ADMIN])
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == exit_code, result.output
    return result.output


async def test_reencrypt_and_new_key_from_the_cli(settings: Settings, acme: TenantKeys) -> None:
    database_url = settings.database_url or ""
    # `webhooks add` asks the server, which seals the secret with its own keys.
    async with serving(replace(settings, webhook_secret_keys=OLD)) as server:
        added = await asyncio.to_thread(api_cli, server, acme, "webhooks", "add", "https://e.com/h")
    secret = added.split()[3]
    made = await asyncio.to_thread(
        rating_cli, database_url, "", "webhooks", "new-key", "--id", "k3"
    )
    newest = made.splitlines()[0]
    assert EncryptionKeys.parse(newest).ids == ("k3",)
    said = await asyncio.to_thread(
        rating_cli, database_url, f"{newest},{OLD}", "webhooks", "reencrypt"
    )
    assert "re-encrypted 1 secret(s) from key 'old'" in said
    assert "secrets per key now: 'k3' 1" in said
    async with notifications_with(database_url, newest) as notifications:
        [endpoint] = await notifications.endpoints(acme.tenant_id)
    assert await opened_secret(database_url, newest, acme.tenant_id, endpoint.endpoint_id) == secret
    async with serving(replace(settings, webhook_secret_keys=newest)) as server:
        listed = await asyncio.to_thread(api_cli, server, acme, "webhooks", "list")
    assert endpoint.endpoint_id in listed and secret not in listed


async def test_without_its_key_a_secret_is_not_added_and_the_worker_does_not_start(
    settings: Settings, temporal_address: str, acme: TenantKeys
) -> None:
    url = settings.database_url or ""
    async with serving(replace(settings, webhook_secret_keys="")) as keyless:
        refused = await asyncio.to_thread(
            api_cli, keyless, acme, "webhooks", "add", "https://e.com/h", exit_code=1
        )
    assert "set RATING_WEBHOOK_SECRET_KEYS" in refused
    assert "  status: FAILED_PRECONDITION" in refused
    # No endpoint yet: a worker without keys has nothing to open, and may start.
    async with notifications_with(url, "") as notifications:
        await notifications.check_keys()
    async with serving(replace(settings, webhook_secret_keys=OLD)) as server:
        await asyncio.to_thread(api_cli, server, acme, "webhooks", "add", "https://e.com/h")
    for keys, configured in (("", "none"), (NEW, "'new'")):
        config = worker_settings(settings, temporal_address, webhook_secret_keys=keys)
        with pytest.raises(FailedPrecondition) as refusal:
            await run_worker(config, asyncio.Event())
        said = refusal.value.message
        assert "1 under key 'old'" in said and f"(configured: {configured})" in said, said
        assert "RATING_WEBHOOK_SECRET_KEYS" in said


@asynccontextmanager
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """An empty database of this test's own, dropped afterwards."""
    name = f"rating_secrets_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(with_database(postgres_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_migration_seals_plaintext_secrets_and_without_a_key_changes_nothing(
    postgres_url: str,
) -> None:
    async with fresh_database(postgres_url) as url:
        await asyncio.to_thread(migrations.upgrade, url, "0006")
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES ('ten_1', 'acme')")
            await conn.execute(
                "INSERT INTO webhook_endpoints (endpoint_id, tenant_id, url, secret)"
                " VALUES ('whe_1', 'ten_1', 'https://e.com/h', 'whsec_plain')"
            )
            with pytest.raises(FailedPrecondition, match="set RATING_WEBHOOK_SECRET_KEYS"):
                await asyncio.to_thread(migrations.upgrade, url)
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0006"
            assert await conn.fetchval("SELECT secret FROM webhook_endpoints") == "whsec_plain"

            keys = EncryptionKeys.parse(NEW)
            await asyncio.to_thread(migrations.upgrade, url, "head", keys)
            row = await conn.fetchrow("SELECT * FROM webhook_endpoints")
            assert row is not None and "secret" not in set(row.keys())
            sealed = Sealed(row["secret_key_id"], row["secret_ciphertext"])
            assert keys.open(sealed, secret_context("whe_1")) == "whsec_plain"
            assert "whsec_plain" not in await every_row_as_text(url)

            # Down again (with the key that sealed it) gives the plaintext back.
            config = migrations.alembic_config(url, keys)
            await asyncio.to_thread(command.downgrade, config, "0006")
            assert await conn.fetchval("SELECT secret FROM webhook_endpoints") == "whsec_plain"
        finally:
            await conn.close()
