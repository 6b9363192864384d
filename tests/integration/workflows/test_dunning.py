"""Dunning on a real Temporal server: retries on the contract's schedule, suspension, reinstatement.

Each contract's opening invoice (the platform fee, in advance) is issued and collected as its
term starts; a failed first attempt writes `payment.failed`, whose outbox row starts dunning.
Schedules of a second or two stand in for the default 1, 3, 5 and 7 days.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from click.testing import CliRunner, Result
from temporalio.client import Client, WorkflowHandle

from rating_client import ContractSuspended
from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import InvoiceState, invoice_id_for
from rating_service.core.ledger.accounts import receivable_account_id
from rating_service.runtime.server import RunningServer
from rating_service.services.invoice import Collection
from rating_service.settings import Settings
from rating_service.store.ledger import reconcile
from rating_service.workflows.dunning import DunningStatus, DunningWorkflow, dunning_workflow_id
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import (
    BillingContract,
    admin_client,
    api_env,
    billing_stack,
    database,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
    record_history,
    run_cli,
    serving,
    workflow_started,
)

LONG_PERIOD = 600
"""Seconds: only the opening invoice is issued while a test runs."""


def _opening_invoice(contract: BillingContract) -> str:
    return invoice_id_for(contract.contract_id, contract.term_start)


async def _dunning(temporal: Client, tenant_id: str, invoice_id: str) -> WorkflowHandle[Any, str]:
    """The invoice's dunning workflow, once the outbox dispatcher has started it."""
    handle: WorkflowHandle[Any, str] = temporal.get_workflow_handle(
        dunning_workflow_id(tenant_id, invoice_id), result_type=str
    )
    await eventually(lambda: workflow_started(handle), timeout_seconds=20)
    return handle


async def _status(handle: WorkflowHandle[Any, str]) -> DunningStatus:
    return await handle.query(DunningWorkflow.status)


async def _outbox(conn: asyncpg.Connection, topic: str, contract_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT payload FROM outbox WHERE topic = $1 AND payload->>'contract_id' = $2"
        " ORDER BY outbox_id",
        topic,
        contract_id,
    )
    return [json.loads(row["payload"]) for row in rows]


async def _attempts(conn: asyncpg.Connection, invoice_id: str) -> list[tuple[int, str, str]]:
    rows = await conn.fetch(
        "SELECT attempt, status, failure_code FROM payment_attempts WHERE invoice_id = $1"
        " ORDER BY attempt",
        invoice_id,
    )
    return [(row["attempt"], row["status"], row["failure_code"] or "") for row in rows]


