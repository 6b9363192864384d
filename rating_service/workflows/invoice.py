"""InvoiceWorkflow: one invoice of a contract's billing date, from closing the period to payment.

Close the period → draft (usage aggregated from the period counters, fees, commits, credits,
true-up; each line rounded once) → finalize (gapless number, ledger) → render (HTML, PDF) →
collect the first payment. Every step is an idempotent activity keyed by the contract and
billing date, so this is what ops replay: a new run finds what the failed one did and carries
on from there. The workflow id is derived from the same keys (see `invoice_workflow_id`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from rating_service.workflows.activities import (
        BillingActivities,
        CollectRequest,
        CollectResult,
        InvoiceRequest,
    )

A = TypeVar("A")
R = TypeVar("R")

STEP_TIMEOUT = timedelta(minutes=2)
STEP_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
"""A step failing this many times fails the invoice loudly, for ops to look at and replay."""

PAYMENT_TIMEOUT = timedelta(seconds=10)
PAYMENT_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
"""A gateway that keeps timing out leaves the invoice unpaid (for dunning), not failed."""

RECORD_UNANSWERED_PAYMENT = "record-unanswered-payment"
"""Patch: a timed-out first attempt is recorded as failed, which starts dunning."""


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
"""The steps in order, named by their activities: what `step` answers and ops may reset to."""

LOCAL_STEPS = "local-steps"
"""Patch id: the database steps run as local activities, in the worker that runs the workflow.

They are short, idempotent database transactions: run locally, they skip a task queue round
trip and a workflow task each, which halves what an invoice costs Temporal and the worker.
Histories from before the patch replay with those steps as ordinary activities.
"""


async def run_step(step: Callable[[Any, A], Awaitable[R]], argument: A, *, local: bool) -> R:
    """Run one idempotent database step: locally, or as a task (histories before LOCAL_STEPS)."""
    if local:
        return await workflow.execute_local_activity_method(
            step, argument, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRIES
        )
    return await workflow.execute_activity_method(
        step, argument, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRIES
    )


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
        """Close, draft, finalize, render, collect."""
        local = workflow.patched(LOCAL_STEPS)
        self._step = "close_period"
        await run_step(BillingActivities.close_period, request, local=local)
        self._step = "draft_invoice"
        draft = await run_step(BillingActivities.draft_invoice, request, local=local)
        if draft is None:
            self._step = "done"
            return InvoiceResult(None, None, "skipped", "0", "nothing_due")
        invoice = CollectRequest(request.tenant_id, draft.invoice_id, attempt=1)
        self._step = "finalize_invoice"
        final = await run_step(BillingActivities.finalize_invoice, invoice, local=local)
        self._step = "render_invoice"
        await run_step(BillingActivities.render_invoice, invoice, local=local)
        self._step = "collect_payment"
        try:
            paid = await workflow.execute_activity_method(
                BillingActivities.collect_payment,
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
            if workflow.patched(RECORD_UNANSWERED_PAYMENT):
                # Recorded as a failure, whose `payment.failed` notification starts dunning,
                # as a decline's does.
                paid = await workflow.execute_activity_method(
                    BillingActivities.record_unanswered_payment,
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
