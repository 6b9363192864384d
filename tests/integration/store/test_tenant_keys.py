"""Every key of a tenant's table leads with tenant_id, in the live catalog of a migrated database.

What sharding by tenant (Citus, docs/scaling.md) needs: a unique key, or a foreign key between
two sharded tables, can be enforced only if it includes the distribution column. Migration 0008
made it so; these tests read pg_constraint / pg_index, so a later migration that adds a key
without the tenant fails here, whatever schema.py says.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
from alembic import command
from alembic.script import ScriptDirectory

from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.store import migrations
from rating_service.store.database import asyncpg_dsn, with_database
from rating_service.store.ledger import reconcile
from rating_service.store.schema import metadata
from tests.conftest import TenantKeys
from tests.integration.billing import Account, load_catalog, open_account
from tests.integration.cycles import admin_client

GLOBAL_TABLES = {
    "tenants": "the tenants themselves: one row per tenant, read by every shard (a Citus"
    " reference table); its name is unique across tenants",
    "api_keys": "a key is looked up by its id before its tenant is known (the bearer token"
    " names the key, not the tenant): small, read-mostly, cached by the edge (a reference table)",
    "simulated_charges": "the simulated payment gateway's own books, standing in for an external"
    " gateway's; a real deployment has no such table (a local table if kept)",
    "simulated_refunds": "the simulated gateway's refunds, beside its charges (see"
    " simulated_charges)",
    "alembic_version": "Alembic's own bookkeeping: one row, the schema's revision",
}
"""Tables that are not a tenant's, and why: they stay unsharded, every other table is sharded."""

CONTRACT_KEYED = ("usage_counters", "period_draws", "contract_periods", "fired_alerts")
"""The tables migration 0008 gave a tenant_id column, filled from the row's contract."""

LATER_TABLES = (
    "aggregation_entries",
    "credit_notes",
    "credit_note_numbers",
    "refunds",
    "simulated_refunds",
    "payment_retries",
    "export_positions",
)
"""Tables a migration after 0008 creates: a database at 0007 has none of them."""

LATER_COLUMNS = {"usage_counters": ("cost",), "rated_events": ("cost", "written_xid")}
"""Columns a migration after 0008 adds: a downgrade drops their values (0010 fills 0 again,
0014 too)."""


