"""DunningWorkflow: collect an invoice whose payment failed, on the contract's retry schedule.

Started from the `payment.failed` outbox row that recording a failed attempt writes in the same
transaction (a decline, or a gateway that never answered). Its id is the invoice's
(`dunning/<tenant>/<invoice>`), so a second row finds it running. It retries when the
schedule says (each failure's notification carries that time), or at once on the
`payment_method_updated` or `retry_now` signal (an operator's RetryPayment signals it, starting
it first if it is not running). After the last failure the invoice becomes uncollectible and
the contract is suspended; it then waits, up to `suspended_wait_seconds`, for a new payment
method to try once more. Any payment reinstates the contract (see `InvoiceStore.paid`).

Attempt numbers continue from the highest one the invoice has recorded, never from the run,
so an ops reset or a new run resumes the schedule without reusing a key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.outbox.topics import PaymentFailed
    from rating_service.services.invoice import Invoicing
    from rating_service.workflows.common import (
        PAYMENT_RETRIES,
        PAYMENT_TIMEOUT,
        STEP_RETRIES,
        STEP_TIMEOUT,
        domain_errors_are_final,
        start_once,
    )
    from rating_service.workflows.invoice import (
        CollectRequest,
        CollectResult,
        InvoiceActivities,
        payment_timed_out,
    )

SUSPENDED_WAIT = timedelta(days=90)
"""How long a suspended contract's invoice waits for a new payment method before dunning ends."""

SETTLED = frozenset({"paid", "void"})
"""Invoice states that end dunning."""

COLLECTED = frozenset({"paid", "nothing_due"})
"""Collection outcomes that paid the invoice."""

RECORDED = frozenset({"declined", "gateway_timeout", "paid"})
"""Collection outcomes that recorded an attempt (and so used its number)."""

DUNNING_ACTOR = "workflow:dunning"
"""Who the audit log says suspended a contract."""


@dataclass(frozen=True)
class DunningRequest:
    """The invoice to collect, and how long to keep waiting once its contract is suspended."""

    tenant_id: str
    invoice_id: str
    suspended_wait_seconds: float = SUSPENDED_WAIT.total_seconds()


@dataclass(frozen=True)
class DunningPlanInfo:
    """The invoice's state, its highest attempt number, and the next retry (ISO, "" = none)."""

    contract_id: str
    state: str
    attempts: int
    next_retry_at: str


@dataclass(frozen=True)
class DunningStatus:
    """What the `status` query answers: the state, attempts made, next retry, last decline."""

    state: str
    attempts: int
    next_retry_at: str | None
    last_decline_code: str


class DunningState(StrEnum):
    """What the dunning of an invoice is doing."""

    STARTING = "starting"
    WAITING = "waiting"
    """Until the next retry on the schedule (or a new payment method)."""
    COLLECTING = "collecting"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    """The invoice is uncollectible: waiting for a new payment method to try once more."""
    PAID = "paid"
    SETTLED = "settled"
    """Paid by other means, or voided."""
    UNCOLLECTIBLE = "uncollectible"
    """No new payment method came in time; the invoice stays uncollectible."""


class Wake(StrEnum):
    """Why a wait ended."""

    DUE = "due"
    METHOD_UPDATED = "method_updated"
    SETTLED = "settled"


def dunning_workflow_id(tenant_id: str, invoice_id: str) -> str:
    """The dunning workflow's id, from the invoice: starting it twice is harmless."""
    return f"dunning/{tenant_id}/{invoice_id}"


class DunningActivities:
    """The dunning activities (collecting itself is the invoice's `collect_payment`)."""

    def __init__(self, invoicing: Invoicing) -> None:
        self._invoicing = invoicing

    @activity.defn(name="dunning_plan")
    @domain_errors_are_final
    async def plan(self, request: DunningRequest) -> DunningPlanInfo:
        """Where dunning of the invoice stands, from its recorded attempts and the schedule."""
        plan = await self._invoicing.dunning_plan(request.tenant_id, request.invoice_id)
        retry = plan.next_retry_at
        return DunningPlanInfo(
            plan.contract_id,
            str(plan.state),
            plan.attempts,
            "" if retry is None else retry.isoformat(),
        )

    @activity.defn(name="give_up_collecting")
    @domain_errors_are_final
    async def give_up(self, request: DunningRequest) -> str:
        """Mark the invoice uncollectible and suspend its contract; the invoice's state after."""
        invoice = await self._invoicing.give_up_collecting(
            request.tenant_id, request.invoice_id, DUNNING_ACTOR
        )
        return str(invoice.state)

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.plan, self.give_up]


