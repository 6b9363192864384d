"""Billing cycles on a real Temporal server: a contract billed period after period, to the cent.

Periods are a few seconds long (contracts may have fixed-length periods), the grace window one
second; the contract's workflow is started by the outbox dispatcher, as in production.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from rating_service.api.server import RunningServer
from rating_service.billing.invoice import InvoiceState, LineKind
from rating_service.client import RatingClient, RatingRefused
from rating_service.domain.auth import Role
from rating_service.ledger.accounts import cash_account_id, receivable_account_id
from rating_service.settings import Settings
from rating_service.store.ledger import reconcile
from rating_service.worker import connect_temporal
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import (
    PLATFORM_FEE,
    credit,
    database,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
    record_history,
    running_worker,
    sleep_until,
    worker_settings,
)
from workflows.billing import BillingSchedule, ContractBillingWorkflow, billing_workflow_id
from workflows.invoice import invoice_workflow_id

D = Decimal
PERIOD = 4


async def test_a_contract_is_billed_every_period_to_the_cent(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    config = worker_settings(settings, temporal_address)
    temporal = await connect_temporal(config)
    async with (
        RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as client,
        running_worker(config),
    ):
        contract = await open_billing_contract(
            client, "cus_cycles", period_seconds=PERIOD, periods=3
        )
        granted = await client.call(
            client.contracts.AddCommitment, credit(contract.contract_id, "2.5")
        )
        pool_id = granted.commitment.pool_id
        handle = temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )

        async def started() -> bool:
            try:
                schedule = await handle.query(ContractBillingWorkflow.schedule)
            except Exception:  # not started yet: the dispatcher polls the outbox
                return False
            return isinstance(schedule, BillingSchedule) and schedule.next_billing_date is not None

        await eventually(started, timeout_seconds=15)
        # Usage in the first two periods; the third has none and is still invoiced (at zero).
        charges: dict[int, list[Decimal]] = {0: [], 1: []}
        for period, count in ((0, 3), (1, 2)):
            # Stamped inside the period, sent as it starts: well before it closes.
            moment = contract.term_start + timedelta(seconds=PERIOD * period + 0.2)
            await sleep_until(moment)
            for n in range(count):
                reply = await client.rate_and_debit(
                    event_id=f"e{period}-{n}",
                    customer_id=contract.customer_id,
                    event_type="llm.completion",
                    properties={"tokens": "1500", "model": "large"},
                    timestamp=moment,
                )
                charges[period].append(D(reply.charge))
        assert await handle.result() == "ended"
        late = contract.term_start + timedelta(seconds=1)
        with pytest.raises(RatingRefused) as refused:
            await client.rate_and_debit(
                event_id="late",
                customer_id=contract.customer_id,
                event_type="api.call",
                properties={},
                timestamp=late,
            )
        assert refused.value.reason == "PERIOD_CLOSED"
        await record_history(
            temporal,
            invoice_workflow_id(
                acme.tenant_id,
                contract.contract_id,
                (contract.term_start + timedelta(seconds=PERIOD)).isoformat(),
                0,
            ),
            "invoice_paid",
        )

    async with open_invoicing(settings) as invoicing:
        invoices = sorted(
            await invoicing.invoices.invoices(acme.tenant_id, contract.contract_id),
            key=lambda i: i.billing_date,
        )
        # The opening invoice (fee in advance, nothing in arrears), then one per period end.
        dates = [contract.term_start + timedelta(seconds=PERIOD * k) for k in range(4)]
        assert [i.billing_date for i in invoices] == dates
        assert [i.number for i in invoices] == [f"INV-00000{n}" for n in range(1, 5)]
        assert all(i.state is InvoiceState.PAID for i in invoices)
        for k, invoice in enumerate(invoices):
            usage = sum(charges.get(k - 1, []), D(0))
            credit_used = -invoice.subtotal(LineKind.CREDIT)
            fee = D(PLATFORM_FEE) if k < 3 else D(0)  # in advance: none after the term
            exact_credits = -sum(
                (line.exact_amount for line in invoice.lines if line.kind is LineKind.CREDIT),
                D(0),
            )
            assert invoice.exact_total == usage + fee - exact_credits, invoice.invoice_id
            assert invoice.total == sum((line.amount for line in invoice.lines), D(0))
            assert credit_used <= D("2.5")
        # The credit paid for the first usage, once.
        assert sum((-i.subtotal(LineKind.CREDIT) for i in invoices), D(0)) == D("2.5")
        assert [line.key for line in invoices[1].lines if line.kind is LineKind.CREDIT] == [
            f"credit:{pool_id}"
        ]
        conn = await database(settings)
        try:
            charged = await conn.fetch(
                "SELECT reference, amount FROM simulated_charges ORDER BY reference"
            )
            assert sorted((r["reference"], r["amount"]) for r in charged) == sorted(
                (i.invoice_id, i.total) for i in invoices if i.total > 0
            )
            balances = {
                row["account_id"]: row["debits_posted"] - row["credits_posted"]
                for row in await conn.fetch("SELECT * FROM accounts")
            }
            assert balances[receivable_account_id(contract.contract_id)] == 0
            assert balances[cash_account_id(contract.contract_id)] == sum(
                (i.total for i in invoices), D(0)
            )
            assert all(report.clean for report in (await reconcile(conn)).values())
        finally:
            await conn.close()
