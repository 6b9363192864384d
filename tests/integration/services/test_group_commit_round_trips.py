"""A warm group commit costs five round trips, however many events share it.

On the hot path the database's round trips, not its work, bound the rate (docs/performance.md):
begin, lock the periods, read what is locked (counters, draws, replays, accounts), write it all
back, commit. Here the engine runs on a pool that records every statement per connection, and
a batch of a warm contract's events is counted.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from rating_service.core.auth import Caller, Role
from rating_service.core.pricing.meter import UsageEvent
from rating_service.runtime.bootstrap import Components, ProcessRole
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn, create_engine
from tests.conftest import TenantKeys
from tests.integration.billing import load_catalog

EVENTS = 40

INTROSPECTION = ("typeinfo_tree", "set_config('jit'")
"""asyncpg's own queries: it learns a statement's types once per connection, then never again."""


async def test_a_warm_batch_costs_five_round_trips(settings: Settings, acme: TenantKeys) -> None:
    url = settings.database_url or ""
    sent: dict[int, list[str]] = defaultdict(list)

    async def record_statements(conn: asyncpg.Connection[Any]) -> None:
        def record(logged: Any) -> None:
            if not any(text in logged.query for text in INTROSPECTION):
                sent[id(conn)].append(logged.query)

        conn.add_query_logger(record)

    pool = await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=0, max_size=4, init=record_statements
    )
    components = Components(settings, ProcessRole.COMMAND, create_engine(url, 2), pool)
    components.debits.start()
    tenant_id = acme.tenant_id
    try:
        await load_catalog(url, tenant_id)
        caller = Caller(tenant_id, "test", Role.ADMIN)
        admin = components.contract_admin
        await admin.create_customer(caller, {"customer_id": "cus-trips", "name": "Trips Inc."})
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        contract = await admin.create_contract(
            caller,
            {
                "customer_id": "cus-trips",
                "term_start": start.isoformat(),
                "billing_anchor": {"day": 1},
                "billing_frequency": "monthly",
                "invoice_currency": "USD",
                "rate_card_key": "list",
                "overage_policy": "arrears",
            },
        )
        await admin.add_commitment(
            caller,
            {
                "grant_id": "g-trips",
                "contract_id": contract.contract_id,
                "kind": "credit",
                "amount": "1000",
            },
        )
        debits = components.debits
        now = datetime.now(UTC)
        await debits.rate(tenant_id, "cus-trips", "warm-up", UsageEvent("api.call", now, {}))
        sent.clear()

        outcomes = await asyncio.gather(
            *(
                debits.rate(tenant_id, "cus-trips", f"e-{n}", UsageEvent("api.call", now, {}))
                for n in range(EVENTS)
            )
        )
    finally:
        await components.debits.stop()
        await components.close()

    assert all(not o.replay for o in outcomes)
    transactions = [
        statements[begin : begin + statements[begin:].index("COMMIT;") + 1]
        for statements in sent.values()
        for begin, query in enumerate(statements)
        if query == "BEGIN;"
    ]
    assert 1 <= len(transactions) < EVENTS, "the events shared group commits"
    for statements in transactions:
        assert len(statements) == 5, "\n---\n".join(s[:120] for s in statements)
