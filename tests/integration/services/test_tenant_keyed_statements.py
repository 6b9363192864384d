"""Every statement of rating and billing finds its rows through a key, by its leading column.

The keys lead with tenant_id (migration 0008, tests/integration/store/test_tenant_keys.py), so a
statement that filters by contract alone can no longer use them: it would still be right, and
scan the whole table. Here the services run on a pool that records every statement they send;
each is then explained with sequential scans off, and any scan of a table that is not an index
probe on the index's leading column fails the test.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from rating_service.core.auth import Caller, Role
from rating_service.core.billing.credit_note import CreditNoteRequest, CreditReason, LineCredit
from rating_service.core.pricing.meter import UsageEvent
from rating_service.runtime.bootstrap import Components, ProcessRole
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn, create_engine
from tests.conftest import TenantKeys
from tests.integration.billing import load_catalog

PERIOD = timedelta(seconds=60)

ONE_QUERY = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b[^;]*;?\s*$", re.I)
"""One query; not the pool's own reset (`SELECT pg_advisory_unlock_all(); … RESET ALL;`)."""

SWEEPS = ("FROM reservations WHERE state = 'held' AND expires_at",)
"""Statements that read across tenants on purpose (a sweep), by a text they contain."""


async def test_every_statement_of_rating_and_billing_uses_a_key_by_its_leading_column(
    settings: Settings, acme: TenantKeys, globex: TenantKeys
) -> None:
    url = settings.database_url or ""
    statements: set[str] = set()

    async def record_statements(conn: asyncpg.Connection[Any]) -> None:
        conn.add_query_logger(lambda logged: statements.add(logged.query))

    pool = await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=0, max_size=4, init=record_statements
    )
    components = Components(settings, ProcessRole.COMMAND, create_engine(url, 2), pool)
    components.debits.start()
    try:
        # Both tenants at once: their events share the engine's batches, as in production.
        await asyncio.gather(*(bill_a_period(components, t.tenant_id) for t in (acme, globex)))
        await components.reservations.expire_due()
    finally:
        await components.debits.stop()
        await components.close()
    assert any("INSERT INTO usage_counters" in s for s in statements), "the hot path ran"

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        tables = {
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        leading = {
            row["index"]: row["column"]
            for row in await conn.fetch(
                "SELECT x.indexrelid::regclass::text AS index, a.attname AS column"
                " FROM pg_index x JOIN pg_attribute a"
                " ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
                " WHERE x.indrelid::regclass::text IN"
                " (SELECT tablename FROM pg_tables WHERE schemaname = 'public')"
            )
        }
        # The plan for any parameter values, with a full scan the planner's last resort.
        await conn.execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
        wrong = []
        for statement in sorted(statements):
            if not ONE_QUERY.match(statement):
                continue
            if any(sweep in statement for sweep in SWEEPS):
                continue
            for node in plan_nodes(await generic_plan(conn, statement)):
                if node["Node Type"] == "Seq Scan" and node["Relation Name"] in tables:
                    wrong.append(f"scans {node['Relation Name']}: {statement}")
                column = leading.get(node.get("Index Name", ""))
                if column and f"({column} " not in node.get("Index Cond", ""):
                    wrong.append(f"reads {node['Index Name']} without {column}: {statement}")
        assert await conn.fetchval("SHOW enable_seqscan") == "off"
    finally:
        await conn.close()
    assert wrong == [], "\n".join(wrong)


async def bill_a_period(components: Components, tenant_id: str) -> None:
    """A tenant's customer rated, reserved, queried and invoiced through the services."""
    await load_catalog(components.settings.database_url or "", tenant_id)
    caller = Caller(tenant_id, "test", Role.ADMIN)
    admin = components.contract_admin
    await admin.create_customer(caller, {"customer_id": "cus-keys", "name": "Keys Inc."})
    start = datetime.now(UTC).replace(microsecond=0) - PERIOD - timedelta(seconds=10)
    contract = await admin.create_contract(
        caller,
        {
            "customer_id": "cus-keys",
            "term_start": start.isoformat(),
            "term_end": (start + 2 * PERIOD).isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            "billing_interval_seconds": int(PERIOD.total_seconds()),
            "invoice_currency": "USD",
            "rate_card_key": "list",
            "overage_policy": "arrears",
            "late_usage": "refuse",
        },
    )
    contract_id = contract.contract_id
    grant = {"grant_id": "g-keys", "contract_id": contract_id, "kind": "credit", "amount": "10"}
    await admin.add_commitment(caller, grant)

    debits = components.debits
    in_first_period = start + timedelta(seconds=5)
    calls = [UsageEvent("api.call", in_first_period, {}) for _ in range(3)]
    tokens = UsageEvent("llm.completion", in_first_period, {"tokens": "10", "model": "small"})
    await asyncio.gather(
        *(debits.rate(tenant_id, "cus-keys", f"call-{n}", e) for n, e in enumerate(calls)),
        debits.rate(tenant_id, "cus-keys", "tokens-1", tokens),
    )
    now = datetime.now(UTC)
    holds = components.reservations
    for reservation_id in ("hold-1", "hold-2"):
        await holds.authorize(
            tenant_id, reservation_id, "cus-keys", "calls", Decimal(2), now, timedelta(minutes=5)
        )
    await debits.rate(tenant_id, "cus-keys", "captured", UsageEvent("api.call", now, {}), "hold-1")
    await holds.void(tenant_id, "hold-2")
    await components.account_views.balances(tenant_id, "cus-keys", now)
    await components.account_views.usage(tenant_id, "cus-keys", now)

    invoicing = components.invoicing
    first_end = start + PERIOD
    await invoicing.close_period(tenant_id, contract_id, first_end)
    draft = await invoicing.draft(tenant_id, contract_id, first_end)
    assert draft is not None
    await invoicing.finalize(tenant_id, draft.invoice_id)
    await invoicing.void(tenant_id, draft.invoice_id, "test", "a revision follows")
    revision = await invoicing.draft(tenant_id, contract_id, first_end, revision=1)
    assert revision is not None
    issued = await invoicing.finalize(tenant_id, revision.invoice_id)

    # A credit note on the unpaid revision, issued, asked again, listed and rendered.
    notes = components.credit_notes
    usage = next(line for line in issued.lines if line.amount > 0)
    request = CreditNoteRequest(
        issued.invoice_id, (LineCredit(usage.key, amount=Decimal("0.01")),), CreditReason.OTHER
    )
    first = await notes.issue(caller, "cn-keys", request, "test")
    await notes.issue(caller, "cn-keys", request, "test")
    await notes.document(tenant_id, first.credit_note.credit_note_id, "html")
    await notes.credit_notes(tenant_id, 10, invoice_id=issued.invoice_id)
    await notes.credit_notes(tenant_id, 10, contract_id=contract_id)
    await notes.credit_notes(tenant_id, 10, customer_id="cus-keys")
    await notes.credit_notes(tenant_id, 10)
    await notes.store.charge_reference(tenant_id, issued.invoice_id)


async def generic_plan(conn: asyncpg.Connection[Any], statement: str) -> dict[str, Any]:
    """The statement's plan whatever its parameters are (explained, never run)."""
    await conn.execute(f"PREPARE probe AS {statement}")
    try:
        parameters = await conn.fetchval(
            "SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = 'probe'"
        )
        values = f"({', '.join(['NULL'] * parameters)})" if parameters else ""
        explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE probe{values}")
    finally:
        await conn.execute("DEALLOCATE probe")
    plan: dict[str, Any] = json.loads(explained)[0]["Plan"]
    return plan


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node and every node under it."""
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)
