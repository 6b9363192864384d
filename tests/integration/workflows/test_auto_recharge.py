"""Auto-recharge on a real Temporal server: a crossing charges once and grants a paid pool;
failures are retried by policy, then auto-recharge switches itself off."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from rating_client import RatingClient
from rating_client.gen.rating.v1 import contract_pb2
from rating_service.core.ledger.accounts import cash_account_id
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.store.ledger import reconcile
from rating_service.workflows.recharge import recharge_workflow_id
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import (
    billing_stack,
    credit,
    database,
    open_billing_contract,
    record_history,
    workflow_started,
)

D = Decimal


async def spend(client: RatingClient, customer_id: str, prefix: str, calls: int) -> None:
    """Rate `calls` api calls of $1 each."""
    for n in range(calls):
        await client.rate_and_debit(
            event_id=f"{prefix}-{n}", customer_id=customer_id, event_type="api.call", properties={}
        )


RECHARGE_TOPICS = [
    "auto_recharge",
    "recharge.succeeded",
    "recharge.failed",
    "auto_recharge.disabled",
]


async def outbox_topics(conn: asyncpg.Connection, contract_id: str) -> list[str]:
    """The recharge topics the contract's outbox rows carry, in order."""
    rows = await conn.fetch(
        "SELECT topic FROM outbox WHERE payload->>'contract_id' = $1"
        " AND topic = ANY($2::text[]) ORDER BY outbox_id",
        contract_id,
        RECHARGE_TOPICS,
    )
    return [row["topic"] for row in rows]


async def test_each_crossing_buys_credit_once_and_books_the_payment(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        client = stack.client
        contract = await open_billing_contract(
            client,
            "cus_recharge",
            period_seconds=600,
            periods=1,
            auto_recharge={"threshold": "5", "amount": "20"},
        )
        await client.call(client.contracts.AddCommitment, credit(contract.contract_id, "8"))
        async with database(settings) as conn:

            async def recharged(times: int) -> bool:
                count = await conn.fetchval(
                    "SELECT count(*) FROM recharges WHERE state = 'succeeded'"
                )
                return bool(count == times)

            # 8 → 4: below 5 on the fourth call, once.
            await spend(client, contract.customer_id, "a", 4)
            await eventually(lambda: recharged(1), timeout_seconds=20)
            balances = await client.balances(contract.customer_id)
            assert sorted(D(p.remaining) for p in balances.pools) == [D(4), D(20)]
            # 24 → 4 again: a second crossing, a second recharge.
            await spend(client, contract.customer_id, "b", 20)
            await eventually(lambda: recharged(2), timeout_seconds=20)
            charges = await conn.fetch(
                "SELECT amount FROM simulated_charges WHERE reference LIKE 'rch_%'"
            )
            assert [c["amount"] for c in charges] == [D(20), D(20)]
            paid_in = await conn.fetchval(
                "SELECT sum(amount) FROM transfers WHERE debit_account_id = $1"
                " AND reference LIKE 'recharge:%'",
                cash_account_id(contract.contract_id),
            )
            assert paid_in == D(40)
            topics = await outbox_topics(conn, contract.contract_id)
            assert topics.count("auto_recharge") == 2
            assert topics.count("recharge.succeeded") == 2
            assert all(report.clean for report in (await reconcile(conn)).values())


async def test_after_the_last_failed_attempt_auto_recharge_switches_off(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        client, temporal = stack.client, stack.temporal
        contract = await open_billing_contract(
            client,
            "cus_declined",
            period_seconds=600,
            periods=1,
            payment_method="pm_decline",
            auto_recharge={
                "threshold": "5",
                "amount": "20",
                "max_attempts": 2,
                "retry_seconds": 1,
            },
        )
        await client.call(client.contracts.AddCommitment, credit(contract.contract_id, "8"))
        await spend(client, contract.customer_id, "a", 4)
        handle = temporal.get_workflow_handle(
            recharge_workflow_id(acme.tenant_id, contract.contract_id)
        )
        await eventually(lambda: workflow_started(handle), timeout_seconds=15)
        assert await handle.result() == "failed"
        await record_history(temporal, handle.id, "auto_recharge_failed")
        reply = await client.call(
            client.contracts.GetContract,
            contract_pb2.GetContractRequest(contract_id=contract.contract_id),
        )
        assert reply.contract.auto_recharge.enabled is False
        async with database(settings) as conn:
            expected = [
                "auto_recharge",
                "recharge.failed",
                "recharge.failed",
                "auto_recharge.disabled",
            ]
            assert await outbox_topics(conn, contract.contract_id) == expected
            # Switched off: spending below the threshold again asks for nothing.
            more = contract_pb2.AddCommitmentRequest(
                grant_id="more", contract_id=contract.contract_id, kind="credit", amount="10"
            )
            await client.call(client.contracts.AddCommitment, more)
            await spend(client, contract.customer_id, "b", 12)
            assert await outbox_topics(conn, contract.contract_id) == expected
            recharge_charges = "SELECT count(*) FROM simulated_charges WHERE reference LIKE 'rch_%'"
            assert await conn.fetchval(recharge_charges) == 2
