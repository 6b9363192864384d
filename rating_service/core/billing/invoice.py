"""Invoices: their lines, each rounded once, their totals, and the states they move through."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from rating_service.core.errors import FailedPrecondition, PreconditionViolation
from rating_service.core.money import (
    Currency,
    currency_of,
    exact_sum,
    format_decimal,
    round_to_minor_unit,
)

ZERO = Decimal(0)

INVOICE_STATE_CONFLICT = "INVOICE_STATE_CONFLICT"
"""FailedPrecondition reason: the invoice's state does not allow that change."""


class InvoiceState(StrEnum):
    """Where an invoice is in its life: draft → finalized → paid | uncollectible | void."""

    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"


_MOVES: dict[InvoiceState, frozenset[InvoiceState]] = {
    InvoiceState.DRAFT: frozenset({InvoiceState.FINALIZED, InvoiceState.VOID}),
    InvoiceState.FINALIZED: frozenset(
        {InvoiceState.PAID, InvoiceState.UNCOLLECTIBLE, InvoiceState.VOID}
    ),
    # A customer may still pay an invoice written off; a paid invoice is corrected by a credit.
    InvoiceState.UNCOLLECTIBLE: frozenset({InvoiceState.PAID, InvoiceState.VOID}),
    InvoiceState.PAID: frozenset(),
    InvoiceState.VOID: frozenset(),
}


def check_move(invoice_id: str, current: InvoiceState, target: InvoiceState) -> None:
    """Refuse a state change the invoice's life does not allow (FailedPrecondition)."""
    if target not in _MOVES[current]:
        description = f"a {current} invoice cannot become {target}"
        raise FailedPrecondition(
            f"invoice {invoice_id!r}: {description}",
            reason=INVOICE_STATE_CONFLICT,
            violations=[PreconditionViolation("STATE", f"invoices/{invoice_id}", description)],
            metadata={"invoice_id": invoice_id, "state": str(current)},
        )


class LineKind(StrEnum):
    """What an invoice line bills."""

    USAGE = "usage"
    """Rated usage of one product (one matrix cell) over the period, in arrears."""
    FEE = "fee"
    """A recurring fee for a period (or the part of it the contract was active)."""
    COMMIT = "commit"
    """A prepaid commit's price, due when the commit starts."""
    CREDIT = "credit"
    """Usage paid from a credit pool or commit (negative): how much of the usage it covered."""
    TRUE_UP = "true_up"
    """A postpaid commit's shortfall, billed at term end."""
    DISCOUNT = "discount"
    """The part of a price's usage above its maximum spend for the period (negative)."""
    MINIMUM_SPEND = "minimum_spend"
    """What lifts a price's spend for the period up to its minimum spend."""


@dataclass(frozen=True, slots=True)
class TierLine:
    """One line of a usage line's price breakdown, in the invoice currency (exact)."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line: what it bills, for when, its exact amount and that amount rounded once.

    `key` is unique within an invoice; a commit line's key (`commit:<pool_id>`) is also unique
    among a contract's live invoices, so a commit is never billed twice. `unit_price` is None
    where no single unit price explains the amount (prices changed mid-period).
    """

    kind: LineKind
    key: str
    description: str
    service_start: datetime
    service_end: datetime
    exact_amount: Decimal
    amount: Decimal
    product_key: str = ""
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    events: int = 0
    tiers: tuple[TierLine, ...] = ()


def rounded_line(
    currency: Currency,
    kind: LineKind,
    key: str,
    description: str,
    service: tuple[datetime, datetime],
    exact_amount: Decimal,
    *,
    product_key: str = "",
    quantity: Decimal | None = None,
    unit_price: Decimal | None = None,
    events: int = 0,
    tiers: tuple[TierLine, ...] = (),
) -> InvoiceLine:
    """A line whose amount is its exact amount rounded to the currency's minor unit, once."""
    rounded = round_to_minor_unit(exact_amount, currency)
    return InvoiceLine(
        kind,
        key,
        description,
        service[0],
        service[1],
        exact_amount,
        rounded,
        product_key,
        quantity,
        unit_price,
        events,
        tiers,
    )


@dataclass(frozen=True, slots=True)
class PoolBalance:
    """A pool's balance when the invoice was made: what the customer has left."""

    pool_id: str
    description: str
    balance: Decimal
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Invoice:
    """An invoice of a contract on one billing date; `revision` > 0 replaces a voided one."""

    invoice_id: str
    tenant_id: str
    contract_id: str
    customer_id: str
    currency: Currency
    billing_date: datetime
    period_start: datetime
    period_end: datetime
    lines: tuple[InvoiceLine, ...]
    balances: tuple[PoolBalance, ...] = ()
    revision: int = 0
    state: InvoiceState = InvoiceState.DRAFT
    number: str | None = None
    issued_at: datetime | None = None
    credited: Decimal = ZERO
    """What its credit notes have credited so far, in the invoice currency."""
    credit_note_ids: tuple[str, ...] = ()
    """Its credit notes, in the order they were issued."""
    paid: Decimal | None = None
    """What the customer paid once it is paid (its amount due then); None before."""

    @property
    def total(self) -> Decimal:
        """What the invoice billed: the sum of the rounded lines."""
        return exact_sum(line.amount for line in self.lines)

    @property
    def amount_due(self) -> Decimal:
        """What the customer still owes: the total less what was credited; nothing once settled.

        Collection charges this, so a credit note on an unpaid invoice lowers the charge.
        """
        if self.state in (InvoiceState.PAID, InvoiceState.VOID):
            return ZERO
        return self.total - self.credited

    def credited_by(self, credit_note_id: str, amount: Decimal) -> Invoice:
        """The invoice with one more credit note of `amount` against it."""
        return replace(
            self,
            credited=self.credited + amount,
            credit_note_ids=(*self.credit_note_ids, credit_note_id),
        )

    @property
    def exact_total(self) -> Decimal:
        """The sum of the lines before rounding; total − exact_total is the rounding."""
        return exact_sum(line.exact_amount for line in self.lines)

    @property
    def bills_period_in_arrears(self) -> bool:
        """True when its period is the one ending on its billing date, whose usage it bills."""
        return self.period_end == self.billing_date

    def subtotal(self, *kinds: LineKind) -> Decimal:
        """The sum of the rounded lines of these kinds."""
        return exact_sum(line.amount for line in self.lines if line.kind in kinds)

    def finalized(self, number: str, at: datetime) -> Invoice:
        """The invoice with its number, finalized at `at`."""
        check_move(self.invoice_id, self.state, InvoiceState.FINALIZED)
        return replace(self, state=InvoiceState.FINALIZED, number=number, issued_at=at)


