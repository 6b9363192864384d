"""Billing cycles on a real Temporal server: a contract billed period after period, to the cent.

Periods are a few seconds long (contracts may have fixed-length periods), the grace window one
second; the contract's workflow is started by the outbox dispatcher, as in production.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.api.enums.v1 import EventType

from rating_client import RatingRefused
from rating_service.core.billing.invoice import InvoiceState, LineKind
from rating_service.core.errors import NotFound
from rating_service.core.ledger.accounts import cash_account_id, receivable_account_id
from rating_service.ops.failures import summarise
from rating_service.runtime.server import RunningServer
from rating_service.runtime.temporal import connect_temporal
from rating_service.settings import Settings
from rating_service.store.ledger import reconcile
from rating_service.workflows.billing import (
    BillingSchedule,
    ContractBillingWorkflow,
    billing_workflow_id,
)
from rating_service.workflows.invoice import InvoiceResult, invoice_workflow_id
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import (
    PLATFORM_FEE,
    admin_client,
    billing_schedule,
    billing_stack,
    billing_waits_for,
    credit,
    database,
    event_count,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
    record_history,
    running_worker,
    sleep_until,
    start_worker_process,
    worker_settings,
    workflow_started,
)

D = Decimal
PERIOD = 4
SIGNAL_PERIOD = 30
"""Periods of the operator test: bill-now, its invoice and a cancel happen within one."""


async def test_a_contract_is_billed_every_period_to_the_cent(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    # Three dates a run: the cycle continues as new once, before its fourth and final date.
    async with billing_stack(
        settings, temporal_address, server, acme, billing_dates_per_run=3
    ) as stack:
        client, temporal = stack.client, stack.temporal
        contract = await open_billing_contract(
            client, "cus_cycles", period_seconds=PERIOD, periods=3
        )
        # The credit starts with the term, so the first event draws it whatever the clock says
        # (a pool is drawn only by events stamped after it starts).
        welcome = credit(contract.contract_id, "2.5")
        welcome.starts_at.FromDatetime(contract.term_start)
        granted = await client.call(client.contracts.AddCommitment, welcome)
        pool_id = granted.commitment.pool_id
        handle = temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )

        async def started() -> bool:
            schedule = await billing_schedule(handle)
            return isinstance(schedule, BillingSchedule) and schedule.next_billing_date is not None

        await eventually(started, timeout_seconds=15)
        # Usage in the first two periods; the third has none and is still invoiced (at zero).
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
                assert D(reply.charge) == D(15), reply  # 1,500 large tokens × 0.01
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
        paid_invoice = invoice_workflow_id(
            acme.tenant_id,
            contract.contract_id,
            (contract.term_start + timedelta(seconds=PERIOD)).isoformat(),
            0,
        )
        cycle = await record_history(
            temporal, billing_workflow_id(acme.tenant_id, contract.contract_id), "billing_final"
        )
        # Opening, two period ends in the first run; the term end in the second.
        invoiced = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
        assert [event_count([run], invoiced) for run in cycle] == [3, 1]
        [invoice] = await record_history(temporal, paid_invoice, "invoice_paid")
        # No render step: its documents are rendered when first read.
        assert [step.step for step in summarise(invoice.history)[0]] == [
            "close_period",
            "draft_invoice",
            "finalize_invoice",
            "collect_payment",
        ]

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
        # (usage, credits applied, fees, total) of each invoice, worked out by hand; an event
        # is 1,500 large tokens × 0.01 = 15.00, the platform fee 12.00 a period in advance.
        assert PLATFORM_FEE == "12"
        expected = [
            ("0.00", "0.00", "12.00", "12.00"),  # opening: the first period's fee
            # 3 × 15 = 45; the 2.50 credit pays part of the first event; next period's fee:
            # 45 − 2.50 + 12 = 54.50
            ("45.00", "-2.50", "12.00", "54.50"),
            ("30.00", "0.00", "12.00", "42.00"),  # 2 × 15 = 30; 30 + 12 = 42
            ("0.00", "0.00", "0.00", "0.00"),  # term end: no usage, no fee after the term
        ]
        assert [
            (
                i.subtotal(LineKind.USAGE),
                i.subtotal(LineKind.CREDIT),
                i.subtotal(LineKind.FEE),
                i.total,
            )
            for i in invoices
        ] == [tuple(D(amount) for amount in row) for row in expected]
        # Nothing here is fractional: each line is exact to the cent before rounding.
        assert [i.exact_total for i in invoices] == [D(row[3]) for row in expected]
        credit_lines = [line for i in invoices for line in i.lines if line.kind is LineKind.CREDIT]
        assert [(line.key, line.amount) for line in credit_lines] == [
            (f"credit:{pool_id}", D("-2.50"))
        ]
        async with database(settings) as conn:
            charged = await conn.fetch(
                "SELECT reference, amount FROM simulated_charges ORDER BY reference"
            )
            # The gateway charged each invoice with something due, once: 12 + 54.50 + 42.
            assert sorted((r["reference"], r["amount"]) for r in charged) == sorted(
                [
                    (invoices[0].invoice_id, D("12.00")),
                    (invoices[1].invoice_id, D("54.50")),
                    (invoices[2].invoice_id, D("42.00")),
                ]
            )
            balances = {
                row["account_id"]: row["debits_posted"] - row["credits_posted"]
                for row in await conn.fetch("SELECT * FROM accounts")
            }
            assert balances[receivable_account_id(contract.contract_id)] == 0
            assert balances[cash_account_id(contract.contract_id)] == D("108.50")  # 12+54.5+42
            assert all(report.clean for report in (await reconcile(conn)).values())


async def test_a_worker_killed_mid_payment_leaves_one_invoice_one_number_one_charge(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    config = worker_settings(settings, temporal_address)
    temporal = await connect_temporal(config)
    # This worker's gateway charges, then takes 60 s to answer: it is killed before it does.
    doomed = await start_worker_process(config, RATING_GATEWAY_LATENCY_SECONDS="60")
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(client, "cus_killed", period_seconds=3, periods=1)
        await client.rate_and_debit(
            event_id="k1",
            customer_id=contract.customer_id,
            event_type="api.call",
            properties={},
            timestamp=contract.term_start,
        )
    async with database(settings) as conn:

        async def charged() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM simulated_charges"))

        # A fresh worker process starts, opens the contract's cycle and reaches the gateway:
        # seconds here, tens of seconds on a machine loaded by other work.
        await eventually(charged, timeout_seconds=90)
        doomed.kill()  # SIGKILL: no drain, the charge's answer is lost with the process
        await doomed.wait()
        async with running_worker(config):
            handle = temporal.get_workflow_handle(
                billing_workflow_id(acme.tenant_id, contract.contract_id)
            )
            async with asyncio.timeout(60):
                assert await handle.result() == "ended"
        opening = invoice_workflow_id(
            acme.tenant_id, contract.contract_id, contract.term_start.isoformat(), 0
        )
        await record_history(temporal, opening, "invoice_worker_killed")
        rows = await conn.fetch(
            "SELECT invoice_id, number, state, total FROM invoices ORDER BY billing_date"
        )
        # Opening: the one period's fee in advance, 12; term end: one api.call at 1, no fee.
        assert [(r["number"], r["state"], r["total"]) for r in rows] == [
            ("INV-000001", "paid", D("12.00")),
            ("INV-000002", "paid", D("1.00")),
        ]
        charges = await conn.fetch("SELECT reference, amount FROM simulated_charges")
        assert sorted((c["reference"], c["amount"]) for c in charges) == sorted(
            (r["invoice_id"], r["total"]) for r in rows
        )
        attempts = await conn.fetch("SELECT invoice_id, status FROM payment_attempts")
        assert sorted((a["invoice_id"], a["status"]) for a in attempts) == sorted(
            (r["invoice_id"], "succeeded") for r in rows
        )
        cash = await conn.fetchval(
            "SELECT debits_posted FROM accounts WHERE account_id = $1",
            cash_account_id(contract.contract_id),
        )
        assert cash == D("13.00")  # 12 + 1, each charged once
        assert all(report.clean for report in (await reconcile(conn)).values())


async def test_operators_bill_now_cancel_and_reissue_through_the_cli(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    # A grace window far longer than the test: only `bill-now` can invoice the first period.
    # Three dates a run: the run that was told to bill now goes on to the next period (whose
    # grace window it must wait out), and continues as new after the cancellation's invoice.
    async with billing_stack(
        settings,
        temporal_address,
        server,
        acme,
        invoice_grace_seconds=600.0,
        billing_dates_per_run=3,
    ) as stack:
        client, temporal = stack.client, stack.temporal
        # No payment method: invoices stay finalized (unpaid), so one can be voided.
        # Two CLI runs and an invoice must fit in the second period: on two busy cores each
        # fresh CLI process takes seconds (over 20 s seen under load), so the periods are long.
        period = timedelta(seconds=SIGNAL_PERIOD)
        contract = await open_billing_contract(
            client,
            "cus_signals",
            period_seconds=SIGNAL_PERIOD,
            periods=100,
            payment_method="",
        )
        handle = temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )
        first_end = contract.term_start + period
        await eventually(lambda: billing_waits_for(handle, first_end), timeout_seconds=15)
        schedule = await handle.query(ContractBillingWorkflow.schedule)
        assert schedule.bills_at == (first_end + timedelta(seconds=600)).isoformat()
        await sleep_until(first_end + timedelta(seconds=0.2))
        await stack.run_cli("contracts", "bill-now", contract.contract_id)
        second_end = first_end + period
        await eventually(lambda: billing_waits_for(handle, second_end), timeout_seconds=15)
        schedule = await handle.query(ContractBillingWorkflow.schedule)
        assert schedule.bills_at == (second_end + timedelta(seconds=600)).isoformat()
        assert schedule.last_billed == first_end.isoformat()
        assert datetime.now(UTC) < second_end, "the cancellation must cut the second period"
        await stack.run_cli("contracts", "cancel", contract.contract_id)
        async with asyncio.timeout(30):
            assert await handle.result() == "ended"
        cycle = await record_history(temporal, handle.id, "billing_cancelled")
        invoiced = EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
        assert [event_count([run], invoiced) for run in cycle] == [3, 0]

        async with open_invoicing(settings) as invoicing:
            invoices = sorted(
                await invoicing.invoices.invoices(acme.tenant_id, contract.contract_id),
                key=lambda i: i.billing_date,
            )
            # Opening (fee in advance), the first period (billed now, with the next period's
            # fee), and the final invoice at the cancellation, which cut the last period short.
            assert [i.number for i in invoices] == ["INV-000001", "INV-000002", "INV-000003"]
            final = invoices[2]  # nothing used, nothing in advance: zero, so paid at once
            assert [i.state for i in invoices] == [
                InvoiceState.FINALIZED,
                InvoiceState.FINALIZED,
                InvoiceState.PAID,
            ]
            assert final.total == 0
            assert invoices[1].billing_date == first_end
            assert first_end < final.billing_date < contract.term_end
            assert final.period_end == final.billing_date
            async with database(settings) as conn:
                states = await conn.fetch(
                    "SELECT state FROM contract_periods WHERE contract_id = $1",
                    contract.contract_id,
                )
            # The period the cancellation cut short is invoiced like the others.
            assert {row["state"] for row in states} == {"invoiced"}

            wrong = invoices[1]
            output = await stack.run_cli(
                "invoices", "void", wrong.invoice_id, "--reason", "fee typo", "--regenerate"
            )
            assert "revision 1" in output
            revision = f"{wrong.invoice_id}-r1"

            async def reissued() -> bool:
                try:
                    found = await invoicing.invoices.invoice(acme.tenant_id, revision)
                except NotFound:
                    return False
                return found.state is InvoiceState.FINALIZED

            await eventually(reissued, timeout_seconds=20)
            again = await invoicing.invoices.invoice(acme.tenant_id, revision)
            assert again.number == "INV-000004"  # a new number; the voided one is never reused
            # Composed from the contract as it is now: the advance fee covers only the part of
            # the next period before the cancellation.
            [fee] = [line for line in again.lines if line.kind is LineKind.FEE]
            assert (fee.service_start, fee.service_end) == (first_end, final.billing_date)
            assert 0 < again.total < wrong.total
            voided = await invoicing.invoices.invoice(acme.tenant_id, wrong.invoice_id)
            assert (voided.state, voided.number) == (InvoiceState.VOID, "INV-000002")


async def test_late_usage_rolls_forward_into_the_open_period_where_the_contract_says_so(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        client, temporal = stack.client, stack.temporal
        contract = await open_billing_contract(
            client, "cus_late", period_seconds=3, periods=3, late_usage="roll_forward"
        )
        first_end = contract.term_start + timedelta(seconds=3)
        handle = temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )

        async def first_period_invoiced() -> bool:
            schedule = await billing_schedule(handle)
            return schedule is not None and schedule.last_billed == first_end.isoformat()

        await eventually(first_period_invoiced, timeout_seconds=20)
        # Stamped in the first period, which is invoiced: rated into the period open when it
        # arrives instead (the second, unless this machine took a period to get here).
        sent = datetime.now(UTC)
        late = await client.rate_and_debit(
            event_id="late-1",
            customer_id=contract.customer_id,
            event_type="api.call",
            properties={},
            timestamp=contract.term_start + timedelta(seconds=1),
        )
        answered = datetime.now(UTC)
        into = (late.period_start.ToDatetime(UTC), late.period_end.ToDatetime(UTC))
        assert first_end <= into[0] <= answered and sent < into[1] <= contract.term_end
        assert await handle.result() == "ended"
    async with open_invoicing(settings) as invoicing:
        invoices = sorted(
            await invoicing.invoices.invoices(acme.tenant_id, contract.contract_id),
            key=lambda i: i.billing_date,
        )
    usage = {i.billing_date: i.subtotal(LineKind.USAGE) for i in invoices}
    assert usage[first_end] == 0
    # The late call, $1, on the invoice of the period it rolled into and on no other.
    assert {date: amount for date, amount in usage.items() if amount} == {into[1]: D("1.00")}


async def test_a_gateway_that_never_answers_leaves_the_invoice_issued_and_unpaid(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    # With the worker's default settings a charge to pm_timeout gives up after 0.2 s.
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        client, temporal = stack.client, stack.temporal
        contract = await open_billing_contract(
            client, "cus_timeout", period_seconds=2, periods=1, payment_method="pm_timeout"
        )
        handle = temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )
        await eventually(lambda: workflow_started(handle), timeout_seconds=15)
        async with asyncio.timeout(60):
            assert await handle.result() == "ended"
        opening = temporal.get_workflow_handle(
            invoice_workflow_id(
                acme.tenant_id, contract.contract_id, contract.term_start.isoformat(), 0
            ),
            result_type=InvoiceResult,
        )
        result = await opening.result()
        assert (result.state, result.payment) == ("finalized", "gateway_timeout")
        await record_history(temporal, opening.id, "invoice_gateway_timeout")
    async with open_invoicing(settings) as invoicing:
        issued = await invoicing.invoices.invoice(acme.tenant_id, result.invoice_id or "")
        assert issued.state is InvoiceState.FINALIZED
        attempts = await invoicing.invoices.payment_attempts(acme.tenant_id, issued.invoice_id)
        # Recorded as failed (the outcome is unknown): dunning asks again under a new key.
        assert [(a.attempt, a.status, a.failure_code) for a in attempts] == [
            (1, "failed", "gateway_timeout")
        ]


async def test_a_cancel_signalled_while_a_date_is_invoiced_still_cancels(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    # Before the fix, the flags were reset after each invoice: this cancel was dropped and the
    # cycle went on billing period after period.
    async with billing_stack(
        settings, temporal_address, server, acme, invoice_grace_seconds=1.0
    ) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_cancel_mid_invoice", period_seconds=PERIOD, periods=100
        )
        handle = stack.temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )

        async def invoicing() -> bool:
            schedule = await billing_schedule(handle)
            return schedule is not None and schedule.state == "invoicing"

        # The opening invoice (fees in advance) is issued at once: cancel while it runs.
        await eventually(invoicing, timeout_seconds=20)
        await handle.signal(ContractBillingWorkflow.cancel)
        async with asyncio.timeout(40):
            assert await handle.result() == "ended"
        await record_history(stack.temporal, handle.id, "billing_cancelled_mid_invoice")
        async with open_invoicing(settings) as invoicing_service:
            invoices = await invoicing_service.invoices.invoices(
                acme.tenant_id, contract.contract_id
            )
        # The opening invoice, and the final one at the cancellation, long before the term end.
        assert len(invoices) == 2
        assert max(i.billing_date for i in invoices) < contract.term_start + timedelta(minutes=1)
