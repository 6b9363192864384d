"""Every outbox topic, once: its name, the payload its rows carry, and whether it is a webhook.

A topic's value is stored in `outbox.topic`, in endpoints' `topics` and in the delivery log,
and sent to webhook receivers (`Rating-Topic`, the body's `topic`): values never change. A
payload is the JSON object the writer stores in `outbox.payload` and a handler reads back (a
webhook's `data`), so each is a TypedDict: a plain dict when written, a Mapping when read. A
row's dedupe key is its business key (`Topic.dedupe_key`): a second row under it is not written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypedDict

from rating_service.core.billing.dunning import StandingChange
from rating_service.core.contracts.contract import ContractStatus


class Topic(StrEnum):
    """An outbox topic: what happened, as its rows and webhooks name it."""

    CONTRACT_CREATED = "contract.created"
    """A new contract: its billing cycle and renewal start from it."""
    COMMITMENT_ADDED = "commitment.added"
    """A new pool (a grant, a top-up, a renewal's credit): its expiry starts from it."""
    AUTO_RECHARGE = "auto_recharge"
    """A contract's prepaid balance crossed below its auto-recharge threshold."""
    ALERT = "alert"
    """An event's debit made one of the contract's alert thresholds cross."""
    INVOICE_ISSUED = "invoice.issued"
    """An invoice was finalized: it has its number."""
    PAYMENT_FAILED = "payment.failed"
    """A collection attempt failed: starts dunning, and tells the customer."""
    CONTRACT_SUSPENDED = "contract.suspended"
    """A contract suspended because an invoice became uncollectible."""
    CONTRACT_REINSTATED = "contract.reinstated"
    """A suspended contract made active again by a payment."""
    EXPIRY_WARNING = "expiry.warning"
    """A pool with balance expires soon."""
    CREDIT_EXPIRED = "credit.expired"
    """A pool's remaining balance went to breakage."""
    RENEWAL_UPCOMING = "renewal.upcoming"
    """A term ends soon, and whether it renews (and into which contract)."""
    CONTRACT_RENEWED = "contract.renewed"
    """A term ended and its next term took over (with what rolled over)."""
    CONTRACT_ENDED = "contract.ended"
    """A term ended without renewal."""
    RECHARGE_SUCCEEDED = "recharge.succeeded"
    """An auto-recharge charge succeeded and its credit was granted."""
    RECHARGE_FAILED = "recharge.failed"
    """An auto-recharge charge attempt failed."""
    AUTO_RECHARGE_DISABLED = "auto_recharge.disabled"
    """Auto-recharge was switched off after a recharge's last failed attempt."""
    CREDIT_NOTE_ISSUED = "credit_note.issued"
    """A credit note was issued against an invoice: it has its number."""
    REFUND_SUCCEEDED = "refund.succeeded"
    """A paid invoice's credit went back: to the payment method, or into a credit pool."""
    REFUND_FAILED = "refund.failed"
    """The gateway refused a refund, or never answered it."""

    @property
    def payload_type(self) -> type[Mapping[str, Any]]:
        """The TypedDict its rows' payloads are."""
        return PAYLOAD_TYPES[self]

    @property
    def is_notification(self) -> bool:
        """Whether its rows are sent to the tenant's webhook endpoints."""
        return self in NOTIFICATION_TOPICS

    def dedupe_key(self, tenant_id: str, key: str) -> str:
        """The usual dedupe key of its rows: one row per topic, tenant and business key."""
        return f"{self.value}:{tenant_id}:{key}"


class ContractCreated(TypedDict):
    """`contract.created`: `term_end` ISO-8601, None for an evergreen contract."""

    tenant_id: str
    contract_id: str
    term_end: str | None


class CommitmentAdded(TypedDict):
    """`commitment.added`: the pool's kind (a `CommitmentKind`) and expiry (ISO-8601, or None)."""

    contract_id: str
    pool_id: str
    kind: str
    expires_at: str | None


class AutoRechargeDue(TypedDict):
    """`auto_recharge`: the contract, and the event whose debit crossed the threshold."""

    contract_id: str
    event_id: str


class Alert(TypedDict):
    """`alert`: which alert of the contract the event made cross (amounts decimal strings)."""

    contract_id: str
    event_id: str
    kind: str
    subject: str
    threshold: str
    value: str


class InvoiceIssued(TypedDict):
    """`invoice.issued`: the invoice, its number and its total (a decimal string)."""

    invoice_id: str
    contract_id: str
    number: str | None
    total: str
    currency: str


class PaymentFailed(TypedDict):
    """`payment.failed`: timestamps ISO-8601; `next_retry_at` None after the last attempt."""

    invoice_id: str
    contract_id: str
    attempt: int
    decline_code: str
    message: str
    failed_at: str
    next_retry_at: str | None


class ContractStatusChanged(TypedDict):
    """`contract.suspended` and `contract.reinstated`: the invoice that caused it, and when."""

    contract_id: str
    invoice_id: str
    at: str


class ExpiryWarning(TypedDict):
    """`expiry.warning`: when the pool expires (ISO-8601) and what it holds (decimal string)."""

    contract_id: str
    pool_id: str
    expires_at: str
    balance: str


class CreditExpired(TypedDict):
    """`credit.expired`: the amount moved to breakage (a decimal string)."""

    contract_id: str
    pool_id: str
    amount: str


class RenewalUpcoming(TypedDict):
    """`renewal.upcoming`: the term's end (ISO-8601), whether it renews, and into what."""

    contract_id: str
    term_end: str | None
    renews: bool
    next_contract_id: str | None


class TermEnded(TypedDict):
    """`contract.renewed` and `contract.ended`: what rolled over and what expired (decimals)."""

    contract_id: str
    term_end: str
    next_contract_id: str | None
    rolled_over: str
    breakage: str


class RechargeSucceeded(TypedDict):
    """`recharge.succeeded`: the pool granted and the amount charged (a decimal string)."""

    contract_id: str
    recharge_id: str
    pool_id: str
    amount: str


class RechargeFailed(TypedDict):
    """`recharge.failed`: the failed attempt and the gateway's decline code."""

    contract_id: str
    recharge_id: str
    attempt: int
    decline_code: str


class AutoRechargeDisabled(TypedDict):
    """`auto_recharge.disabled`: the recharge whose last failure switched it off."""

    contract_id: str
    recharge_id: str


class CreditNoteIssued(TypedDict):
    """`credit_note.issued`: the credit note, its invoice, the amount (a decimal string), and
    where it went: `refund_to` None when it lowered the amount due."""

    credit_note_id: str
    number: str
    invoice_id: str
    contract_id: str
    amount: str
    currency: str
    refund_to: str | None


class RefundSettled(TypedDict):
    """`refund.succeeded` and `refund.failed`: the credit note refunded, where to, the failure
    code (empty when there is none), and which attempt (a failed refund may be made again)."""

    credit_note_id: str
    invoice_id: str
    contract_id: str
    destination: str
    amount: str
    currency: str
    pool_id: str | None
    failure_code: str
    attempt: int


OutboxPayload = (
    ContractCreated
    | CommitmentAdded
    | AutoRechargeDue
    | Alert
    | InvoiceIssued
    | PaymentFailed
    | ContractStatusChanged
    | ExpiryWarning
    | CreditExpired
    | RenewalUpcoming
    | TermEnded
    | RechargeSucceeded
    | RechargeFailed
    | AutoRechargeDisabled
    | CreditNoteIssued
    | RefundSettled
)
"""What an outbox row may carry: one of the topics' payloads."""

PAYLOAD_TYPES: Mapping[Topic, type[Mapping[str, Any]]] = {
    Topic.CONTRACT_CREATED: ContractCreated,
    Topic.COMMITMENT_ADDED: CommitmentAdded,
    Topic.AUTO_RECHARGE: AutoRechargeDue,
    Topic.ALERT: Alert,
    Topic.INVOICE_ISSUED: InvoiceIssued,
    Topic.PAYMENT_FAILED: PaymentFailed,
    Topic.CONTRACT_SUSPENDED: ContractStatusChanged,
    Topic.CONTRACT_REINSTATED: ContractStatusChanged,
    Topic.EXPIRY_WARNING: ExpiryWarning,
    Topic.CREDIT_EXPIRED: CreditExpired,
    Topic.RENEWAL_UPCOMING: RenewalUpcoming,
    Topic.CONTRACT_RENEWED: TermEnded,
    Topic.CONTRACT_ENDED: TermEnded,
    Topic.RECHARGE_SUCCEEDED: RechargeSucceeded,
    Topic.RECHARGE_FAILED: RechargeFailed,
    Topic.AUTO_RECHARGE_DISABLED: AutoRechargeDisabled,
    Topic.CREDIT_NOTE_ISSUED: CreditNoteIssued,
    Topic.REFUND_SUCCEEDED: RefundSettled,
    Topic.REFUND_FAILED: RefundSettled,
}
"""Each topic's payload."""

NOTIFICATION_TOPICS: tuple[Topic, ...] = (
    Topic.ALERT,
    Topic.INVOICE_ISSUED,
    Topic.PAYMENT_FAILED,
    Topic.CONTRACT_SUSPENDED,
    Topic.CONTRACT_REINSTATED,
    Topic.EXPIRY_WARNING,
    Topic.CREDIT_EXPIRED,
    Topic.RENEWAL_UPCOMING,
    Topic.CONTRACT_RENEWED,
    Topic.CONTRACT_ENDED,
    Topic.RECHARGE_SUCCEEDED,
    Topic.RECHARGE_FAILED,
    Topic.AUTO_RECHARGE_DISABLED,
    Topic.CREDIT_NOTE_ISSUED,
    Topic.REFUND_SUCCEEDED,
    Topic.REFUND_FAILED,
)
"""The topics sent to webhook endpoints (an endpoint may take a subset), in the order the
service lists them; the others only start workflows."""


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
        return Topic.PAYMENT_FAILED.dedupe_key(self.tenant_id, f"{self.invoice_id}:{self.attempt}")

    def payload(self) -> PaymentFailed:
        """The notification's body (timestamps ISO-8601; `next_retry_at` null after the last)."""
        return PaymentFailed(
            invoice_id=self.invoice_id,
            contract_id=self.contract_id,
            attempt=self.attempt,
            decline_code=self.decline_code,
            message=self.message,
            failed_at=self.failed_at.isoformat(),
            next_retry_at=None if self.next_retry_at is None else self.next_retry_at.isoformat(),
        )


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A contract suspended or reinstated because of one invoice, announced on `topic`."""

    topic: Topic
    tenant_id: str
    contract_id: str
    invoice_id: str
    at: datetime

    @classmethod
    def announcing(cls, change: StandingChange) -> StatusChange:
        """The announcement of a suspension or reinstatement that dunning decided."""
        topic = (
            Topic.CONTRACT_SUSPENDED
            if change.becomes is ContractStatus.SUSPENDED
            else Topic.CONTRACT_REINSTATED
        )
        return cls(topic, change.tenant_id, change.contract_id, change.invoice_id, change.at)

    @property
    def dedupe_key(self) -> str:
        """One notification per contract and the invoice that caused it."""
        return self.topic.dedupe_key(self.tenant_id, f"{self.contract_id}:{self.invoice_id}")

    def payload(self) -> ContractStatusChanged:
        """The notification's body."""
        return ContractStatusChanged(
            contract_id=self.contract_id, invoice_id=self.invoice_id, at=self.at.isoformat()
        )