def invoice_id_for(contract_id: str, billing_date: datetime, revision: int = 0) -> str:
    """The invoice's id, derived from its business key so a retried step finds the same one."""
    if billing_date.utcoffset() is not None:
        billing_date = billing_date.astimezone(UTC)  # the same instant, the same id
    stamp = billing_date.strftime("%Y%m%dT%H%M%S") + (
        f".{billing_date.microsecond:06d}" if billing_date.microsecond else ""
    )
    suffix = f"-r{revision}" if revision else ""
    return f"inv_{contract_id}_{stamp}Z{suffix}"


def format_invoice_number(sequence: int) -> str:
    """A tenant's n-th invoice number, as printed: INV-000042."""
    return f"INV-{sequence:06d}"


def invoice_to_dict(invoice: Invoice) -> dict[str, object]:
    """The plain-dict form an invoice is stored in; `invoice_from_dict` reads it back."""
    return {
        "invoice_id": invoice.invoice_id,
        "tenant_id": invoice.tenant_id,
        "contract_id": invoice.contract_id,
        "customer_id": invoice.customer_id,
        "currency": invoice.currency.code,
        "billing_date": invoice.billing_date.isoformat(),
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "revision": invoice.revision,
        "state": str(invoice.state),
        "number": invoice.number,
        "issued_at": None if invoice.issued_at is None else invoice.issued_at.isoformat(),
        "lines": [_line_to_dict(line) for line in invoice.lines],
        "balances": [
            {
                "pool_id": b.pool_id,
                "description": b.description,
                "balance": format_decimal(b.balance),
                "expires_at": None if b.expires_at is None else b.expires_at.isoformat(),
            }
            for b in invoice.balances
        ],
        "total": format_decimal(invoice.total),
        "credited": format_decimal(invoice.credited),
        "credit_note_ids": list(invoice.credit_note_ids),
        "paid": None if invoice.paid is None else format_decimal(invoice.paid),
    }


def invoice_from_dict(data: Mapping[str, Any]) -> Invoice:
    """An invoice from its stored dict form (written by `invoice_to_dict`)."""
    return Invoice(
        data["invoice_id"],
        data["tenant_id"],
        data["contract_id"],
        data["customer_id"],
        currency_of(data["currency"]),
        datetime.fromisoformat(data["billing_date"]),
        datetime.fromisoformat(data["period_start"]),
        datetime.fromisoformat(data["period_end"]),
        tuple(_line_from_dict(line) for line in data["lines"]),
        tuple(
            PoolBalance(
                b["pool_id"], b["description"], Decimal(b["balance"]), _moment(b["expires_at"])
            )
            for b in data["balances"]
        ),
        data["revision"],
        InvoiceState(data["state"]),
        data["number"],
        _moment(data["issued_at"]),
        # Invoices stored before credit notes existed carry neither field.
        Decimal(data.get("credited", "0")),
        tuple(data.get("credit_note_ids", ())),
        None if data.get("paid") is None else Decimal(data["paid"]),
    )


def _line_to_dict(line: InvoiceLine) -> dict[str, object]:
    return {
        "kind": str(line.kind),
        "key": line.key,
        "description": line.description,
        "service_start": line.service_start.isoformat(),
        "service_end": line.service_end.isoformat(),
        "exact_amount": format_decimal(line.exact_amount),
        "amount": format_decimal(line.amount),
        "product_key": line.product_key,
        "quantity": None if line.quantity is None else format_decimal(line.quantity),
        "unit_price": None if line.unit_price is None else format_decimal(line.unit_price),
        "events": line.events,
        "tiers": [
            {
                "description": t.description,
                "quantity": format_decimal(t.quantity),
                "unit_price": format_decimal(t.unit_price),
                "amount": format_decimal(t.amount),
            }
            for t in line.tiers
        ],
    }


def _line_from_dict(data: Mapping[str, Any]) -> InvoiceLine:
    return InvoiceLine(
        LineKind(data["kind"]),
        data["key"],
        data["description"],
        datetime.fromisoformat(data["service_start"]),
        datetime.fromisoformat(data["service_end"]),
        Decimal(data["exact_amount"]),
        Decimal(data["amount"]),
        data["product_key"],
        None if data["quantity"] is None else Decimal(data["quantity"]),
        None if data["unit_price"] is None else Decimal(data["unit_price"]),
        data["events"],
        tuple(
            TierLine(
                t["description"],
                Decimal(t["quantity"]),
                Decimal(t["unit_price"]),
                Decimal(t["amount"]),
            )
            for t in data["tiers"]
        ),
    )


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
