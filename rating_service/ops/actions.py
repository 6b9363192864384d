"""Operator actions that workflows must hear of: void and reissue, record a payment, a new
payment method, retry a payment now, a credit note, cancel or bill now, redeliver a notification.

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
from rating_service.core.billing.credit_note import CreditNoteRequest
from rating_service.core.billing.invoice import Invoice, InvoiceState
from rating_service.core.contracts.contract import Contract
from rating_service.core.errors import FailedPrecondition, PreconditionViolation, Unavailable
from rating_service.core.ledger.idempotency import IdempotentOutcome, payload_fingerprint, recall
from rating_service.services.contract import ContractAdmin
from rating_service.services.credit_note import CreditNotes, IssuedCreditNote
from rating_service.services.invoice import Invoicing
from rating_service.services.webhook import Webhooks
from rating_service.store.invoice import PaymentRetry
from rating_service.workflows.billing import ContractBillingWorkflow, billing_workflow_id
from rating_service.workflows.dunning import DunningRequest, DunningWorkflow, dunning_workflow_id
from rating_service.workflows.invoice import InvoiceRequest, InvoiceWorkflow, invoice_workflow_id
from rating_service.workflows.webhook import (
    DeliveryPolicy,
    NotificationInput,
    NotificationWorkflow,
    redelivery_workflow_id,
)

NO_BILLING_CYCLE = "NO_BILLING_CYCLE"
"""FailedPrecondition reason: the contract has no running billing workflow to signal."""

INVOICE_NOT_OPEN = "INVOICE_NOT_OPEN"
"""FailedPrecondition reason: the invoice is not owed (a draft, paid or void): nothing to retry."""

NO_PAYMENT_METHOD = "NO_PAYMENT_METHOD"
"""FailedPrecondition reason: the contract has no payment method to charge."""


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


@dataclass(frozen=True)
class PaymentRetried:
    """An invoice whose collection was retried, the dunning workflow doing it, and whether the
    request id had asked for it before (then nothing was signalled again)."""

    invoice: Invoice
    workflow_id: str
    replay: bool


class OperatorActions:
    """Changes to invoices and contracts that their workflows must hear of."""

    def __init__(
        self,
        invoicing: Invoicing,
        admin: ContractAdmin,
        webhooks: Webhooks,
        temporal: Callable[[], Awaitable[Client]],
        task_queue: str,
        delivery: DeliveryPolicy,
        credit_notes: CreditNotes,
    ) -> None:
        self._credit_notes = credit_notes
        self._invoicing = invoicing
        self._admin = admin
        self._webhooks = webhooks
        self._temporal = temporal
        self._task_queue = task_queue
        self._delivery = delivery

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

    async def issue_credit_note(
        self, caller: Caller, request_id: str, request: CreditNoteRequest, *, actor: str
    ) -> IssuedCreditNote:
        """Issue a credit note (and its refund); an invoice it settles stops being dunned.

        Temporal is not needed to credit: an invoice in dunning is collected for its amount due
        at the next attempt (nothing, once it is credited in full). When Temporal is reachable,
        its dunning hears at once that an invoice credited in full is settled.
        """
        issued = await self._credit_notes.issue(caller, request_id, request, actor)
        settled = issued.invoice.state is InvoiceState.PAID and issued.invoice.paid == 0
        if settled and issued.credit_note.refund_to is None and not issued.replay:
            try:
                temporal = await self._temporal()
            except (Unavailable, FailedPrecondition):  # down, or not configured
                return issued
            await _signal_dunning(
                temporal, caller.tenant_id, [issued.invoice.invoice_id], "invoice_paid"
            )
        return issued

    async def retry_payment(
        self, caller: Caller, invoice_id: str, request_id: str, *, actor: str
    ) -> PaymentRetried:
        """Collect an owed invoice now through its dunning workflow (started if not running).

        The dunning workflow makes the attempt under the invoice's next attempt number, as any
        retry does, so the gateway never charges twice. The same request id is the same retry:
        asked again, it is answered without signalling again.
        """
        tenant_id = caller.tenant_id
        invoice = await self._invoicing.invoices.invoice(tenant_id, invoice_id)
        fingerprint = payload_fingerprint({"invoice_id": invoice_id})
        earlier = await self._invoicing.invoices.payment_retry(tenant_id, request_id)
        if earlier is not None:
            stored = payload_fingerprint({"invoice_id": earlier.invoice_id})
            recall(IdempotentOutcome(request_id, stored, earlier), request_id, fingerprint)
            return PaymentRetried(invoice, earlier.workflow_id, replay=True)
        subject = f"invoices/{invoice_id}"
        if invoice.state not in (InvoiceState.FINALIZED, InvoiceState.UNCOLLECTIBLE):
            description = f"a {invoice.state} invoice is not owed: there is nothing to collect"
            raise FailedPrecondition(
                f"invoice {invoice_id!r}: {description}",
                reason=INVOICE_NOT_OPEN,
                violations=[PreconditionViolation("STATE", subject, description)],
                metadata={"invoice_id": invoice_id, "state": str(invoice.state)},
            )
        contract = await self._invoicing.contract_of(invoice)
        if not contract.payment_method:
            # Dunning would find nothing to charge and give up: the contract would be suspended.
            description = "its contract has no payment method: set one (SetPaymentMethod)"
            raise FailedPrecondition(
                f"invoice {invoice_id!r}: {description}",
                reason=NO_PAYMENT_METHOD,
                violations=[
                    PreconditionViolation(
                        "PAYMENT_METHOD", f"contracts/{contract.contract_id}", description
                    )
                ],
                metadata={"invoice_id": invoice_id, "contract_id": contract.contract_id},
            )
        temporal = await self._temporal()
        workflow_id = dunning_workflow_id(tenant_id, invoice_id)
        # Signal-with-start: a running dunning retries at once; otherwise one starts and does.
        await temporal.start_workflow(
            DunningWorkflow.run,
            DunningRequest(tenant_id, invoice_id),
            id=workflow_id,
            task_queue=self._task_queue,
            start_signal="retry_now",
        )
        recorded = await self._invoicing.invoices.record_payment_retry(
            tenant_id, PaymentRetry(request_id, invoice_id, workflow_id), actor
        )
        return PaymentRetried(invoice, recorded.workflow_id, replay=False)

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

    async def redeliver(
        self, caller: Caller, event_id: str, endpoint_id: str, request_id: str
    ) -> str:
        """Send a notification to an endpoint again, even if it had it; the workflow's id.

        The same request id is the same redelivery: asked twice, it is sent once.
        """
        event = await self._webhooks.raised(caller.tenant_id, event_id)
        endpoint = await self._webhooks.endpoint(caller.tenant_id, endpoint_id)
        if not endpoint.enabled:
            raise FailedPrecondition(
                f"webhook endpoint {endpoint_id!r} is disabled: nothing is sent to it",
                reason="WEBHOOK_ENDPOINT_DISABLED",
                metadata={"endpoint_id": endpoint_id},
            )
        temporal = await self._temporal()
        workflow_id = redelivery_workflow_id(event_id, endpoint_id, request_id)
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await temporal.start_workflow(
                NotificationWorkflow.run,
                NotificationInput(event, [endpoint_id], self._delivery, again=True),
                id=workflow_id,
                task_queue=self._task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        return workflow_id

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