@workflow.defn(name="Dunning")
class DunningWorkflow:
    """Retry a failed invoice payment by the schedule; suspend the contract after the last."""

    def __init__(self) -> None:
        self._state = DunningState.STARTING
        self._attempts = 0
        self._next_retry_at: datetime | None = None
        self._last_decline_code = ""
        self._method_updated = False
        self._paid_elsewhere = False

    @workflow.run
    async def run(self, request: DunningRequest) -> str:
        """Return "paid", "settled" (paid otherwise, or voided) or "uncollectible"."""
        plan = await self._plan(request)
        if plan.state in SETTLED:
            return self._end(DunningState.SETTLED)
        self._attempts = plan.attempts
        retry_at = _moment(plan.next_retry_at)
        while retry_at is not None:
            self._state, self._next_retry_at = DunningState.WAITING, retry_at
            if await self._wait(request, retry_at) is Wake.SETTLED:
                return self._end(DunningState.SETTLED)
            result = await self._collect(request)
            if (ended := _ended_by(result)) is not None:
                return self._end(ended)
            # No retry time after the schedule's last failure, nor when nothing can be charged.
            retry_at = _moment(result.next_retry_at)
        self._state, self._next_retry_at = DunningState.SUSPENDING, None
        state = await workflow.execute_activity_method(
            DunningActivities.give_up,
            request,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRIES,
        )
        if state in SETTLED:
            return self._end(DunningState.SETTLED)
        deadline = workflow.now() + timedelta(seconds=request.suspended_wait_seconds)
        while True:
            self._state = DunningState.SUSPENDED
            wake = await self._wait(request, deadline)
            if wake is Wake.SETTLED:
                return self._end(DunningState.SETTLED)
            if wake is Wake.DUE:
                return self._end(DunningState.UNCOLLECTIBLE)
            result = await self._collect(request)
            if (ended := _ended_by(result)) is not None:
                return self._end(ended)

    async def _plan(self, request: DunningRequest) -> DunningPlanInfo:
        return await workflow.execute_activity_method(
            DunningActivities.plan,
            request,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRIES,
        )

    async def _wait(self, request: DunningRequest, until: datetime) -> Wake:
        """Wait until `until`, a new payment method, or news that the invoice was paid."""
        while True:
            self._paid_elsewhere = False

            def woken() -> bool:
                return self._method_updated or self._paid_elsewhere

            remaining = (until - workflow.now()).total_seconds()
            if remaining > 0 and not woken():
                with contextlib.suppress(TimeoutError):  # the moment came
                    await workflow.wait_condition(woken, timeout=remaining)
            # Only a signal: the invoice is looked at, never charged, to see if it was paid.
            if self._paid_elsewhere and (await self._plan(request)).state in SETTLED:
                return Wake.SETTLED
            if self._method_updated:
                return Wake.METHOD_UPDATED
            if workflow.now() >= until:
                return Wake.DUE

    async def _collect(self, request: DunningRequest) -> CollectResult:
        """Collect under the next attempt number; a gateway that never answers is a failure."""
        attempt = self._attempts + 1
        # The attempt reads the payment method saved now: an update before it is used by it.
        self._method_updated = False
        previous, self._state = self._state, DunningState.COLLECTING
        collect = CollectRequest(request.tenant_id, request.invoice_id, attempt)
        try:
            result = await workflow.execute_activity_method(
                InvoiceActivities.collect_payment,
                collect,
                start_to_close_timeout=PAYMENT_TIMEOUT,
                retry_policy=PAYMENT_RETRIES,
            )
        except ActivityError as error:
            if not payment_timed_out(error):
                raise
            workflow.logger.warning("dunning attempt %d got no answer: %s", attempt, error.cause)
            result = await workflow.execute_activity_method(
                InvoiceActivities.record_unanswered_payment,
                collect,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRIES,
            )
        if result.outcome in RECORDED:
            self._attempts = attempt
        self._last_decline_code = result.decline_code
        self._state = previous
        return result

    def _end(self, state: DunningState) -> str:
        self._state, self._next_retry_at = state, None
        return str(state)

    @workflow.signal
    def payment_method_updated(self) -> None:
        """The contract has a new payment method: retry at once."""
        self._method_updated = True

    @workflow.signal
    def retry_now(self) -> None:
        """An operator asked to collect now (RetryPayment): retry at once, with today's method."""
        self._method_updated = True

    @workflow.signal
    def invoice_paid(self) -> None:
        """The invoice may have been paid by other means: look, and stop if it was."""
        self._paid_elsewhere = True

    @workflow.query
    def status(self) -> DunningStatus:
        """Attempts made so far, the next retry on the schedule, and what dunning is doing."""
        retry = self._next_retry_at
        return DunningStatus(
            str(self._state),
            self._attempts,
            None if retry is None else retry.isoformat(),
            self._last_decline_code,
        )


def _ended_by(result: CollectResult) -> DunningState | None:
    """How an attempt ended dunning: paid by it, settled before it, or None (it failed)."""
    if result.outcome in COLLECTED:
        return DunningState.PAID
    if result.outcome == "already_settled":
        return DunningState.SETTLED
    return None


def _moment(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def start_dunning(client: Client, task_queue: str) -> Handler:
    """Start dunning the invoice of a failed payment (once: the id is the invoice's)."""

    async def start(row: OutboxRow) -> None:
        tenant_id, invoice_id = row.tenant_id, row.payload_as(PaymentFailed)["invoice_id"]
        # Later failures of the same invoice come from the dunning workflow itself.
        await start_once(
            client,
            DunningWorkflow.run,
            DunningRequest(tenant_id, invoice_id),
            workflow_id=dunning_workflow_id(tenant_id, invoice_id),
            task_queue=task_queue,
        )

    return start
