"""Credit notes: what may be credited on an issued invoice, line by line or whole, and how.

A credit note credits a finalized, paid or uncollectible invoice (never a draft or a void one).
The limits, across every credit note of the invoice:
- a line is credited at most its rounded amount, and by quantity at most its quantity;
- the invoice is credited at most its total (what the customer was charged), so usage that
  credit pools paid for is never refunded as money;
- only lines that charge (a positive amount) are credited: credits applied and discounts
  already lowered the total.

A line credited by quantity is priced at the line's unit price, rounded once (half up) to the
minor unit; the quantity that completes the line credits whatever is left of its amount, so a
line credited unit by unit adds up to its amount exactly. A whole credit note credits what is
left of the total, from the first charging line down. On an unpaid invoice a credit note lowers
the amount due; on a paid one it is refunded, to the payment gateway or to a credit pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Any

from rating_service.core.billing.invoice import Invoice, InvoiceLine, InvoiceState, LineKind
from rating_service.core.errors import (
    FailedPrecondition,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.ledger.idempotency import payload_fingerprint
from rating_service.core.money import (
    EXACT_CONTEXT,
    Currency,
    currency_of,
    exact_sum,
    format_decimal,
    round_to_minor_unit,
)

ZERO = Decimal(0)

INVOICE_NOT_CREDITABLE = "INVOICE_NOT_CREDITABLE"
"""FailedPrecondition reason: the invoice is a draft or void; nothing on it can be credited."""

CREDIT_EXCEEDS_INVOICE = "CREDIT_EXCEEDS_INVOICE"
"""FailedPrecondition reason: more than is left creditable on a line or on the invoice."""

REFUND_DESTINATION_REQUIRED = "REFUND_DESTINATION_REQUIRED"
"""FailedPrecondition reason: the invoice is paid, so the credit is refunded: say where to."""

NO_GATEWAY_PAYMENT = "NO_GATEWAY_PAYMENT"
"""FailedPrecondition reason: the invoice was not paid through the gateway (a wire, or nothing
was due), so there is no charge to refund: refund to a pool instead."""

INVOICE_NOT_PAID = "INVOICE_NOT_PAID"
"""FailedPrecondition reason: a refund was asked for, but the invoice is unpaid (the credit
lowers its amount due instead)."""

CREDITABLE_STATES = frozenset(
    {InvoiceState.FINALIZED, InvoiceState.UNCOLLECTIBLE, InvoiceState.PAID}
)
"""Invoice states a credit note may be issued against."""

MAX_MEMO_LENGTH = 1000


class CreditReason(StrEnum):
    """Why an invoice is credited (the reasons Stripe's credit notes use)."""

    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    ORDER_CHANGE = "order_change"
    PRODUCT_UNSATISFACTORY = "product_unsatisfactory"
    OTHER = "other"


class RefundDestination(StrEnum):
    """Where the credit of a paid invoice goes back to."""

    GATEWAY = "gateway"
    """To the payment method charged, through the payment gateway."""
    POOL = "pool"
    """To a new purchased-credit pool of the contract, spendable on usage."""


@dataclass(frozen=True, slots=True)
class LineCredit:
    """Credit one invoice line (by its key): an amount, or a quantity at its unit price."""

    line_id: str
    amount: Decimal | None = None
    quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CreditNoteRequest:
    """What an operator asks to credit; no `lines` means the whole invoice (what is left)."""

    invoice_id: str
    lines: tuple[LineCredit, ...]
    reason: CreditReason
    memo: str = ""
    refund_to: RefundDestination | None = None

    @property
    def fingerprint(self) -> str:
        """What a retry under the same request id must repeat."""
        return payload_fingerprint(
            {
                "invoice_id": self.invoice_id,
                "lines": [(c.line_id, c.amount, c.quantity) for c in self.lines],
                "reason": self.reason,
                "memo": self.memo,
                "refund_to": self.refund_to,
            }
        )


@dataclass(frozen=True, slots=True)
class CreditNoteLine:
    """One line credited: the invoice line, the quantity (if credited by one) and the amount."""

    line_id: str
    kind: LineKind
    product_key: str
    description: str
    amount: Decimal
    quantity: Decimal | None = None
    unit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CreditNote:
    """A numbered credit against one invoice, and where it went (the amount due, or a refund)."""

    credit_note_id: str
    tenant_id: str
    number: str
    request_id: str
    invoice_id: str
    invoice_number: str
    contract_id: str
    customer_id: str
    currency: Currency
    reason: CreditReason
    memo: str
    refund_to: RefundDestination | None
    lines: tuple[CreditNoteLine, ...]
    issued_at: datetime

    @property
    def total(self) -> Decimal:
        """The amount credited: the sum of its lines."""
        return exact_sum(line.amount for line in self.lines)


def format_credit_note_number(sequence: int) -> str:
    """A tenant's n-th credit note number, as printed: CN-000042."""
    return f"CN-{sequence:06d}"


def check_creditable(invoice: Invoice, refund_to: RefundDestination | None) -> None:
    """Refuse a credit note the invoice's state does not allow, or a refund that does not fit.

    A draft or void invoice takes none; a paid one needs a refund destination; an unpaid one
    (finalized, uncollectible) takes none: its credit lowers the amount due.
    """
    subject = f"invoices/{invoice.invoice_id}"
    metadata = {"invoice_id": invoice.invoice_id, "state": str(invoice.state)}
    if invoice.state not in CREDITABLE_STATES:
        description = f"a {invoice.state} invoice cannot be credited"
        raise FailedPrecondition(
            f"invoice {invoice.invoice_id!r}: {description}",
            reason=INVOICE_NOT_CREDITABLE,
            violations=[PreconditionViolation("STATE", subject, description)],
            metadata=metadata,
        )
    if invoice.state is InvoiceState.PAID and refund_to is None:
        description = (
            'the invoice is paid: its credit is refunded, set refund_to "gateway" or "pool"'
        )
        raise FailedPrecondition(
            f"invoice {invoice.invoice_id!r}: {description}",
            reason=REFUND_DESTINATION_REQUIRED,
            violations=[PreconditionViolation("STATE", subject, description)],
            metadata=metadata,
        )
    if invoice.state is not InvoiceState.PAID and refund_to is not None:
        description = "the invoice is unpaid: its credit lowers the amount due, nothing is refunded"
        raise FailedPrecondition(
            f"invoice {invoice.invoice_id!r}: {description}",
            reason=INVOICE_NOT_PAID,
            violations=[PreconditionViolation("STATE", subject, description)],
            metadata=metadata,
        )


def check_refundable(invoice: Invoice, charge_reference: str | None) -> None:
    """Refuse a refund to the gateway of an invoice no gateway charge paid."""
    if charge_reference:
        return
    description = (
        "it was not paid through the payment gateway (paid by other means, or nothing was due):"
        ' there is no charge to refund; refund to "pool" instead'
    )
    raise FailedPrecondition(
        f"invoice {invoice.invoice_id!r}: {description}",
        reason=NO_GATEWAY_PAYMENT,
        violations=[
            PreconditionViolation("PAYMENT", f"invoices/{invoice.invoice_id}", description)
        ],
        metadata={"invoice_id": invoice.invoice_id},
    )


@dataclass(frozen=True, slots=True)
class Credited:
    """What earlier credit notes credited on one invoice line."""

    amount: Decimal = ZERO
    quantity: Decimal = ZERO


def credited_per_line(earlier: Sequence[CreditNote]) -> dict[str, Credited]:
    """What the credit notes credited per invoice line, amount and quantity."""
    totals: dict[str, Credited] = {}
    with localcontext(EXACT_CONTEXT):
        for note in earlier:
            for line in note.lines:
                before = totals.get(line.line_id, Credited())
                totals[line.line_id] = Credited(
                    before.amount + line.amount, before.quantity + (line.quantity or ZERO)
                )
    return totals


def compose_credit_lines(
    invoice: Invoice, earlier: Sequence[CreditNote], request: CreditNoteRequest
) -> tuple[CreditNoteLine, ...]:
    """The lines a credit note credits, within what the invoice and its credit notes leave.

    Bad line references are InvalidArgument (naming `lines[i]`); amounts beyond what is left
    are FailedPrecondition (CREDIT_EXCEEDS_INVOICE), as they depend on earlier credit notes.
    """
    check_creditable(invoice, request.refund_to)
    credited = credited_per_line(earlier)
    left_on_invoice = invoice.total - exact_sum(note.total for note in earlier)
    if request.lines:
        lines = _line_credits(invoice, credited, request.lines)
    else:
        lines = _whole(invoice, credited, left_on_invoice)
    total = exact_sum(line.amount for line in lines)
    if total > left_on_invoice or total <= 0:
        description = (
            f"credits {format_decimal(total)}, but {format_decimal(left_on_invoice)} of the"
            f" invoice's total {format_decimal(invoice.total)} is left to credit"
        )
        raise _exceeds(invoice, f"invoices/{invoice.invoice_id}", description)
    return lines


def _whole(
    invoice: Invoice, credited: Mapping[str, Credited], left: Decimal
) -> tuple[CreditNoteLine, ...]:
    """What is left of the total, taken from the charging lines in order."""
    lines = []
    for line in invoice.lines:
        if left <= 0:
            break
        room = line.amount - credited.get(line.key, Credited()).amount
        if line.amount <= 0 or room <= 0:
            continue
        amount = min(room, left)
        left -= amount
        lines.append(_credit_line(line, amount, None))
    return tuple(lines)


def _line_credits(
    invoice: Invoice, credited: Mapping[str, Credited], credits: Sequence[LineCredit]
) -> tuple[CreditNoteLine, ...]:
    by_key = {line.key: line for line in invoice.lines}
    violations = ViolationCollector()
    seen: set[str] = set()
    lines: list[CreditNoteLine] = []
    exceeded: list[PreconditionViolation] = []
    for index, credit in enumerate(credits):
        path = f"lines[{index}]"
        line = by_key.get(credit.line_id)
        if line is None:
            violations.add(f"{path}.line_id", f"the invoice has no line {credit.line_id!r}")
            continue
        if credit.line_id in seen:
            violations.add(f"{path}.line_id", "is credited twice in one credit note")
            continue
        seen.add(credit.line_id)
        if line.amount <= 0:
            violations.add(f"{path}.line_id", f"is a {line.kind} line: it charges nothing")
            continue
        before = credited.get(line.key, Credited())
        room = line.amount - before.amount
        subject = f"invoices/{invoice.invoice_id}/lines/{line.key}"
        given = credit.quantity if credit.quantity is not None else credit.amount
        if given is None or given <= 0 or (credit.quantity is None) == (credit.amount is None):
            violations.add(path, "credit an amount or a quantity greater than 0 (one of them)")
            continue
        if credit.quantity is not None:
            if line.quantity is None or line.unit_price is None:
                violations.add(
                    f"{path}.quantity",
                    "the line has no single unit price to credit a quantity at: credit an amount",
                )
                continue
            quantity_left = line.quantity - before.quantity
            if credit.quantity > quantity_left:
                exceeded.append(
                    PreconditionViolation(
                        "LINE_QUANTITY",
                        subject,
                        f"credits {format_decimal(credit.quantity)} of"
                        f" {format_decimal(quantity_left)} left of its quantity",
                    )
                )
                continue
            with localcontext(EXACT_CONTEXT):
                priced = round_to_minor_unit(credit.quantity * line.unit_price, invoice.currency)
            # The quantity that completes the line credits the rest of it, to the cent.
            amount = room if credit.quantity == quantity_left else min(priced, room)
        else:
            assert credit.amount is not None, "the request names an amount or a quantity"
            amount = credit.amount
            if round_to_minor_unit(amount, invoice.currency) != amount:
                violations.add(
                    f"{path}.amount",
                    f"must be in whole {invoice.currency.code} minor units"
                    f" ({invoice.currency.minor_units} decimal places at most)",
                )
                continue
        if amount > room:
            exceeded.append(
                PreconditionViolation(
                    "LINE_AMOUNT",
                    subject,
                    f"credits {format_decimal(amount)} of {format_decimal(room)} left of its"
                    f" amount {format_decimal(line.amount)}",
                )
            )
            continue
        lines.append(_credit_line(line, amount, credit.quantity))
    violations.raise_if_any("the credit note names lines it cannot credit")
    if exceeded:
        details = "; ".join(f"{v.subject}: {v.description}" for v in exceeded)
        raise FailedPrecondition(
            f"invoice {invoice.invoice_id!r}: {details}",
            reason=CREDIT_EXCEEDS_INVOICE,
            violations=exceeded,
            metadata={"invoice_id": invoice.invoice_id},
        )
    return tuple(lines)


def _credit_line(line: InvoiceLine, amount: Decimal, quantity: Decimal | None) -> CreditNoteLine:
    return CreditNoteLine(
        line.key,
        line.kind,
        line.product_key,
        line.description,
        amount,
        quantity,
        line.unit_price if quantity is not None else None,
    )


def _exceeds(invoice: Invoice, subject: str, description: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"invoice {invoice.invoice_id!r}: {description}",
        reason=CREDIT_EXCEEDS_INVOICE,
        violations=[PreconditionViolation("INVOICE_TOTAL", subject, description)],
        metadata={"invoice_id": invoice.invoice_id},
    )


def credit_note_to_dict(note: CreditNote) -> dict[str, object]:
    """The plain-dict form a credit note is stored in; `credit_note_from_dict` reads it back."""
    return {
        "credit_note_id": note.credit_note_id,
        "tenant_id": note.tenant_id,
        "number": note.number,
        "request_id": note.request_id,
        "invoice_id": note.invoice_id,
        "invoice_number": note.invoice_number,
        "contract_id": note.contract_id,
        "customer_id": note.customer_id,
        "currency": note.currency.code,
        "reason": str(note.reason),
        "memo": note.memo,
        "refund_to": None if note.refund_to is None else str(note.refund_to),
        "lines": [
            {
                "line_id": line.line_id,
                "kind": str(line.kind),
                "product_key": line.product_key,
                "description": line.description,
                "amount": format_decimal(line.amount),
                "quantity": None if line.quantity is None else format_decimal(line.quantity),
                "unit_price": None if line.unit_price is None else format_decimal(line.unit_price),
            }
            for line in note.lines
        ],
        "issued_at": note.issued_at.isoformat(),
        "total": format_decimal(note.total),
    }


def credit_note_from_dict(data: Mapping[str, Any]) -> CreditNote:
    """A credit note from its stored dict form."""
    return CreditNote(
        data["credit_note_id"],
        data["tenant_id"],
        data["number"],
        data["request_id"],
        data["invoice_id"],
        data["invoice_number"],
        data["contract_id"],
        data["customer_id"],
        currency_of(data["currency"]),
        CreditReason(data["reason"]),
        data["memo"],
        None if data["refund_to"] is None else RefundDestination(data["refund_to"]),
        tuple(
            CreditNoteLine(
                line["line_id"],
                LineKind(line["kind"]),
                line["product_key"],
                line["description"],
                Decimal(line["amount"]),
                None if line["quantity"] is None else Decimal(line["quantity"]),
                None if line["unit_price"] is None else Decimal(line["unit_price"]),
            )
            for line in data["lines"]
        ),
        datetime.fromisoformat(data["issued_at"]),
    )
