"""Dunning: when to retry a failed invoice payment, the events a failure announces, and when
a contract is suspended and reinstated.

Attempt 1 is the invoice workflow's; the contract's dunning schedule gives the wait after each
failed attempt before the next one (`schedule[n - 1]` after attempt n), so a schedule of k
delays allows k + 1 attempts. After the last one the invoice is uncollectible and the contract
suspended; paying its last uncollectible invoice reinstates it. Attempt numbers are counted
from the attempts the invoice has recorded, so a new workflow run resumes the schedule where
the old one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rating_service.core.billing.invoice import Invoice, InvoiceState
from rating_service.core.contracts.contract import ContractStatus

PAYMENT_FAILED = "payment.failed"
"""Outbox topic of each failed collection attempt: starts dunning, and tells the customer."""

CONTRACT_SUSPENDED_TOPIC = "contract.suspended"
"""Outbox topic of a contract suspended because an invoice became uncollectible."""

CONTRACT_REINSTATED_TOPIC = "contract.reinstated"
"""Outbox topic of a suspended contract made active again by a payment."""

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
class PaymentFailure:
    """A failed collection attempt, as the `payment.failed` notification announces it."""

    tenant_id: str
    invoice_id: str
    contract_id: str
    attempt: int
    decline_code: str
    message: str
    failed_at: datetime
    next_retry_at: datetime | None

    @property
    def dedupe_key(self) -> str:
        """One notification per invoice and attempt, however often the failure is recorded."""
        return f"{PAYMENT_FAILED}:{self.tenant_id}:{self.invoice_id}:{self.attempt}"

    def payload(self) -> dict[str, object]:
        """The notification's body (timestamps ISO-8601; `next_retry_at` null after the last)."""
        return {
            "invoice_id": self.invoice_id,
            "contract_id": self.contract_id,
            "attempt": self.attempt,
            "decline_code": self.decline_code,
            "message": self.message,
            "failed_at": self.failed_at.isoformat(),
            "next_retry_at": None if self.next_retry_at is None else self.next_retry_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A contract suspended or reinstated because of one invoice, announced on `topic`."""

    topic: str
    tenant_id: str
    contract_id: str
    invoice_id: str
    at: datetime

    @property
    def dedupe_key(self) -> str:
        """One notification per contract and the invoice that caused it."""
        return f"{self.topic}:{self.tenant_id}:{self.contract_id}:{self.invoice_id}"

    @property
    def was(self) -> ContractStatus:
        """The status the contract leaves (it changes only from this one)."""
        return _STATUS_MOVES[self.topic][0]

    @property
    def becomes(self) -> ContractStatus:
        """The status the contract takes."""
        return _STATUS_MOVES[self.topic][1]

    def payload(self) -> dict[str, object]:
        """The notification's body."""
        return {
            "contract_id": self.contract_id,
            "invoice_id": self.invoice_id,
            "at": self.at.isoformat(),
        }


_STATUS_MOVES: dict[str, tuple[ContractStatus, ContractStatus]] = {
    CONTRACT_SUSPENDED_TOPIC: (ContractStatus.ACTIVE, ContractStatus.SUSPENDED),
    CONTRACT_REINSTATED_TOPIC: (ContractStatus.SUSPENDED, ContractStatus.ACTIVE),
}


@dataclass(frozen=True, slots=True)
class ContractStanding:
    """A contract's status and its invoices written off, read under the contract's row lock."""

    status: ContractStatus
    uncollectible: frozenset[str]
    """Ids of the contract's uncollectible invoices, as the deciding transaction sees them."""


StandingRule = Callable[[Invoice, ContractStanding, datetime], StatusChange | None]
"""Whether an invoice's change at a moment changes its contract's status, and how.

It is given the invoice as it was before the change, and the contract's standing read in the
transaction that changes the invoice; None leaves the contract as it is.
"""


def suspension_on_write_off(
    invoice: Invoice, standing: ContractStanding, at: datetime
) -> StatusChange | None:
    """Writing an invoice off suspends its contract, if active: rating refuses its usage then."""
    if standing.status is not ContractStatus.ACTIVE:
        return None
    return StatusChange(
        CONTRACT_SUSPENDED_TOPIC, invoice.tenant_id, invoice.contract_id, invoice.invoice_id, at
    )


def reinstatement_on_payment(
    invoice: Invoice, standing: ContractStanding, at: datetime
) -> StatusChange | None:
    """Paying a written-off invoice reinstates its suspended contract unless another is owed."""
    if invoice.state is not InvoiceState.UNCOLLECTIBLE:
        return None
    if standing.status is not ContractStatus.SUSPENDED:
        return None
    if standing.uncollectible - {invoice.invoice_id}:
        return None
    return StatusChange(
        CONTRACT_REINSTATED_TOPIC, invoice.tenant_id, invoice.contract_id, invoice.invoice_id, at
    )
