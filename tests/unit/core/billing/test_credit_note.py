"""Credit notes: what may be credited, line by line or whole, and the limits across notes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from rating_service.core.billing.credit_note import (
    CREDIT_EXCEEDS_INVOICE,
    INVOICE_NOT_CREDITABLE,
    INVOICE_NOT_PAID,
    NO_GATEWAY_PAYMENT,
    REFUND_DESTINATION_REQUIRED,
    CreditNote,
    CreditNoteLine,
    CreditNoteRequest,
    CreditReason,
    LineCredit,
    RefundDestination,
    check_refundable,
    compose_credit_lines,
    credit_note_from_dict,
    credit_note_to_dict,
    format_credit_note_number,
)
from rating_service.core.billing.invoice import (
    Invoice,
    InvoiceLine,
    InvoiceState,
    LineKind,
    rounded_line,
)
from rating_service.core.billing.postings import issue_transfers
from rating_service.core.errors import FailedPrecondition, InvalidArgument
from rating_service.core.ledger.transfers import TransferCode
from rating_service.core.money import currency_of
from tests.unit.core.billing.builders import T0

D = Decimal
USD = currency_of("USD")
PERIOD = (T0, T0 + timedelta(days=30))


def line(
    key: str,
    kind: LineKind,
    exact: str,
    *,
    quantity: str | None = None,
    unit_price: str | None = None,
    product: str = "",
) -> InvoiceLine:
    return rounded_line(
        USD,
        kind,
        key,
        key,
        PERIOD,
        D(exact),
        product_key=product,
        quantity=None if quantity is None else D(quantity),
        unit_price=None if unit_price is None else D(unit_price),
    )


# 3 × 4.00 = 12.00 of usage; 3 × 0.333 = 0.999 → 1.00 of calls; a 12.00 fee; 5.00 of credit.
GPU = line("usage:gpu", LineKind.USAGE, "12", quantity="3", unit_price="4", product="gpu")
CALLS = line("usage:calls", LineKind.USAGE, "0.999", quantity="3", unit_price="0.333", product="c")
FEE = line("fee:platform", LineKind.FEE, "12", quantity="1", unit_price="12", product="platform")
POOL = line("credit:pool_1", LineKind.CREDIT, "-5")


def invoice(state: InvoiceState = InvoiceState.FINALIZED, *lines: InvoiceLine) -> Invoice:
    """12.00 + 1.00 + 12.00 − 5.00 = 20.00 unless other lines are given."""
    return Invoice(
        "inv_1",
        "tnt_1",
        "ctr_1",
        "cus_1",
        USD,
        PERIOD[1],
        *PERIOD,
        lines or (GPU, CALLS, FEE, POOL),
        state=state,
        number="INV-000001",
        issued_at=PERIOD[1],
    )


def request(*credits: LineCredit, refund_to: RefundDestination | None = None) -> CreditNoteRequest:
    return CreditNoteRequest("inv_1", credits, CreditReason.ORDER_CHANGE, "", refund_to)


def note(number: int, *lines: CreditNoteLine) -> CreditNote:
    return CreditNote(
        f"cn_{number}",
        "tnt_1",
        format_credit_note_number(number),
        f"req_{number}",
        "inv_1",
        "INV-000001",
        "ctr_1",
        "cus_1",
        USD,
        CreditReason.DUPLICATE,
        "",
        None,
        lines,
        PERIOD[1],
    )


def credited(
    line_key: str, amount: str, quantity: str | None = None, kind: LineKind = LineKind.USAGE
) -> CreditNoteLine:
    return CreditNoteLine(
        line_key, kind, "", line_key, D(amount), None if quantity is None else D(quantity)
    )


def amounts(lines: tuple[CreditNoteLine, ...]) -> list[tuple[str, Decimal, Decimal | None]]:
    return [(c.line_id, c.amount, c.quantity) for c in lines]


@pytest.mark.parametrize(
    ("credits", "earlier", "expected"),
    [
        # 2 of 3 GPU units at 4.00: 8.00.
        ([LineCredit("usage:gpu", quantity=D(2))], [], [("usage:gpu", D("8.00"), D(2))]),
        # An amount, in cents.
        ([LineCredit("usage:gpu", amount=D("2.5"))], [], [("usage:gpu", D("2.5"), None)]),
        # 2 of 3 calls at 0.333: 0.666 rounds half up to 0.67.
        ([LineCredit("usage:calls", quantity=D(2))], [], [("usage:calls", D("0.67"), D(2))]),
        # The last call after 0.67: what is left of 1.00, 0.33 (0.333 alone would round to 0.33
        # too, but 1 + 1 + 1 at 0.33 would leave a cent behind).
        (
            [LineCredit("usage:calls", quantity=D(1))],
            [note(1, credited("usage:calls", "0.67", "2"))],
            [("usage:calls", D("0.33"), D(1))],
        ),
        (
            [LineCredit("usage:calls", quantity=D(1))],
            [
                note(1, credited("usage:calls", "0.33", "1")),
                note(2, credited("usage:calls", "0.33", "1")),
            ],
            [("usage:calls", D("0.34"), D(1))],  # 1.00 − 0.33 − 0.33: the line adds up
        ),
        # A line to its full amount: exactly at the boundary.
        ([LineCredit("fee:platform", amount=D(12))], [], [("fee:platform", D(12), None)]),
        # Two lines at once.
        (
            [LineCredit("usage:gpu", quantity=D(1)), LineCredit("fee:platform", amount=D("0.01"))],
            [],
            [("usage:gpu", D("4.00"), D(1)), ("fee:platform", D("0.01"), None)],
        ),
    ],
)
def test_line_credits(
    credits: list[LineCredit], earlier: list[CreditNote], expected: list[tuple[str, D, D | None]]
) -> None:
    assert amounts(compose_credit_lines(invoice(), earlier, request(*credits))) == expected


@pytest.mark.parametrize(
    ("credits", "earlier", "reason"),
    [
        # 12.01 of a 12.00 line: one cent over.
        ([LineCredit("fee:platform", amount=D("12.01"))], [], "LINE_AMOUNT"),
        # 4 of 3 units.
        ([LineCredit("usage:gpu", quantity=D(4))], [], "LINE_QUANTITY"),
        # 2 more units when 2 of 3 were credited already.
        (
            [LineCredit("usage:gpu", quantity=D(2))],
            [note(1, credited("usage:gpu", "8", "2"))],
            "LINE_QUANTITY",
        ),
        # 4.01 more when 8.00 of 12.00 was credited already.
        (
            [LineCredit("usage:gpu", amount=D("4.01"))],
            [note(1, credited("usage:gpu", "8"))],
            "LINE_AMOUNT",
        ),
        # Both lines fit, but 12.00 + 12.00 is more than the total of 20.00 (pools paid 5.00).
        (
            [LineCredit("usage:gpu", amount=D(12)), LineCredit("fee:platform", amount=D(12))],
            [],
            "INVOICE_TOTAL",
        ),
    ],
)
def test_over_crediting_is_refused(
    credits: list[LineCredit], earlier: list[CreditNote], reason: str
) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        compose_credit_lines(invoice(), earlier, request(*credits))
    assert refused.value.reason == CREDIT_EXCEEDS_INVOICE
    assert [v.type for v in refused.value.violations] == [reason]


@pytest.mark.parametrize(
    ("credit", "field"),
    [
        (LineCredit("usage:nope", amount=D(1)), "lines[0].line_id"),
        (LineCredit("credit:pool_1", amount=D(1)), "lines[0].line_id"),  # charges nothing
        (LineCredit("usage:gpu", amount=D("0.001")), "lines[0].amount"),  # below a cent
        (LineCredit("usage:gpu", amount=D(0)), "lines[0]"),
        (LineCredit("usage:gpu", amount=D(1), quantity=D(1)), "lines[0]"),  # both
    ],
)
def test_bad_line_references_are_invalid(credit: LineCredit, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        compose_credit_lines(invoice(), [], request(credit))
    assert [v.field for v in refused.value.violations] == [field]


def test_a_quantity_needs_a_unit_price() -> None:
    tiered = line("usage:t", LineKind.USAGE, "7", quantity="10", product="t")  # no unit price
    with pytest.raises(InvalidArgument) as refused:
        compose_credit_lines(
            invoice(InvoiceState.FINALIZED, tiered),
            [],
            request(LineCredit("usage:t", quantity=D(1))),
        )
    assert [v.field for v in refused.value.violations] == ["lines[0].quantity"]


def test_a_line_credited_twice_in_one_note_is_invalid() -> None:
    twice = (LineCredit("usage:gpu", amount=D(1)), LineCredit("usage:gpu", amount=D(1)))
    with pytest.raises(InvalidArgument) as refused:
        compose_credit_lines(invoice(), [], request(*twice))
    assert [v.field for v in refused.value.violations] == ["lines[1].line_id"]


@pytest.mark.parametrize(
    ("earlier", "expected"),
    [
        # 20.00 left: GPU 12.00, calls 1.00, then 7.00 of the 12.00 fee; never the pool's 5.00.
        ([], [("usage:gpu", D("12.00")), ("usage:calls", D("1.00")), ("fee:platform", D("7.00"))]),
        # 8.00 of GPU credited: 12.00 left, from GPU's remaining 4.00 on.
        (
            [note(1, credited("usage:gpu", "8", "2"))],
            [("usage:gpu", D("4.00")), ("usage:calls", D("1.00")), ("fee:platform", D("7.00"))],
        ),
        # 19.99 credited already: the last cent.
        (
            [
                note(
                    1,
                    credited("usage:gpu", "12"),
                    credited("fee:platform", "7.99", kind=LineKind.FEE),
                )
            ],
            [("usage:calls", D("0.01"))],
        ),
    ],
)
def test_a_whole_credit_note_credits_what_is_left_of_the_total(
    earlier: list[CreditNote], expected: list[tuple[str, Decimal]]
) -> None:
    lines = compose_credit_lines(invoice(), earlier, request())
    assert [(c.line_id, c.amount) for c in lines] == expected


def test_nothing_is_left_after_a_whole_credit_note() -> None:
    whole = note(
        1, credited("usage:gpu", "12"), credited("usage:calls", "1"), credited("fee:platform", "7")
    )
    for credits in ((), (LineCredit("fee:platform", amount=D("0.01")),)):
        with pytest.raises(FailedPrecondition) as refused:
            compose_credit_lines(invoice(), [whole], request(*credits))
        assert refused.value.reason == CREDIT_EXCEEDS_INVOICE


@pytest.mark.parametrize(
    ("state", "refund_to", "reason"),
    [
        (InvoiceState.DRAFT, None, INVOICE_NOT_CREDITABLE),
        (InvoiceState.VOID, None, INVOICE_NOT_CREDITABLE),
        (InvoiceState.VOID, RefundDestination.GATEWAY, INVOICE_NOT_CREDITABLE),
        (InvoiceState.PAID, None, REFUND_DESTINATION_REQUIRED),
        (InvoiceState.FINALIZED, RefundDestination.POOL, INVOICE_NOT_PAID),
        (InvoiceState.UNCOLLECTIBLE, RefundDestination.GATEWAY, INVOICE_NOT_PAID),
    ],
)
def test_states_and_refunds_that_do_not_fit_are_refused(
    state: InvoiceState, refund_to: RefundDestination | None, reason: str
) -> None:
    credit = LineCredit("usage:gpu", amount=D(1))
    with pytest.raises(FailedPrecondition) as refused:
        compose_credit_lines(invoice(state), [], request(credit, refund_to=refund_to))
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("state", "refund_to"),
    [
        (InvoiceState.FINALIZED, None),
        (InvoiceState.UNCOLLECTIBLE, None),
        (InvoiceState.PAID, RefundDestination.GATEWAY),
        (InvoiceState.PAID, RefundDestination.POOL),
    ],
)
def test_creditable_states(state: InvoiceState, refund_to: RefundDestination | None) -> None:
    credit = LineCredit("usage:gpu", amount=D(1))
    assert compose_credit_lines(invoice(state), [], request(credit, refund_to=refund_to))


def test_a_gateway_refund_needs_a_gateway_charge() -> None:
    check_refundable(invoice(InvoiceState.PAID), "ch_sim_1")
    with pytest.raises(FailedPrecondition) as refused:
        check_refundable(invoice(InvoiceState.PAID), None)
    assert refused.value.reason == NO_GATEWAY_PAYMENT


def test_the_amount_due_falls_by_what_is_credited() -> None:
    unpaid = invoice().credited_by("cn_1", D("8.00"))
    # 20.00 − 8.00
    assert (unpaid.total, unpaid.credited, unpaid.amount_due) == (D("20.00"), D("8.00"), D("12.00"))
    assert unpaid.credit_note_ids == ("cn_1",)
    assert replace(unpaid, state=InvoiceState.PAID).amount_due == 0


def test_postings_take_each_line_back_from_its_revenue() -> None:
    issued = note(
        1,
        CreditNoteLine("usage:gpu", LineKind.USAGE, "gpu", "GPU", D(8), D(2), D(4)),
        CreditNoteLine("fee:platform", LineKind.FEE, "platform", "Fee", D("0.50")),
        CreditNoteLine("commit:pool_9", LineKind.COMMIT, "", "Commit", D(3)),
    )
    assert [
        (t.debit_account_id, t.credit_account_id, t.amount, t.code) for t in issue_transfers(issued)
    ] == [
        ("revenue:ctr_1:gpu", "receivable:ctr_1", D(8), TransferCode.CREDIT_NOTE),
        ("revenue:ctr_1:platform", "receivable:ctr_1", D("0.50"), TransferCode.CREDIT_NOTE),
        ("payments:ctr_1", "receivable:ctr_1", D(3), TransferCode.CREDIT_NOTE),
    ]


def test_numbers_and_the_stored_form() -> None:
    assert format_credit_note_number(42) == "CN-000042"
    issued = note(7, CreditNoteLine("usage:gpu", LineKind.USAGE, "gpu", "GPU", D(8), D(2), D(4)))
    assert credit_note_from_dict(credit_note_to_dict(issued)) == issued
    assert issued.total == D(8)
