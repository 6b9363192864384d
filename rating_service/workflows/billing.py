"""ContractBillingWorkflow: one per contract, invoicing each billing date for the whole term.

It asks for the next billing date (the term start, each period end, the term end), sleeps
until that date plus the grace window for late events, runs the date's InvoiceWorkflow as a
child, and goes on to the next date; after `DATES_PER_RUN` dates it continues as new, so its
history stays short however long the contract lives.
Signals: `amend` (the terms changed: recompute the next date), `cancel` (end the term now and
issue the final invoice), `bill_now` (skip the rest of the grace window). Query: `schedule`.
A new contract's `contract.created` outbox row starts it (`start_billing`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from rating_service.core.billing.schedule import BillingDate
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.outbox.topics import ContractCreated
    from rating_service.services.invoice import Invoicing
    from rating_service.workflows.common import (
        LOCAL_STEPS,
        ContractRef,
        domain_errors_are_final,
        run_step,
        start_once,
    )
    from rating_service.workflows.invoice import (
        InvoiceRequest,
        InvoiceWorkflow,
        invoice_workflow_id,
    )


CANCEL_OUTLIVES_INVOICE = "cancel-outlives-invoice"
"""Patch: a cancel signalled while a date is being invoiced still cancels, after that invoice.

Before it, the flags were reset after each invoice, so a cancel that arrived during one was
dropped (and one that arrived before a continue-as-new did not reach the new run). Histories
from before the patch replay on the old path.
"""

SEVERAL_DATES_PER_RUN = "several-dates-per-run"
"""Patch: a run bills up to `DATES_PER_RUN` dates before it continues as new, not one.

A run started after every invoice only to ask for the next date: a workflow task, a new
sandboxed instance of the workflow and a patch marker, which cost the worker more than the
invoice's own database steps. Histories from before the patch replay on the old path: they
continue as new after each date.
"""

DATES_PER_RUN = 12
"""Billing dates a run bills before it continues as new, unless told otherwise: a year of
monthly dates, about 200 history events, which a worker replays in about what it takes to
start a run."""


@dataclass(frozen=True)
class NextBillingDateRequest:
    """Which billing date follows `after` (ISO-8601; None: the first one)."""

    tenant_id: str
    contract_id: str
    after: str | None


@dataclass(frozen=True)
class BillingDateInfo:
    """A billing date and whether it opens or ends the term."""

    at: str
    is_opening: bool
    is_final: bool


@dataclass(frozen=True)
class BillingCycleInput:
    """The contract, its grace window, the last billing date invoiced (ISO-8601), and how many
    dates a run bills before it continues as new (histories before SEVERAL_DATES_PER_RUN: one)."""

    tenant_id: str
    contract_id: str
    grace_seconds: float
    last_billed: str | None = None
    dates_per_run: int = DATES_PER_RUN
    cancel_requested: bool = False
    """A cancel the previous run was signalled while it invoiced: this run cancels first."""


@dataclass(frozen=True)
class BillingSchedule:
    """What the `schedule` query answers: the next billing date and what the cycle is doing."""

    state: str
    next_billing_date: str | None
    bills_at: str | None
    last_billed: str | None


def billing_workflow_id(tenant_id: str, contract_id: str) -> str:
    """The billing cycle's id, from the contract: starting it twice is harmless."""
    return f"billing/{tenant_id}/{contract_id}"


class BillingActivities:
    """The billing cycle's own activities, bound to one Invoicing (its invoices have theirs)."""

    def __init__(self, invoicing: Invoicing) -> None:
        self._invoicing = invoicing

    @activity.defn(name="next_billing_date")
    @domain_errors_are_final
    async def next_billing_date(self, request: NextBillingDateRequest) -> BillingDateInfo | None:
        """The contract's next billing date after the last one billed, or None past its term."""
        after = None if request.after is None else datetime.fromisoformat(request.after)
        found = await self._invoicing.next_billing_date(
            request.tenant_id, request.contract_id, after
        )
        return None if found is None else _date_info(found)

    @activity.defn(name="end_contract")
    @domain_errors_are_final
    async def end_contract(self, contract: ContractRef) -> None:
        """End the contract's term now (a cancellation)."""
        await self._invoicing.end_contract(
            contract.tenant_id, contract.contract_id, "workflow:cancel"
        )

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.next_billing_date, self.end_contract]


