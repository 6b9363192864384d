"""InvoiceWorkflow: one invoice of a contract's billing date, from closing the period to payment.

Close the period → draft (usage aggregated from the period counters, fees, commits, credits,
true-up; each line rounded once) → finalize (gapless number, ledger) → collect the first
payment. Its HTML and PDF are rendered when first read (runs from before the
DOCUMENTS_ON_READ patch rendered them before collecting). Every step is an idempotent
activity keyed by the contract and billing date, so this is what ops replay: a new run finds
what the failed one did and carries on from there. The workflow id is derived from the same
keys (see `invoice_workflow_id`). The activities are thin wrappers over
`rating_service.services.invoice.Invoicing`; dunning collects with the same `collect_payment`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from rating_service.core.billing.invoice import Invoice
    from rating_service.services.invoice import CollectionResult, Invoicing
    from rating_service.workflows.common import (
        LOCAL_STEPS,
        PAYMENT_RETRIES,
        PAYMENT_TIMEOUT,
        STEP_RETRIES,
        STEP_TIMEOUT,
        domain_errors_are_final,
        run_step,
    )

RECORD_UNANSWERED_PAYMENT = "record-unanswered-payment"
"""Patch: a timed-out first attempt is recorded as failed, which starts dunning."""

DOCUMENTS_ON_READ = "documents-on-read"
"""Patch: the invoice has no render step; its documents are rendered when first read.

Rendered at issue, they were thrown away a moment later by the payment (a change of state
clears them, see `Invoicing.document`), and laying out the PDF was the largest part of what
an invoice cost the worker. Histories from before the patch replay with the render step.
"""


@dataclass(frozen=True)
class InvoiceRequest:
    """The invoice of a contract's billing date (ISO-8601), revision n."""

    tenant_id: str
    contract_id: str
    billing_date: str
    revision: int = 0


@dataclass(frozen=True)
class InvoiceSummary:
    """An invoice as a workflow sees it."""

    invoice_id: str
    state: str
    number: str | None
    total: str
    currency: str


@dataclass(frozen=True)
class CollectRequest:
    """Collection attempt `attempt` (1 first, then dunning's retries) of an invoice."""

    tenant_id: str
    invoice_id: str
    attempt: int


@dataclass(frozen=True)
class CollectResult:
    """What the attempt ended in (see `rating_service.services.invoice.Collection`).

    After a failure, `next_retry_at` (ISO-8601) is when the contract's dunning schedule
    retries; empty when the schedule is used up (or the attempt did not fail).
    """

    outcome: str
    decline_code: str = ""
    message: str = ""
    next_retry_at: str = ""


@dataclass(frozen=True)
class InvoiceResult:
    """How the invoice ended: its id and number (None when nothing was due), state, payment."""

    invoice_id: str | None
    number: str | None
    state: str
    total: str
    payment: str


def invoice_workflow_id(tenant_id: str, contract_id: str, billing_date: str, revision: int) -> str:
    """The invoice workflow's id, from business keys: starting it twice is harmless."""
    suffix = f"/r{revision}" if revision else ""
    return f"invoice/{tenant_id}/{contract_id}/{billing_date}{suffix}"


INVOICE_STEPS = (
    "close_period",
    "draft_invoice",
    "finalize_invoice",
    "render_invoice",
    "collect_payment",
)
"""The steps in order, named by their activities: what `step` answers and ops may reset to
(`render_invoice` only in runs from before the DOCUMENTS_ON_READ patch)."""


