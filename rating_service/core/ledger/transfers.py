"""Transfers: immutable movements of an amount from a debit account to a credit account."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Flag, StrEnum, auto

from rating_service.core.errors import ViolationCollector


class TransferFlags(Flag):
    """Two-phase transfers, as TigerBeetle has them; at most one flag is set."""

    NONE = 0
    PENDING = auto()
    """Reserve the amount: it counts against the debit account but is not yet posted."""
    POST_PENDING = auto()
    """Post up to the pending transfer's amount (`pending_id`); the rest is released."""
    VOID_PENDING = auto()
    """Release the whole pending transfer (`pending_id`)."""


class TransferCode(StrEnum):
    """Why money moved: the business operation behind a transfer."""

    GRANT = "grant"
    """A pool funded by a grant (free credit, a prepaid commit)."""
    TOP_UP = "top_up"
    """A pool funded by bought credit (a top-up, an auto-recharge)."""
    USAGE = "usage"
    """Usage drawn from a pool."""
    OVERAGE = "overage"
    """Usage beyond the pools, accrued in arrears."""
    CREDIT_BACK = "credit_back"
    """A negative charge (a cheaper volume tier reached) given back to a pool or the overage."""
    EXPIRY = "expiry"
    """A pool's unused balance moved to breakage when it expires."""
    ROLLOVER = "rollover"
    """Unused prepaid balance carried from a term's pool into the next term's credit."""
    RESERVATION_HOLD = "reservation_hold"
    """An authorized amount held (pending) on a pool."""
    RESERVATION_CAPTURE = "reservation_capture"
    """A hold posted (in full or in part) when the reservation is captured."""
    RESERVATION_VOID = "reservation_void"
    """A hold released because the reservation was voided (or captured for less than a hold)."""
    RESERVATION_EXPIRY = "reservation_expiry"
    """A hold released because the reservation outlived its TTL."""
    ADJUSTMENT = "adjustment"
    """A manual adjustment by an operator, with a reason."""
    INVOICE = "invoice"
    """A finalized invoice's charges moved to the receivable."""
    INVOICE_VOID = "invoice_void"
    """A voided invoice's charges moved back out of the receivable."""
    PAYMENT = "payment"
    """A payment collected against an invoice."""
    CREDIT_NOTE = "credit_note"
    """A credit note's lines moved back out of the receivable, against their revenue."""
    REFUND = "refund"
    """A paid invoice's credit given back: to the payment method, or into a credit pool."""


_TWO_PHASE_RESOLUTION = TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING


@dataclass(frozen=True, slots=True)
class Transfer:
    """One immutable movement: `amount` (> 0) debited from one account and credited to another.

    `reference` names what the transfer is traceable to (`event:<event_id>`,
    `grant:<grant_id>`, `reservation:<id>`, `invoice:<id>`, `operator:<action_id>`); `memo`
    carries an operator's reason. A POST_PENDING or VOID_PENDING transfer names the pending
    transfer it resolves in `pending_id` and moves between the same two accounts.
    """

    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount: Decimal
    code: TransferCode
    reference: str
    flags: TransferFlags = TransferFlags.NONE
    pending_id: str | None = None
    memo: str = ""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        for name in ("transfer_id", "debit_account_id", "credit_account_id", "reference"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                violations.add(name, "must be a non-empty string")
        if self.debit_account_id == self.credit_account_id:
            violations.add("credit_account_id", "must differ from debit_account_id")
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite() or self.amount <= 0:
            violations.add("amount", f"must be a finite Decimal > 0, got {self.amount!r}")
        if not isinstance(self.code, TransferCode):
            violations.add("code", f"must be one of {', '.join(TransferCode)}")
        if not isinstance(self.flags, TransferFlags):
            violations.add("flags", "must be TransferFlags")
        elif len(self.flags) > 1:
            violations.add("flags", "at most one of PENDING, POST_PENDING, VOID_PENDING")
        elif self.flags & _TWO_PHASE_RESOLUTION:
            if not isinstance(self.pending_id, str) or not self.pending_id:
                violations.add("pending_id", "is required to post or void a pending transfer")
        elif self.pending_id is not None:
            violations.add("pending_id", "only a POST_PENDING or VOID_PENDING transfer has one")
        if not isinstance(self.memo, str):
            violations.add("memo", "must be a string")
        violations.raise_if_any("invalid transfer")

    @property
    def is_pending(self) -> bool:
        """True for the first phase of a two-phase transfer."""
        return TransferFlags.PENDING in self.flags

    @property
    def resolves_pending(self) -> bool:
        """True when the transfer posts or voids a pending transfer."""
        return bool(self.flags & _TWO_PHASE_RESOLUTION)
