"""A contract's whole life on a real Temporal server, in about twenty seconds.

Four 4-second periods: a top-up that expires with a warning, an auto-recharge, a card that
declines until the contract is suspended and a new card reinstates it, then a renewal that
rolls unused prepaid balance into the next term. At the end the ledger reconciles with zero
drift. Everything runs as in production: workflows started from the outbox, signals sent by
the operator CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from rating_client import ContractSuspended
from rating_client.gen.rating.v1 import contract_pb2
from rating_service.core.ledger.accounts import breakage_account_id
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.store.ledger import reconcile
from rating_service.workflows.renewal import SettlementResult, renewal_workflow_id
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import billing_stack, database, open_billing_contract

D = Decimal
PERIOD = 4


async def test_a_contract_lives_a_whole_life_and_the_ledger_has_no_drift(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with database(settings) as conn:
        async with billing_stack(
            settings,
            temporal_address,
            server,
            acme,
            expiry_warning_seconds=4.0,
            settlement_poll_seconds=0.2,
        ) as stack:
            client, temporal = stack.client, stack.temporal
            contract = await open_billing_contract(
                client,
                "cus_life",
                period_seconds=PERIOD,
                periods=4,
                auto_recharge={"threshold": "5", "amount": "20"},
                renewal={
                    "commitments": [{"kind": "credit", "amount": "5", "cost_basis": "1"}],
                    "rollover_percent": "50",
                    "rollover_cap": "4",
                    "notice_seconds": 4,
                },
                dunning_retry_seconds=[1, 1],
            )
            contract_id, customer = contract.contract_id, contract.customer_id
            start = contract.term_start

            async def status() -> str:
                reply = await client.call(
                    client.contracts.GetContract,
                    contract_pb2.GetContractRequest(contract_id=contract_id),
                )
                return str(reply.contract.status)

            async def announced(topic: str) -> bool:
                return await topics(topic) > 0

            async def topics(topic: str) -> int:
                return int(
                    await conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE topic = $1"
                        " AND payload->>'contract_id' = $2",
                        topic,
                        contract_id,
                    )
                )

            # A bought top-up of 10 that expires in the second period.
            expires = Timestamp()
            expires.FromDatetime(start + timedelta(seconds=7.5))
            top_up = await client.call(
                client.contracts.TopUp,
                contract_pb2.TopUpRequest(
                    top_up_id="life-1", contract_id=contract_id, amount="10", expires_at=expires
                ),
            )
            top_up_pool = top_up.commitment.pool_id
            # Six $1 calls: 10 → 4, below the auto-recharge threshold of 5.
            for n in range(6):
                await client.rate_and_debit(
                    event_id=f"life-{n}",
                    customer_id=customer,
                    event_type="api.call",
                    properties={},
                )
            await eventually(lambda: announced("recharge.succeeded"), timeout_seconds=15)
            # The card starts declining before the first period is invoiced.
            await stack.run_cli("contracts", "payment-method", contract_id, "--token", "pm_decline")
            await eventually(lambda: _is(status, "suspended"), timeout_seconds=20)
            with pytest.raises(ContractSuspended):
                await client.rate_and_debit(
                    event_id="while-suspended",
                    customer_id=customer,
                    event_type="api.call",
                    properties={},
                )
            # A new card: dunning retries at once, the invoice is paid, the contract reinstated.
            await stack.run_cli("contracts", "payment-method", contract_id, "--token", "pm_ok")
            await eventually(lambda: _is(status, "active"), timeout_seconds=20)
            await client.rate_and_debit(
                event_id="after-reinstatement",
                customer_id=customer,
                event_type="api.call",
                properties={},
            )
            renewal = temporal.get_workflow_handle(
                renewal_workflow_id(acme.tenant_id, contract_id), result_type=SettlementResult
            )
            async with asyncio.timeout(40):
                settled = await renewal.result()
            assert settled.state == "renewed"

            counted = {
                topic: await topics(topic)
                for topic in (
                    "expiry.warning",
                    "credit.expired",
                    "contract.suspended",
                    "contract.reinstated",
                    "renewal.upcoming",
                    "contract.renewed",
                )
            }
            # Two pools expired: the top-up at its expiry, the recharge's rest at term end.
            assert counted == {**dict.fromkeys(counted, 1), "credit.expired": 2}
            assert await topics("payment.failed") >= 3
            expired = await conn.fetch(
                "SELECT amount FROM transfers WHERE reference = $1", f"expiry:{top_up_pool}"
            )
            assert len(expired) == 1  # once
            # Left after the seven calls: 10 + 20 − 7 = 23, in the top-up (until it expired)
            # and the recharge. The recharge's part was unused prepaid balance: 50% of it is
            # over the cap, so 4 rolled into the next term; everything else went to breakage.
            assert D(settled.rolled_over) == D(4)
            breakage = await conn.fetchval(
                "SELECT credits_posted - debits_posted FROM accounts WHERE account_id = $1",
                breakage_account_id(contract_id),
            )
            assert breakage == D(23) - D(4)
            renewed = await client.call(
                client.contracts.GetContract,
                contract_pb2.GetContractRequest(contract_id=f"{contract_id}.2"),
            )
            assert sorted(D(c.balance) for c in renewed.commitments) == [D(4), D(5)]
        invoices = await conn.fetch(
            "SELECT number, state FROM invoices WHERE contract_id = $1 ORDER BY billing_date",
            contract_id,
        )
        assert [r["state"] for r in invoices] == ["paid"] * len(invoices)
        assert len(invoices) == 5  # the opening invoice and one per period end
        assert all(report.clean for report in (await reconcile(conn)).values())


async def _is(status: Callable[[], Awaitable[str]], wanted: str) -> bool:
    return await status() == wanted