class InvoiceActivities:
    """The activities of the invoice workflow (and dunning's collection), bound to one Invoicing."""

    def __init__(self, invoicing: Invoicing) -> None:
        self._invoicing = invoicing

    @activity.defn(name="close_period")
    @domain_errors_are_final
    async def close_period(self, request: InvoiceRequest) -> None:
        """Close the period ending on the billing date: late events for it are refused."""
        await self._invoicing.close_period(
            request.tenant_id, request.contract_id, datetime.fromisoformat(request.billing_date)
        )

    @activity.defn(name="draft_invoice")
    @domain_errors_are_final
    async def draft_invoice(self, request: InvoiceRequest) -> InvoiceSummary | None:
        """Compose and store the draft (None: an opening date with nothing due)."""
        invoice = await self._invoicing.draft(
            request.tenant_id,
            request.contract_id,
            datetime.fromisoformat(request.billing_date),
            request.revision,
        )
        return None if invoice is None else _summary(invoice)

    @activity.defn(name="finalize_invoice")
    @domain_errors_are_final
    async def finalize_invoice(self, request: CollectRequest) -> InvoiceSummary:
        """Give the draft its gapless number and post it to the ledger."""
        return _summary(await self._invoicing.finalize(request.tenant_id, request.invoice_id))

    @activity.defn(name="render_invoice")
    @domain_errors_are_final
    async def render_invoice(self, request: CollectRequest) -> None:
        """Render and store the invoice's HTML and PDF."""
        await self._invoicing.render(request.tenant_id, request.invoice_id)

    @activity.defn(name="collect_payment")
    @domain_errors_are_final
    async def collect_payment(self, request: CollectRequest) -> CollectResult:
        """Charge the saved payment method, once per invoice and attempt number."""
        result = await self._invoicing.collect(
            request.tenant_id, request.invoice_id, request.attempt
        )
        return _collect_result(result)

    @activity.defn(name="record_unanswered_payment")
    @domain_errors_are_final
    async def record_unanswered_payment(self, request: CollectRequest) -> CollectResult:
        """Record an unanswered attempt as failed (its notification starts dunning)."""
        result = await self._invoicing.collection_unanswered(
            request.tenant_id, request.invoice_id, request.attempt
        )
        return _collect_result(result)

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [
            self.close_period,
            self.draft_invoice,
            self.finalize_invoice,
            self.render_invoice,
            self.collect_payment,
            self.record_unanswered_payment,
        ]


@workflow.defn(name="Invoice")
class InvoiceWorkflow:
    """Issue and collect one invoice; `step` tells ops where it is (or where it failed)."""

    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def step(self) -> str:
        """The step running now (or the last one, once finished)."""
        return self._step

    @workflow.run
    async def run(self, request: InvoiceRequest) -> InvoiceResult:
        """Close, draft, finalize, collect (and render, in histories before the patch)."""
        # A newer patch implies the older ones: their markers are spared in new histories.
        on_read = workflow.patched(DOCUMENTS_ON_READ)
        local = on_read or workflow.patched(LOCAL_STEPS)
        self._step = "close_period"
        await run_step(InvoiceActivities.close_period, request, local=local)
        self._step = "draft_invoice"
        draft = await run_step(InvoiceActivities.draft_invoice, request, local=local)
        if draft is None:
            self._step = "done"
            return InvoiceResult(None, None, "skipped", "0", "nothing_due")
        invoice = CollectRequest(request.tenant_id, draft.invoice_id, attempt=1)
        self._step = "finalize_invoice"
        final = await run_step(InvoiceActivities.finalize_invoice, invoice, local=local)
        if not on_read:
            self._step = "render_invoice"
            await run_step(InvoiceActivities.render_invoice, invoice, local=local)
        self._step = "collect_payment"
        try:
            # An ordinary activity: it waits on the gateway, for up to PAYMENT_TIMEOUT a try.
            paid = await workflow.execute_activity_method(
                InvoiceActivities.collect_payment,
                invoice,
                start_to_close_timeout=PAYMENT_TIMEOUT,
                retry_policy=PAYMENT_RETRIES,
            )
        except ActivityError as error:
            if not payment_timed_out(error):
                raise
            # The gateway never answered: the outcome is unknown, the invoice stays open
            # for dunning, whose next attempt asks again under a new key.
            workflow.logger.warning("payment collection gave up: %s", error.cause)
            paid = CollectResult("gateway_timeout", "timeout", str(error.cause))
            if on_read or workflow.patched(RECORD_UNANSWERED_PAYMENT):
                # Recorded as a failure, whose `payment.failed` notification starts dunning,
                # as a decline's does.
                paid = await workflow.execute_activity_method(
                    InvoiceActivities.record_unanswered_payment,
                    invoice,
                    start_to_close_timeout=STEP_TIMEOUT,
                    retry_policy=STEP_RETRIES,
                )
        self._step = "done"
        state = "paid" if paid.outcome in ("paid", "nothing_due") else final.state
        return InvoiceResult(final.invoice_id, final.number, state, final.total, paid.outcome)


def payment_timed_out(error: ActivityError) -> bool:
    """True when a collection activity gave up because the gateway never answered."""
    cause = error.cause
    if isinstance(cause, TimeoutError):
        return True
    return isinstance(cause, ApplicationError) and cause.type == "GatewayTimeout"


def _collect_result(result: CollectionResult) -> CollectResult:
    retry = result.next_retry_at
    return CollectResult(
        str(result.outcome),
        result.decline_code,
        result.message,
        "" if retry is None else retry.isoformat(),
    )


def _summary(invoice: Invoice) -> InvoiceSummary:
    return InvoiceSummary(
        invoice.invoice_id,
        str(invoice.state),
        invoice.number,
        str(invoice.total),
        invoice.currency.code,
    )
