"""The operator: finds the failed invoice, fixes the contract's payment method and replays it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from temporalio.client import Client

from rating_client import RatingClient
from rating_service.cli.demo.plan import ACTOR
from rating_service.cli.demo.state import DemoAccount, DemoState, FailedInvoice, Note
from rating_service.cli.demo.view import money
from rating_service.core.auth import Caller, Role
from rating_service.core.billing.invoice import invoice_id_for
from rating_service.ops.failures import InvoiceRun, failed_invoices
from rating_service.ops.replay import InvoiceReplays
from rating_service.services.contract import ContractAdmin

FIXED_PAYMENT_METHOD = "pm_ok"
"""The token the operator saves in place of the mistyped one."""


@dataclass(frozen=True)
class Operator:
    """What an operator does about a failed invoice: find it, fix the contract, replay it."""

    tenant_id: str
    admin: ContractAdmin
    temporal: Client
    replays: InvoiceReplays

    async def failed_invoices(self, contract_id: str) -> list[InvoiceRun]:
        """The contract's failed invoice workflows, latest first."""
        return await failed_invoices(self.temporal, self.tenant_id, contract_id=contract_id)

    async def change_payment_method(self, contract_id: str, token: str) -> None:
        """Save a new payment method, as `rating contracts payment-method` does (audited)."""
        caller = Caller(self.tenant_id, ACTOR, Role.ADMIN)
        await self.admin.change_payment_method(caller, contract_id, token)

    async def replay(self, workflow_id: str) -> str:
        """Replay a failed invoice workflow (logged, audited); how it ended, and the detail."""
        record = await self.replays.replay(
            self.tenant_id, workflow_id, reason="demo: payment method fixed", actor=ACTOR
        )
        return f"{record.outcome} ({record.detail})" if record.detail else record.outcome


async def fix_failed_invoice(
    client: RatingClient, operator: Operator, state: DemoState, note: Note
) -> None:
    """Once the mistyped card's invoice fails, fix the payment method and replay it."""
    account = next(a for a in state.accounts if a.customer.payment_method == "pm_typo")
    while True:
        runs = await operator.failed_invoices(account.contract_id)
        if runs:
            break
        await asyncio.sleep(1.0)
    for run in reversed(runs):  # oldest first
        await _saw_failure(client, account, run, state, note)
    await asyncio.sleep(state.plan.operator_pause_seconds)
    await operator.change_payment_method(account.contract_id, FIXED_PAYMENT_METHOD)
    account.payment_method = FIXED_PAYMENT_METHOD
    note(
        "operator",
        f"{account.customer.name}: payment method {account.customer.payment_method} → "
        f"{FIXED_PAYMENT_METHOD} (as `rating contracts payment-method` does)",
    )
    # Listed again: with short periods another invoice may have failed meanwhile.
    for run in reversed(await operator.failed_invoices(account.contract_id)):
        failed = await _saw_failure(client, account, run, state, note)
        note("operator", f"replaying {run.workflow_id}")
        failed.outcome = await operator.replay(run.workflow_id)
        note("replay", f"{failed.number}: replay {failed.outcome}")
        while True:
            invoice = await client.invoice(failed.invoice_id)
            if invoice.state == "paid":
                break
            await asyncio.sleep(1.0)
        attempts = await client.payment_attempts(failed.invoice_id)
        failed.charges = sum(1 for attempt in attempts if attempt.status == "succeeded")
        failed.paid = True
        note(
            "replay",
            f"{failed.number} paid after the replay: {failed.charges} charge of "
            f"{money(Decimal(invoice.total))}, {len(attempts)} payment attempt(s) on record",
        )


async def _saw_failure(
    client: RatingClient, account: DemoAccount, run: InvoiceRun, state: DemoState, note: Note
) -> FailedInvoice:
    """The failed invoice of this run, announced the first time it is seen."""
    known = next((f for f in state.failed_invoices if f.workflow_id == run.workflow_id), None)
    if known is not None:
        return known
    invoice_id = invoice_id_for(
        run.key.contract_id, datetime.fromisoformat(run.key.billing_date), run.key.revision
    )
    number = (await client.invoice(invoice_id)).number or invoice_id
    step = run.failing_step
    failed = FailedInvoice(
        run.workflow_id,
        invoice_id,
        number,
        "" if step is None else step.step,
        (step.error if step is not None and step.error else run.error),
    )
    state.failed_invoices.append(failed)
    note(
        "failure",
        f"{account.customer.name}: {number}'s workflow failed at {failed.step}: {failed.error}",
    )
    return failed
