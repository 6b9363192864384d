"""Operator actions that workflows must hear of: void and reissue, record a payment, a new
payment method, cancel or bill now.

Each changes the database through the services and tells Temporal, in the order that keeps the
two agreeing: Temporal is reached first, so an action that workflows would never hear of is
refused (UNAVAILABLE) and changes nothing. Every one is idempotent: voiding a void invoice,
recording a payment on a paid one, saving the same method again or signalling twice answers as
the first time did. The API (`api/invoice.py`, `api/contract.py`) and the `rating` command
both call these, so the orchestration is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from rating_service.core.auth import Caller
from rating_service.core.billing.invoice import Invoice
from rating_service.core.contracts.contract import Contract
from rating_service.core.errors import FailedPrecondition
from rating_service.services.contract import ContractAdmin
from rating_service.services.invoice import Invoicing
from rating_service.workflows.billing import ContractBillingWorkflow, billing_workflow_id
from rating_service.workflows.dunning import dunning_workflow_id
from rating_service.workflows.invoice import InvoiceRequest, InvoiceWorkflow, invoice_workflow_id

NO_BILLING_CYCLE = "NO_BILLING_CYCLE"
"""FailedPrecondition reason: the contract has no running billing workflow to signal."""


@dataclass(frozen=True)
class Voided:
    """A voided invoice, and the workflow issuing its next revision (if asked for)."""

    invoice: Invoice
    revision_workflow_id: str | None


@dataclass(frozen=True)
class Paid:
    """An invoice recorded as paid, and its contract as the payment left it."""

    invoice: Invoice
    contract: Contract


@dataclass(frozen=True)
class PaymentMethodSet:
    """A contract with its new payment method, and the unpaid invoices retried with it now."""

    contract: Contract
    retried: list[str]


class OperatorActions:
    """Changes to invoices and contracts that their workflows must hear of."""

    def __init__(
        self,
        invoicing: Invoicing,
        admin: ContractAdmin,
        temporal: Callable[[], Awaitable[Client]],
        task_queue: str,
    ) -> None:
        self._invoicing = invoicing
        self._admin = admin
        self._temporal = temporal
        self._task_queue = task_queue

    async def void_invoice(
        self, caller: Caller, invoice_id: str, reason: str, *, regenerate: bool, actor: str
    ) -> Voided:
        """Void an invoice (audited); with `regenerate`, start issuing its next revision."""
        temporal = await self._temporal() if regenerate else None
        voided = await self._invoicing.void(caller.tenant_id, invoice_id, actor, reason)
        if temporal is None:
            return Voided(voided, None)
        return Voided(voided, await self._start_revision(temporal, voided))

    async def record_payment(
        self, caller: Caller, invoice_id: str, reference: str, *, actor: str
    ) -> Paid:
        """Record a payment made outside the gateway; a contract suspended for it resumes."""
        temporal = await self._temporal()
        paid = await self._invoicing.record_payment(caller.tenant_id, invoice_id, reference, actor)
        await _signal_dunning(temporal, caller.tenant_id, [invoice_id], "invoice_paid")
        return Paid(paid, await self._invoicing.contract_of(paid))

    async def set_payment_method(
        self, caller: Caller, contract_id: str, token: str
    ) -> PaymentMethodSet:
        """Save the contract's payment method; invoices in dunning are retried with it now."""
        # A method saved that dunning never hears of leaves a suspended contract suspended.
        temporal = await self._temporal()
        contract = await self._admin.change_payment_method(caller, contract_id, token)
        unpaid = await self._invoicing.invoices.unpaid_invoice_ids(caller.tenant_id, contract_id)
        retried = await _signal_dunning(
            temporal, caller.tenant_id, unpaid, "payment_method_updated"
        )
        return PaymentMethodSet(contract, retried)

    async def cancel_contract(self, caller: Caller, contract_id: str) -> None:
        """End a contract now: its billing workflow ends the term and issues the final invoice."""
        await self._signal_billing(caller, contract_id, ContractBillingWorkflow.cancel)

    async def bill_now(self, caller: Caller, contract_id: str) -> None:
        """Invoice a period that has ended without waiting out its grace window."""
        await self._signal_billing(caller, contract_id, ContractBillingWorkflow.bill_now)

    async def _signal_billing(
        self, caller: Caller, contract_id: str, signal: Callable[[ContractBillingWorkflow], None]
    ) -> None:
        contract, _ = await self._admin.contract(caller, contract_id)  # NotFound for others'
        temporal = await self._temporal()
        handle = temporal.get_workflow_handle(
            billing_workflow_id(caller.tenant_id, contract.contract_id)
        )
        try:
            await handle.signal(signal)
        except RPCError as error:
            raise FailedPrecondition(
                f"contract {contract_id!r} has no running billing cycle ({error.message}):"
                " it has ended, or `rating worker` has not started it yet",
                reason=NO_BILLING_CYCLE,
                metadata={"contract_id": contract_id},
            ) from None

    async def _start_revision(self, temporal: Client, voided: Invoice) -> str:
        """Start the invoice workflow of the voided invoice's next revision; its id."""
        revision = voided.revision + 1
        billing_date = voided.billing_date.isoformat()
        workflow_id = invoice_workflow_id(
            voided.tenant_id, voided.contract_id, billing_date, revision
        )
        # Asked twice, the revision is being (or has been) issued already: its workflow stands.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await temporal.start_workflow(
                InvoiceWorkflow.run,
                InvoiceRequest(voided.tenant_id, voided.contract_id, billing_date, revision),
                id=workflow_id,
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        return workflow_id


async def _signal_dunning(
    temporal: Client, tenant_id: str, invoice_ids: Sequence[str], signal: str
) -> list[str]:
    """Signal the dunning workflows of these invoices that are running; the invoices signalled."""
    signalled = []
    for invoice_id in invoice_ids:
        handle = temporal.get_workflow_handle(dunning_workflow_id(tenant_id, invoice_id))
        try:
            await handle.signal(signal)
        except RPCError:
            continue  # not in dunning: never failed to pay, or its dunning has ended
        signalled.append(invoice_id)
    return signalled