async def test_a_card_that_keeps_declining_suspends_the_contract_until_a_new_one_pays(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    events = itertools.count()
    async with database(settings) as conn:
        async with billing_stack(settings, temporal_address, server, acme) as stack:
            client, temporal = stack.client, stack.temporal
            contract = await open_billing_contract(
                client,
                "cus_declining",
                period_seconds=LONG_PERIOD,
                periods=1,
                payment_method="pm_decline",
                dunning_retry_seconds=[1, 1],
            )
            invoice_id = _opening_invoice(contract)

            async def use() -> None:
                await client.rate_and_debit(
                    event_id=f"call-{next(events)}",
                    customer_id=contract.customer_id,
                    event_type="api.call",
                    properties={},
                )

            async def refused() -> bool:
                try:
                    await use()
                except ContractSuspended as error:
                    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
                    return True
                return False  # the suspension has not reached the rating cache yet

            async def accepted() -> bool:
                try:
                    await use()
                except ContractSuspended:
                    return False  # the reinstatement has not reached the rating cache yet
                return True

            await use()
            dunning = await _dunning(temporal, acme.tenant_id, invoice_id)
            await eventually(
                lambda: _state_is(dunning, "suspended"), timeout_seconds=20
            )  # the first attempt and two retries a second apart
            status = await _status(dunning)
            assert (status.attempts, status.next_retry_at) == (3, None)
            assert status.last_decline_code == "card_declined"
            assert await _attempts(conn, invoice_id) == [
                (1, "failed", "card_declined"),
                (2, "failed", "card_declined"),
                (3, "failed", "card_declined"),
            ]
            state = await conn.fetchval(
                "SELECT state FROM invoices WHERE invoice_id = $1", invoice_id
            )
            assert state == "uncollectible"
            assert await _contract_status(conn, contract) == "suspended"
            await eventually(refused, timeout_seconds=10)

            failures = await _outbox(conn, "payment.failed", contract.contract_id)
            assert [(f["invoice_id"], f["attempt"], f["decline_code"]) for f in failures] == [
                (invoice_id, n, "card_declined") for n in (1, 2, 3)
            ]
            # Each notification says when the next retry comes: one second after it failed.
            for failure in failures[:2]:
                gap = _at(failure["next_retry_at"]) - _at(failure["failed_at"])
                assert gap == timedelta(seconds=1)
            assert failures[2]["next_retry_at"] is None
            suspended = await _outbox(conn, "contract.suspended", contract.contract_id)
            assert [s["invoice_id"] for s in suspended] == [invoice_id]

            output = await stack.run_cli(
                "contracts", "payment-method", contract.contract_id, "--token", "pm_ok"
            )
            assert f"retrying {invoice_id} now" in output
            async with asyncio.timeout(20):
                assert await dunning.result() == "paid"
            assert (await _attempts(conn, invoice_id))[3:] == [(4, "succeeded", "")]
            state = await conn.fetchval(
                "SELECT state FROM invoices WHERE invoice_id = $1", invoice_id
            )
            assert state == "paid"
            assert await _contract_status(conn, contract) == "active"
            await eventually(accepted, timeout_seconds=10)
            reinstated = await _outbox(conn, "contract.reinstated", contract.contract_id)
            assert [r["invoice_id"] for r in reinstated] == [invoice_id]
            audited = await conn.fetch(
                "SELECT action FROM audit_log WHERE subject = $1 ORDER BY audit_id",
                contract.contract_id,
            )
            assert [row["action"] for row in audited][-3:] == [
                "contract.suspended",
                "contract.payment_method",
                "contract.reinstated",
            ]
            await record_history(temporal, dunning.id, "dunning_suspended_then_paid")
        assert all(report.clean for report in (await reconcile(conn)).values())


async def test_a_card_that_fails_twice_is_paid_on_the_third_attempt_without_suspension(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        client, temporal = stack.client, stack.temporal
        contract = await open_billing_contract(
            client,
            "cus_flaky",
            period_seconds=LONG_PERIOD,
            periods=1,
            payment_method="pm_fail_2",
            dunning_retry_seconds=[1, 1, 1],
        )
        invoice_id = _opening_invoice(contract)
        dunning = await _dunning(temporal, acme.tenant_id, invoice_id)
        async with asyncio.timeout(20):
            assert await dunning.result() == "paid"
        assert (await _status(dunning)).attempts == 3
    async with database(settings) as conn:
        assert await _attempts(conn, invoice_id) == [
            (1, "failed", "processing_error"),
            (2, "failed", "processing_error"),
            (3, "succeeded", ""),
        ]
        charges = await conn.fetch(
            "SELECT outcome, amount FROM simulated_charges WHERE reference = $1", invoice_id
        )
        assert sorted(c["outcome"] for c in charges) == ["declined", "declined", "succeeded"]
        state = await conn.fetchval("SELECT state FROM invoices WHERE invoice_id = $1", invoice_id)
        assert state == "paid"
        assert await _contract_status(conn, contract) == "active"
        assert await _outbox(conn, "contract.suspended", contract.contract_id) == []
        failures = await _outbox(conn, "payment.failed", contract.contract_id)
        assert [f["attempt"] for f in failures] == [1, 2]


async def test_a_new_payment_method_is_tried_at_once_not_at_the_scheduled_retry(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        client, temporal = stack.client, stack.temporal
        contract = await open_billing_contract(
            client,
            "cus_new_card",
            period_seconds=LONG_PERIOD,
            periods=1,
            payment_method="pm_fail_1",
            dunning_retry_seconds=[600],
        )
        invoice_id = _opening_invoice(contract)
        dunning = await _dunning(temporal, acme.tenant_id, invoice_id)
        await eventually(lambda: _state_is(dunning, "waiting"), timeout_seconds=10)
        waiting = await _status(dunning)
        async with database(settings) as conn:
            [failure] = await _outbox(conn, "payment.failed", contract.contract_id)
            # The workflow waits for exactly the retry the notification announced.
            assert waiting.next_retry_at == failure["next_retry_at"]
            assert _at(failure["next_retry_at"]) - _at(failure["failed_at"]) == timedelta(
                seconds=600
            )
            await dunning.signal(DunningWorkflow.payment_method_updated)
            async with asyncio.timeout(15):
                assert await dunning.result() == "paid"
            assert await _attempts(conn, invoice_id) == [
                (1, "failed", "processing_error"),
                (2, "succeeded", ""),
            ]


async def test_an_operator_cannot_pay_or_change_a_method_that_dunning_would_not_hear_of(
    settings: Settings, server: RunningServer, acme: TenantKeys
) -> None:
    # No Temporal configured: saving the method anyway would leave the suspended contract
    # suspended (its dunning waits for a signal that never comes), and say nothing of it.
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(
            client,
            "cus_no_temporal",
            period_seconds=LONG_PERIOD,
            periods=1,
            payment_method="pm_decline",
        )
    async with open_invoicing(settings) as invoicing:
        tenant, billing_date = acme.tenant_id, contract.term_start
        await invoicing.close_period(tenant, contract.contract_id, billing_date)
        draft = await invoicing.draft(tenant, contract.contract_id, billing_date)
        assert draft is not None
        await invoicing.finalize(tenant, draft.invoice_id)
        await invoicing.give_up_collecting(tenant, draft.invoice_id, "test")
    # The operator commands act through the test's server, which knows no Temporal.
    env = api_env(server, acme.tokens[Role.ADMIN])

    def rating(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=env)

    method = await asyncio.to_thread(
        rating, "contracts", "payment-method", contract.contract_id, "--token", "pm_ok"
    )
    assert method.exit_code == 1, method.output
    assert "RATING_TEMPORAL_ADDRESS is not set" in method.output
    assert "status: FAILED_PRECONDITION TEMPORAL_UNAVAILABLE" in method.output
    assert "nothing was changed" in method.output
    paid = await asyncio.to_thread(rating, "invoices", "pay", draft.invoice_id, "--reference", "W")
    assert paid.exit_code == 1, paid.output
    assert "nothing was changed" in paid.output
    async with database(settings) as conn:
        assert await _contract_status(conn, contract) == "suspended"
        actions = await conn.fetch(
            "SELECT action FROM audit_log WHERE subject = $1", contract.contract_id
        )
        assert "contract.payment_method" not in {row["action"] for row in actions}
        state = await conn.fetchval(
            "SELECT state FROM invoices WHERE invoice_id = $1", draft.invoice_id
        )
        assert state == "uncollectible"


async def test_a_payment_recorded_by_an_operator_reinstates_once_nothing_is_uncollectible(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    # No worker: the invoices are issued and given up on by calling the invoicing steps.
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(
            client, "cus_wire", period_seconds=LONG_PERIOD, periods=2, payment_method="pm_decline"
        )
    tenant = acme.tenant_id
    first_end = contract.term_start + timedelta(seconds=LONG_PERIOD)
    async with open_invoicing(settings) as invoicing:
        owed = []
        for billing_date in (contract.term_start, first_end):
            await invoicing.close_period(tenant, contract.contract_id, billing_date)
            draft = await invoicing.draft(tenant, contract.contract_id, billing_date)
            assert draft is not None
            await invoicing.finalize(tenant, draft.invoice_id)
            given_up = await invoicing.give_up_collecting(tenant, draft.invoice_id, "test")
            assert given_up.state is InvoiceState.UNCOLLECTIBLE
            owed.append(given_up)
    # The operator's commands act through a server that reaches Temporal.
    with_temporal = replace(settings, temporal_address=temporal_address)
    async with database(settings) as conn, serving(with_temporal) as operator_server:
        env = api_env(operator_server, acme.tokens[Role.OPS])
        assert await _contract_status(conn, contract) == "suspended"
        first = await run_cli(env, "invoices", "pay", owed[0].invoice_id, "--reference", "W-1")
        assert f"{owed[0].invoice_id} ({owed[0].number}) is paid" in first
        # The other invoice is still uncollectible: the contract stays suspended.
        assert f"contract {contract.contract_id} is suspended" in first
        second = await run_cli(env, "invoices", "pay", owed[1].invoice_id, "--reference", "W-2")
        assert f"contract {contract.contract_id} is active" in second
        again = await run_cli(env, "invoices", "pay", owed[1].invoice_id, "--reference", "W-2")
        assert "is paid" in again  # recorded once: paying a paid invoice changes nothing
        suspended = await _outbox(conn, "contract.suspended", contract.contract_id)
        assert [s["invoice_id"] for s in suspended] == [owed[0].invoice_id]
        reinstated = await _outbox(conn, "contract.reinstated", contract.contract_id)
        assert [r["invoice_id"] for r in reinstated] == [owed[1].invoice_id]
        references = await conn.fetch(
            "SELECT details->>'reference' AS reference FROM audit_log"
            " WHERE action = 'invoice.payment_recorded' ORDER BY audit_id"
        )
        assert [row["reference"] for row in references] == ["W-1", "W-2"]
        receivable = await conn.fetchval(
            "SELECT debits_posted - credits_posted FROM accounts WHERE account_id = $1",
            receivable_account_id(contract.contract_id),
        )
        assert receivable == 0
        assert all(report.clean for report in (await reconcile(conn)).values())


async def test_dunning_resumes_from_the_attempts_the_invoice_recorded(
    settings: Settings, server: RunningServer, acme: TenantKeys
) -> None:
    # What a new run of the workflow (an ops reset) starts from: numbers, never the run's.
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    async with admin_client(server, acme) as client:
        contract = await open_billing_contract(
            client,
            "cus_resume",
            period_seconds=LONG_PERIOD,
            periods=1,
            payment_method="pm_decline",
            dunning_retry_seconds=[60, 120],
        )
    tenant = acme.tenant_id
    async with open_invoicing(settings) as invoicing:
        draft = await invoicing.draft(tenant, contract.contract_id, contract.term_start)
        assert draft is not None
        invoice = await invoicing.finalize(tenant, draft.invoice_id)
        declined = await invoicing.collect(tenant, invoice.invoice_id, attempt=1)
        [first] = await invoicing.payment_attempts(tenant, invoice.invoice_id)
        assert first.settled_at is not None
        assert declined.next_retry_at == first.settled_at + timedelta(seconds=60)
        plan = await invoicing.dunning_plan(tenant, invoice.invoice_id)
        assert (plan.attempts, plan.next_retry_at) == (1, declined.next_retry_at)
        # Attempt 2 began and its answer was lost: it is asked again under its own key, now.
        await invoicing.invoices.start_payment(invoice, 2, "pm_decline")
        before = datetime.now(UTC)
        plan = await invoicing.dunning_plan(tenant, invoice.invoice_id)
        assert plan.attempts == 1
        assert plan.next_retry_at is not None and plan.next_retry_at >= before
        again = await invoicing.collect(tenant, invoice.invoice_id, attempt=2)
        assert again.next_retry_at is not None  # 120 s after attempt 2 failed
        plan = await invoicing.dunning_plan(tenant, invoice.invoice_id)
        assert (plan.attempts, plan.next_retry_at) == (2, again.next_retry_at)
        last = await invoicing.collect(tenant, invoice.invoice_id, attempt=3)
        assert (last.outcome, last.next_retry_at) == (Collection.DECLINED, None)
        plan = await invoicing.dunning_plan(tenant, invoice.invoice_id)
        assert (plan.attempts, plan.next_retry_at) == (3, None)


async def _state_is(handle: WorkflowHandle[Any, str], state: str) -> bool:
    return (await _status(handle)).state == state


async def _contract_status(conn: asyncpg.Connection, contract: BillingContract) -> str:
    return str(
        await conn.fetchval(
            "SELECT status FROM contracts WHERE contract_id = $1", contract.contract_id
        )
    )


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
