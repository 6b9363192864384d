"""The billing activities: thin Temporal wrappers over `rating_service.services.invoice.Invoicing`.

Arguments and results are plain dataclasses of strings and numbers (timestamps ISO-8601,
amounts decimal strings), so histories stay readable and replayable. A domain error (bad data,
a refused state change) fails the activity for good, with its reason as the error type, so
the invoice workflow fails loudly and ops can fix the cause and replay it; anything else
(a database or gateway outage) is retried.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from rating_service.core.billing.invoice import Invoice
from rating_service.core.billing.schedule import BillingDate
from rating_service.core.errors import DomainError
from rating_service.services.invoice import CollectionResult, Invoicing

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ContractRef:
    """A contract of a tenant."""

    tenant_id: str
    contract_id: str


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


def domain_errors_are_final(
    step: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Wrap an activity so a domain error (bad data, a refused change) fails it for good."""

    @functools.wraps(step)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await step(*args, **kwargs)
        except DomainError as error:
            raise ApplicationError(
                str(error), type=error.reason or type(error).__name__, non_retryable=True
            ) from error

    return run


class BillingActivities:
    """The activities of the billing cycle and invoice workflows, bound to one Invoicing."""

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

    @activity.defn(name="end_contract")
    @domain_errors_are_final
    async def end_contract(self, contract: ContractRef) -> None:
        """End the contract's term now (a cancellation)."""
        await self._invoicing.end_contract(
            contract.tenant_id, contract.contract_id, "workflow:cancel"
        )

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [
            self.next_billing_date,
            self.close_period,
            self.draft_invoice,
            self.finalize_invoice,
            self.render_invoice,
            self.collect_payment,
            self.record_unanswered_payment,
            self.end_contract,
        ]


def _collect_result(result: CollectionResult) -> CollectResult:
    retry = result.next_retry_at
    return CollectResult(
        str(result.outcome),
        result.decline_code,
        result.message,
        "" if retry is None else retry.isoformat(),
    )


def _date_info(found: BillingDate) -> BillingDateInfo:
    return BillingDateInfo(found.at.isoformat(), found.is_opening, found.is_final)


def _summary(invoice: Invoice) -> InvoiceSummary:
    return InvoiceSummary(
        invoice.invoice_id,
        str(invoice.state),
        invoice.number,
        str(invoice.total),
        invoice.currency.code,
    )