@workflow.defn(name="ContractBilling")
class ContractBillingWorkflow:
    """Invoice a contract on each billing date until its term is over."""

    def __init__(self) -> None:
        self._state = "starting"
        self._next: BillingDateInfo | None = None
        self._bills_at: datetime | None = None
        self._last_billed: str | None = None
        self._amended = False
        self._cancel = False
        self._bill_now = False
        self._ending = False

    @workflow.run
    async def run(self, cycle: BillingCycleInput) -> str:
        """Bill the next dates, then continue as new; return "ended" after the final one."""
        self._last_billed = cycle.last_billed
        self._cancel = self._cancel or cycle.cancel_requested
        contract = ContractRef(cycle.tenant_id, cycle.contract_id)
        # A newer patch implies the older one: its marker is spared in new histories.
        several = workflow.patched(SEVERAL_DATES_PER_RUN)
        local = several or workflow.patched(LOCAL_STEPS)
        billed = 0
        while True:
            self._amended = False
            self._next = await run_step(
                BillingActivities.next_billing_date,
                NextBillingDateRequest(cycle.tenant_id, cycle.contract_id, self._last_billed),
                local=local,
            )
            if self._next is None:
                self._state = "ended"
                return "ended"
            at = datetime.fromisoformat(self._next.at)
            grace = (
                timedelta(0) if self._next.is_opening else timedelta(seconds=cycle.grace_seconds)
            )
            self._bills_at = at + grace
            self._state = "waiting"
            await self._sleep_until(self._bills_at, at)
            if self._cancel:
                self._cancel = False
                self._state = "cancelling"
                await run_step(BillingActivities.end_contract, contract, local=local)
                # The term now ends today: the next date is the final one, billed at once.
                self._ending = True
                continue
            if self._amended:
                continue
            self._state = "invoicing"
            await self._invoice(cycle, self._next.at)
            billed += 1
            # A cancel signalled during the invoice is for the contract, not for that date.
            cancel = self._cancel and workflow.patched(CANCEL_OUTLIVES_INVOICE)
            if not several or billed >= cycle.dates_per_run:
                workflow.continue_as_new(
                    replace(cycle, last_billed=self._next.at, cancel_requested=cancel)
                )
            # On to the next date as a new run would start: nothing else kept from this wait.
            self._last_billed = self._next.at
            self._bill_now = self._ending = False
            self._cancel = cancel

    async def _sleep_until(self, bills_at: datetime, billing_date: datetime) -> None:
        """Wait for the billing moment, or until a signal asks for something sooner."""
        if self._ending:
            return  # cancelled: the final date is the moment of cancellation, already here

        def woken() -> bool:
            due_now = self._bill_now and workflow.now() >= billing_date
            return self._amended or self._cancel or due_now

        remaining = (bills_at - workflow.now()).total_seconds()
        if remaining <= 0 or woken():
            return
        with contextlib.suppress(TimeoutError):  # the moment came
            await workflow.wait_condition(woken, timeout=remaining)

    async def _invoice(self, cycle: BillingCycleInput, billing_date: str) -> None:
        """Run the date's invoice; a failed invoice is left for ops and billing goes on."""
        request = InvoiceRequest(cycle.tenant_id, cycle.contract_id, billing_date)
        try:
            await workflow.execute_child_workflow(
                InvoiceWorkflow.run,
                request,
                id=invoice_workflow_id(cycle.tenant_id, cycle.contract_id, billing_date, 0),
            )
        except ChildWorkflowError as error:
            workflow.logger.error(
                "invoice of %s for %s failed; replay it with `rating ops`: %s",
                cycle.contract_id,
                billing_date,
                error.cause,
            )

    @workflow.signal
    def amend(self) -> None:
        """The contract's terms changed: work out the next billing date again."""
        self._amended = True

    @workflow.signal
    def cancel(self) -> None:
        """End the contract now and issue its final invoice at once (no grace window)."""
        self._cancel = True

    @workflow.signal
    def bill_now(self) -> None:
        """Invoice the period that has ended without waiting out the grace window."""
        self._bill_now = True

    @workflow.query
    def schedule(self) -> BillingSchedule:
        """The next billing date, when it will be billed, and what the cycle is doing."""
        return BillingSchedule(
            self._state,
            None if self._next is None else self._next.at,
            None if self._bills_at is None else self._bills_at.isoformat(),
            self._last_billed,
        )


def start_billing(
    client: Client, task_queue: str, grace_seconds: float, dates_per_run: int = DATES_PER_RUN
) -> Handler:
    """Start a new contract's billing cycle (once: the id is the contract's)."""

    async def start(row: OutboxRow) -> None:
        tenant_id, contract_id = row.tenant_id, row.payload_as(ContractCreated)["contract_id"]
        await start_once(
            client,
            ContractBillingWorkflow.run,
            BillingCycleInput(tenant_id, contract_id, grace_seconds, dates_per_run=dates_per_run),
            workflow_id=billing_workflow_id(tenant_id, contract_id),
            task_queue=task_queue,
        )

    return start


def _date_info(found: BillingDate) -> BillingDateInfo:
    return BillingDateInfo(found.at.isoformat(), found.is_opening, found.is_final)