async def test_every_key_of_a_tenant_table_leads_with_tenant_id(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        wrong = await key_violations(conn)
    finally:
        await conn.close()
    assert wrong == []


async def test_the_check_finds_a_key_that_does_not_lead_with_tenant_id(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("CREATE TABLE notes (note_id text PRIMARY KEY)")
        await conn.execute("CREATE UNIQUE INDEX uq_rated_events_event ON rated_events (event_id)")
        await conn.execute(
            "ALTER TABLE reservations ADD CONSTRAINT fk_reservations_event"
            " FOREIGN KEY (reservation_id) REFERENCES rated_events (event_id)"
        )
        await conn.execute("ALTER TABLE api_keys ADD COLUMN contract_id text")
        await conn.execute(
            "ALTER TABLE api_keys ADD CONSTRAINT fk_api_keys_contract FOREIGN KEY"
            " (tenant_id, contract_id) REFERENCES contracts (tenant_id, contract_id)"
        )
        wrong = await key_violations(conn)
    finally:
        await conn.close()
    assert wrong == [
        "api_keys: fk_api_keys_contract: a global table refers to tenant table contracts",
        "notes: has no NOT NULL tenant_id column",
        "notes: notes_pkey: unique on (note_id), not led by tenant_id",
        "rated_events: uq_rated_events_event: unique on (event_id), not led by tenant_id",
        "reservations: fk_reservations_event: does not carry tenant_id to rated_events.tenant_id",
    ]


async def test_every_primary_key_is_the_one_the_schema_declares(database_url: str) -> None:
    # Alembic's compare_metadata (test_migrations.py) does not compare primary keys.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT c.conrelid::regclass::text AS table_name,"
            " array_agg(a.attname ORDER BY k.ord) AS columns"
            " FROM pg_constraint c CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
            " WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace"
            " GROUP BY c.conrelid"
        )
    finally:
        await conn.close()
    live = {row["table_name"]: list(row["columns"]) for row in rows}
    declared = {
        table.name: [column.name for column in table.primary_key.columns]
        for table in metadata.tables.values()
    }
    assert {k: v for k, v in live.items() if k != "alembic_version"} == declared


async def test_the_upgrade_keeps_every_row_and_the_service_goes_on_with_them(
    postgres_url: str, settings: Settings, acme: TenantKeys, globex: TenantKeys
) -> None:
    # Rows made by the service itself, for two tenants: then down to 0007 and up again, so 0008
    # runs on a populated database (and its downgrade is exercised too).
    url = settings.database_url or ""
    for tenant in (acme, globex):
        await load_catalog(url, tenant.tenant_id)
    accounts, pools = {}, {}
    async with running(settings) as server:
        for tenant in (acme, globex):
            async with admin_client(server, tenant) as client:
                account = await open_account(client, "cus-upgrade")
                pools[tenant.tenant_id] = await account.grant("10", grant_id="g-upgrade")
                await account.call("before-upgrade")
                accounts[tenant.tenant_id] = account.contract_id
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        before = await every_row(conn)
        assert all(before[table] for table in CONTRACT_KEYED if table != "fired_alerts")
        config = migrations.alembic_config(url)
        await asyncio.to_thread(command.downgrade, config, "0007")
        at_0007 = without_later({k: v for k, v in before.items() if k not in LATER_TABLES})
        assert await every_row(conn) == without_tenant(at_0007, CONTRACT_KEYED)
        async with fresh_database(postgres_url, "0007") as fresh:
            assert await catalog(conn) == await catalog(fresh)
        # fired_alerts has no writer yet: a row of it, as 0007 keyed it, rides along.
        contract_id = before["contracts"][0]["contract_id"]
        await conn.execute(
            "INSERT INTO fired_alerts (contract_id, alert_key) VALUES ($1, 'balance:5')",
            contract_id,
        )

        await asyncio.to_thread(migrations.upgrade, url)
        after = await every_row(conn)
        [alert] = after.pop("fired_alerts")
        assert alert["tenant_id"] == before["contracts"][0]["tenant_id"]
        assert without_later(after) == without_later(
            {k: v for k, v in before.items() if k != "fired_alerts"}
        )
        head = ScriptDirectory.from_config(config).get_current_head()
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == head
    finally:
        await conn.close()

    # The service goes on with the rows as migrated: the same period's row, counter and pool.
    async with running(settings) as server:
        for tenant in (acme, globex):
            async with admin_client(server, tenant) as client:
                account = Account(client, "cus-upgrade", accounts[tenant.tenant_id])
                await account.call("after-upgrade")
                assert await account.balances() == {pools[tenant.tenant_id]: Decimal(8)}
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        counters = await conn.fetch("SELECT tenant_id, events FROM usage_counters")
        assert sorted((r["tenant_id"], r["events"]) for r in counters) == sorted(
            (t.tenant_id, 2) for t in (acme, globex)
        )
        assert all(report.clean for report in (await reconcile(conn)).values())
    finally:
        await conn.close()


async def key_violations(conn: asyncpg.Connection[Any]) -> list[str]:
    """What in the live catalog keeps a tenant table from being sharded by tenant."""
    tables = {
        row["name"]: set(row["columns"])
        for row in await conn.fetch(
            "SELECT c.relname AS name, array_agg(a.attname) FILTER (WHERE a.attnotnull)"
            " AS columns FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
            " AND a.attnum > 0 AND NOT a.attisdropped"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')"
            " GROUP BY c.relname"
        )
    }
    wrong = [
        f"{table}: has no NOT NULL tenant_id column"
        for table, not_null in sorted(tables.items())
        if table not in GLOBAL_TABLES and "tenant_id" not in not_null
    ]
    # Unique indexes include those of every primary key and unique constraint.
    for row in await conn.fetch(
        "SELECT t.relname AS table_name, i.relname AS index_name,"
        " pg_get_indexdef(x.indexrelid) AS definition,"
        " (SELECT attname FROM pg_attribute WHERE attrelid = x.indrelid"
        "  AND attnum = x.indkey[0]) AS leading"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_class t ON t.oid = x.indrelid"
        " WHERE x.indisunique AND t.relnamespace = 'public'::regnamespace ORDER BY 1, 2"
    ):
        if row["table_name"] in GLOBAL_TABLES or row["leading"] == "tenant_id":
            continue
        columns = row["definition"].split(" USING btree ", 1)[-1].split(" WHERE ")[0]
        wrong.append(
            f"{row['table_name']}: {row['index_name']}: unique on {columns}, not led by tenant_id"
        )
    for row in await conn.fetch(
        "SELECT c.conrelid::regclass::text AS table_name, c.conname,"
        " c.confrelid::regclass::text AS referred,"
        " array(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o)"
        "  JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.n ORDER BY k.o) AS columns,"
        " array(SELECT attname FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o)"
        "  JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.n ORDER BY k.o) AS refers"
        " FROM pg_constraint c WHERE c.contype = 'f'"
        " AND c.connamespace = 'public'::regnamespace ORDER BY 1, 2"
    ):
        table, name, referred = row["table_name"], row["conname"], row["referred"]
        if referred in GLOBAL_TABLES:
            continue  # a sharded table may refer to a reference table
        if table in GLOBAL_TABLES:
            wrong.append(f"{table}: {name}: a global table refers to tenant table {referred}")
        elif ("tenant_id", "tenant_id") not in zip(row["columns"], row["refers"], strict=True):
            wrong.append(f"{table}: {name}: does not carry tenant_id to {referred}.tenant_id")
    return sorted(wrong)


async def every_row(conn: asyncpg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table (but Alembic's), as JSON, in a stable order."""
    tables = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind = 'r' AND relname <> 'alembic_version' ORDER BY relname"
    )
    rows = {}
    for (table,) in tables:
        found = await conn.fetch(f'SELECT to_jsonb(t)::text AS row FROM "{table}" t')
        rows[table] = sorted((json.loads(r["row"]) for r in found), key=json.dumps)
    return rows


def without_later(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The rows without the columns later migrations added (`LATER_COLUMNS`)."""
    return {
        table: [
            {k: v for k, v in row.items() if k not in LATER_COLUMNS.get(table, ())} for row in found
        ]
        for table, found in rows.items()
    }


def without_tenant(
    rows: dict[str, list[dict[str, Any]]], tables: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """The rows with the tenant_id column of `tables` taken out (as 0007 had them)."""
    return {
        table: [
            {k: v for k, v in row.items() if not (table in tables and k == "tenant_id")}
            for row in found
        ]
        for table, found in rows.items()
    }


async def catalog(conn: asyncpg.Connection[Any]) -> list[tuple[str, str, str]]:
    """Every constraint and index of the database, by table, name and definition."""
    constraints = await conn.fetch(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace"
    )
    indexes = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )
    return sorted(tuple(row) for row in [*constraints, *indexes])


@asynccontextmanager
async def fresh_database(
    postgres_url: str, revision: str
) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection to a new database migrated to `revision`, dropped afterwards."""
    name = f"rating_keys_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(with_database(postgres_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(postgres_url, name)
    try:
        await asyncio.to_thread(migrations.upgrade, url, revision)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[RunningServer]:
    """A server on the test's database while the block runs (none while migrations run)."""
    server = await start_server(settings)
    try:
        yield server
    finally:
        await server.stop(0.5)
