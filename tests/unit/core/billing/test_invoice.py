"""Invoices: lines rounded once, totals, ids and numbers, and the states they move through."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from itertools import product

import pytest

from rating_service.core.billing.compose import compose_invoice
from rating_service.core.billing.invoice import (
    INVOICE_STATE_CONFLICT,
    Invoice,
    InvoiceLine,
    InvoiceState,
    LineKind,
    check_move,
    format_invoice_number,
    invoice_from_dict,
    invoice_id_for,
    invoice_to_dict,
    rounded_line,
)
from rating_service.core.contracts import CommitmentKind
from rating_service.core.errors import FailedPrecondition
from rating_service.core.money import currency_of
from tests.unit.core.billing.builders import T0, a_contract, a_pool, inputs_on, usage, utc

D = Decimal
USD = currency_of("USD")
JPY = currency_of("JPY")
KWD = currency_of("KWD")

DRAFT = InvoiceState.DRAFT
FINALIZED = InvoiceState.FINALIZED
PAID = InvoiceState.PAID
UNCOLLECTIBLE = InvoiceState.UNCOLLECTIBLE
VOID = InvoiceState.VOID

ALLOWED = {
    (DRAFT, FINALIZED),
    (DRAFT, VOID),  # a draft may be dropped before it is numbered
    (FINALIZED, PAID),
    (FINALIZED, UNCOLLECTIBLE),
    (FINALIZED, VOID),
    (UNCOLLECTIBLE, PAID),  # a customer may still pay an invoice written off
    (UNCOLLECTIBLE, VOID),
}
EVERY_MOVE = list(product(InvoiceState, InvoiceState))


@pytest.mark.parametrize(("current", "target"), [m for m in EVERY_MOVE if m in ALLOWED], ids=str)
def test_allowed_moves(current: InvoiceState, target: InvoiceState) -> None:
    check_move("inv_1", current, target)


@pytest.mark.parametrize(
    ("current", "target"), [m for m in EVERY_MOVE if m not in ALLOWED], ids=str
)
def test_refused_moves(current: InvoiceState, target: InvoiceState) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        check_move("inv_1", current, target)
    assert refused.value.reason == INVOICE_STATE_CONFLICT
    assert refused.value.metadata["state"] == str(current)
    assert f"cannot become {target}" in str(refused.value)


@pytest.mark.parametrize("final", [PAID, VOID])
def test_paid_and_void_are_final(final: InvoiceState) -> None:
    for target in InvoiceState:
        with pytest.raises(FailedPrecondition):
            check_move("inv_1", final, target)


def a_line(exact: str, kind: LineKind = LineKind.USAGE, currency: str = "USD") -> InvoiceLine:
    return rounded_line(
        currency_of(currency), kind, f"{kind}:{exact}", "a line", (T0, T0 + timedelta(1)), D(exact)
    )


def an_invoice(*lines: InvoiceLine) -> Invoice:
    return Invoice("inv_1", "tnt_1", "ctr_1", "cus_1", USD, T0, T0, T0 + timedelta(1), tuple(lines))


@pytest.mark.parametrize(
    ("currency", "exact", "rounded"),
    [
        ("USD", "2.469134", "2.47"),
        ("USD", "0.125", "0.13"),  # half up, not half even (0.12)
        ("USD", "0.005", "0.01"),
        ("USD", "0.00499999999", "0.00"),
        ("USD", "-0.005", "-0.01"),  # a credit rounds like a charge, away from zero
        ("USD", "-5.555", "-5.56"),
        ("USD", "49.35483870967741935484", "49.35"),  # 90 × 17/31
        ("USD", "0", "0.00"),
        ("JPY", "1234.5", "1235"),  # no minor unit
        ("KWD", "1.2345", "1.235"),  # three decimal places
    ],
)
def test_a_line_is_rounded_once_half_up(currency: str, exact: str, rounded: str) -> None:
    line = a_line(exact, currency=currency)
    assert line.exact_amount == D(exact)
    assert line.amount == D(rounded)
    assert str(line.amount) == rounded  # carried at the minor unit's exponent


def test_totals_add_the_rounded_lines_and_exact_total_the_exact_ones() -> None:
    # Three lines of 0.005 each: 0.01 + 0.01 + 0.01 = 0.03, against 0.015 exactly.
    invoice = an_invoice(a_line("0.005"), a_line("0.005"), a_line("0.005", LineKind.FEE))
    assert invoice.total == D("0.03")
    assert invoice.exact_total == D("0.015")
    assert invoice.subtotal(LineKind.USAGE) == D("0.02")
    assert invoice.subtotal(LineKind.FEE, LineKind.COMMIT) == D("0.01")
    assert invoice.subtotal(LineKind.CREDIT) == 0


def test_credit_lines_are_subtracted() -> None:
    invoice = an_invoice(a_line("12.345"), a_line("-10.004", LineKind.CREDIT))
    assert invoice.total == D("12.35") - D("10.00")
    assert invoice.exact_total == D("2.341")


def test_an_empty_invoice_totals_zero() -> None:
    assert an_invoice().total == 0 == an_invoice().exact_total


def test_finalized_sets_number_and_issue_time() -> None:
    draft = an_invoice(a_line("1"))
    issued = draft.finalized("INV-000042", utc(2025, 2, 1, 0, 5))
    assert issued.state is FINALIZED
    assert issued.number == "INV-000042"
    assert issued.issued_at == utc(2025, 2, 1, 0, 5)
    assert issued.lines == draft.lines
    assert draft.state is DRAFT and draft.number is None  # the draft itself is unchanged


def test_a_finalized_invoice_cannot_be_finalized_again() -> None:
    issued = an_invoice().finalized("INV-000001", T0)
    with pytest.raises(FailedPrecondition) as refused:
        issued.finalized("INV-000002", T0)
    assert refused.value.reason == INVOICE_STATE_CONFLICT


@pytest.mark.parametrize(
    ("sequence", "number"),
    [(1, "INV-000001"), (42, "INV-000042"), (999_999, "INV-999999"), (1_234_567, "INV-1234567")],
)
def test_format_invoice_number(sequence: int, number: str) -> None:
    assert format_invoice_number(sequence) == number


@pytest.mark.parametrize(
    ("billing_date", "revision", "invoice_id"),
    [
        (utc(2025, 2, 1), 0, "inv_ctr_1_20250201T000000Z"),
        (utc(2025, 2, 1), 2, "inv_ctr_1_20250201T000000Z-r2"),
        (utc(2025, 1, 1, 6, 30, 15), 0, "inv_ctr_1_20250101T063015Z"),
        (T0 + timedelta(microseconds=250), 0, "inv_ctr_1_20250101T000000.000250Z"),
        # The same instant written in another offset is the same invoice.
        (
            utc(2025, 2, 1).astimezone(timezone(timedelta(hours=2))),
            0,
            "inv_ctr_1_20250201T000000Z",
        ),
    ],
)
def test_invoice_id_is_derived_from_the_business_key(
    billing_date: datetime, revision: int, invoice_id: str
) -> None:
    assert invoice_id_for("ctr_1", billing_date, revision) == invoice_id


def test_the_stored_dict_form_reads_back_the_same_invoice() -> None:
    pools = (
        a_pool("promo", "50", expires_at=utc(2025, 6, 1)),
        a_pool("pc", "1000", kind=CommitmentKind.PREPAID_COMMIT, cost_basis="0.9"),
    )
    contract = a_contract(term_start=utc(2025, 1, 15), term_end=utc(2025, 2, 1))
    composed = compose_invoice(
        inputs_on(
            contract,
            utc(2025, 2, 1),
            usage_totals=(usage("gpu-hours", "6", "41.50"), usage("images", "3", "0.24", "hd")),
            drawn={"promo": D("12.345")},
            pools=pools,
            revision=1,
        )
    )
    assert any(line.tiers for line in composed.lines)  # the breakdown is stored too
    for invoice in (composed, composed.finalized("INV-000007", utc(2025, 2, 1, 0, 10))):
        stored = invoice_to_dict(invoice)
        assert stored["total"] == str(invoice.total)
        assert invoice_from_dict(stored) == invoice


@pytest.mark.parametrize(
    ("at", "in_arrears"),
    [
        (T0, False),  # the opening date bills the first period in advance: nothing closed yet
        (utc(2025, 2, 1), True),  # January closes: its usage is billed, its row is invoiced
        (utc(2025, 4, 1), True),  # the term end bills March in arrears, and nothing after
    ],
)
def test_an_invoice_bills_a_period_in_arrears_when_the_period_ends_on_its_date(
    at: datetime, in_arrears: bool
) -> None:
    contract = a_contract(term_end=utc(2025, 4, 1))
    assert compose_invoice(inputs_on(contract, at)).bills_period_in_arrears is in_arrears
