"""Dunning: when to retry a failed invoice payment, and when a contract is suspended and
reinstated.

Attempt 1 is the invoice workflow's; the contract's dunning schedule gives the wait after each
failed attempt before the next one (`schedule[n - 1]` after attempt n), so a schedule of k
delays allows k + 1 attempts. After the last one the invoice is uncollectible and the contract
suspended; paying its last uncollectible invoice reinstates it. Attempt numbers are counted
from the attempts the invoice has recorded, so a new workflow run resumes the schedule where
the old one stopped. What a failure or a change announces is an outbox topic's
(`PaymentFailure`, `StatusChange` in `rating_service.outbox.topics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rating_service.core.billing.invoice import Invoice, InvoiceState
from rating_service.core.contracts.contract import ContractStatus

GATEWAY_TIMEOUT_CODE = "gateway_timeout"
"""Decline code recorded for an attempt the gateway never answered."""


def next_retry_at(
    schedule: Sequence[timedelta], failed_attempt: int, failed_at: datetime
) -> datetime | None:
    """When to try again after attempt `failed_attempt` failed at `failed_at`; None: no more."""
    if failed_attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {failed_attempt}")
    if failed_attempt > len(schedule):
        return None
    return failed_at + schedule[failed_attempt - 1]


@dataclass(frozen=True, slots=True)
class StandingChange:
    """A contract's status moved (suspended or reinstated) because of one invoice, at `at`."""

    tenant_id: str
    contract_id: str
    invoice_id: str
    was: ContractStatus
    """The status the contract leaves (it changes only from this one)."""
    becomes: ContractStatus
    """The status the contract takes."""
    at: datetime


@dataclass(frozen=True, slots=True)
class ContractStanding:
    """A contract's status and its invoices written off, read under the contract's row lock."""

    status: ContractStatus
    uncollectible: frozenset[str]
    """Ids of the contract's uncollectible invoices, as the deciding transaction sees them."""


StandingRule = Callable[[Invoice, ContractStanding, datetime], StandingChange | None]
"""Whether an invoice's change at a moment changes its contract's status, and how.

It is given the invoice as it was before the change, and the contract's standing read in the
transaction that changes the invoice; None leaves the contract as it is.
"""


def suspension_on_write_off(
    invoice: Invoice, standing: ContractStanding, at: datetime
) -> StandingChange | None:
    """Writing an invoice off suspends its contract, if active: rating refuses its usage then."""
    if standing.status is not ContractStatus.ACTIVE:
        return None
    return StandingChange(
        invoice.tenant_id,
        invoice.contract_id,
        invoice.invoice_id,
        ContractStatus.ACTIVE,
        ContractStatus.SUSPENDED,
        at,
    )


def reinstatement_on_payment(
    invoice: Invoice, standing: ContractStanding, at: datetime
) -> StandingChange | None:
    """Paying a written-off invoice reinstates its suspended contract unless another is owed."""
    if invoice.state is not InvoiceState.UNCOLLECTIBLE:
        return None
    if standing.status is not ContractStatus.SUSPENDED:
        return None
    if standing.uncollectible - {invoice.invoice_id}:
        return None
    return StandingChange(
        invoice.tenant_id,
        invoice.contract_id,
        invoice.invoice_id,
        ContractStatus.SUSPENDED,
        ContractStatus.ACTIVE,
        at,
    )
