"""Coupons' discounts and free-usage trials on an invoice (pure): what they are computed on.

The invoice of 1 February 2025 of a monthly contract from 1 January bills January's usage
(`tokens` 100.00, `gpu-hours` 6 units = 41.50), January's `support` fee in arrears (90.00)
and February's `platform` fee in advance (310.00): 541.50 before any discount.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.core.billing.compose import compose_invoice
from rating_service.core.billing.discounts import (
    COUPON_CURRENCY_MISMATCH,
    COUPON_EXHAUSTED,
    COUPON_EXPIRED,
    Coupon,
    CouponDuration,
    Discount,
    check_redeemable,
    coupon_from_dict,
    coupon_to_dict,
    discount_from_dict,
    discount_to_dict,
    discount_window,
)
from rating_service.core.billing.document import InvoiceParties, render_html
from rating_service.core.billing.invoice import Invoice, LineKind
from rating_service.core.billing.postings import (
    DISCOUNTS_REVENUE,
    finalization_transfers,
    invoice_accounts,
)
from rating_service.core.contracts import Contract
from rating_service.core.contracts.contract import (
    cancelled,
    contract_from_dict,
    contract_to_dict,
    nominal_billing_period,
)
from rating_service.core.contracts.lifecycle import Trial, TrialMode
from rating_service.core.contracts.renewal import next_contract
from rating_service.core.errors import FailedPrecondition, InvalidArgument
from rating_service.core.ledger.accounts import (
    AccountKind,
    overage_account_id,
    receivable_account_id,
    revenue_account_id,
)
from rating_service.core.money import currency_of
from rating_service.core.pricing.catalog import Catalog, catalog_from_document
from tests.unit.core.billing.builders import (
    CATALOG,
    PRODUCTS,
    a_contract,
    a_pool,
    inputs_on,
    lines_of,
    usage,
    utc,
    version,
)

D = Decimal
USD = currency_of("USD")
MID_JANUARY = utc(2025, 1, 15)
FEBRUARY = utc(2025, 2, 1)
JANUARY_USAGE = (usage("tokens", "50000000", "100"), usage("gpu-hours", "6", "41.50"))


def a_coupon(
    *,
    percent: str | None = "20",
    amount: str | None = None,
    duration: CouponDuration = CouponDuration.ONCE,
    periods: int | None = None,
    products: frozenset[str] = frozenset(),
    tags: frozenset[str] = frozenset(),
) -> Coupon:
    return Coupon(
        "SAVE",
        "Launch",
        duration,
        None if amount is not None else D(percent or "0"),
        None if amount is None else D(amount),
        None if amount is None else USD,
        periods,
        products,
        tags,
    )


def applied(
    coupon: Coupon,
    contract: Contract | None = None,
    at: datetime = MID_JANUARY,
    discount_id: str = "dsc_1",
) -> Discount:
    """The discount a coupon makes when applied to the contract at `at`."""
    contract = contract or a_contract()
    start, end = discount_window(
        coupon,
        nominal_billing_period(contract, at),
        lambda moment: nominal_billing_period(contract, moment)[1],
    )
    return Discount(discount_id, contract.contract_id, coupon, at, start, end)


def invoice_on(
    at: datetime,
    *discounts: Discount,
    contract: Contract | None = None,
    drawn: dict[str, Decimal] | None = None,
    catalog: Catalog = CATALOG,
) -> Invoice:
    inputs = inputs_on(
        contract or a_contract(),
        at,
        usage_totals=JANUARY_USAGE,
        drawn={"p1": sum((drawn or {}).values(), D(0))} if drawn else None,
        pools=(a_pool("p1", "1000"),) if drawn else (),
        catalog=catalog,
    )
    return compose_invoice(replace(inputs, discounts=discounts, drawn_by_product=drawn))


def discount_amounts(invoice: Invoice) -> list[str]:
    return [str(line.amount) for line in lines_of(invoice, LineKind.COUPON)]


TAGGED = catalog_from_document(
    {
        "products": [{**p, "tags": ["llm"]} if p["key"] == "tokens" else p for p in PRODUCTS],
        "rate_cards": [version(1, utc(2020, 1, 1))],
    }
)


@pytest.mark.parametrize(
    ("coupon", "expected"),
    [
        # 20% of tokens 100.00 + gpu 41.50 + support 90.00 = 231.50 → 46.30; February's
        # platform fee in advance is outside the January window.
        (a_coupon(), "-46.30"),
        (a_coupon(products=frozenset({"tokens"})), "-20.00"),  # 20% of 100.00
        (a_coupon(tags=frozenset({"llm"})), "-20.00"),  # tokens by its tag
        (a_coupon(amount="50"), "-50.00"),
        (a_coupon(amount="500", products=frozenset({"tokens"})), "-100.00"),  # capped at 100
        (a_coupon(amount="500"), "-231.50"),  # capped at the in-scope 231.50
        # 12.5% of gpu 41.50 = 5.1875 → 5.19 (half up, once)
        (a_coupon(percent="12.5", products=frozenset({"gpu-hours"})), "-5.19"),
        (a_coupon(percent="100", products=frozenset({"platform"})), None),  # not in January
    ],
)
def test_a_discount_is_a_negative_line_on_its_scope(coupon: Coupon, expected: str | None) -> None:
    invoice = invoice_on(utc(2025, 2, 1), applied(coupon), catalog=TAGGED)
    assert discount_amounts(invoice) == ([expected] if expected else [])
    if expected:
        [line] = lines_of(invoice, LineKind.COUPON)
        assert line.key == "coupon:dsc_1"
        assert invoice.total == D("541.50") + D(expected)


def test_a_discount_is_computed_net_of_the_credits_that_paid_its_products() -> None:
    # Credits paid 60.00 of the tokens: 20% of (100.00 − 60.00) = 8.00.
    invoice = invoice_on(
        utc(2025, 2, 1),
        applied(a_coupon(products=frozenset({"tokens"}))),
        drawn={"tokens": D("60")},
    )
    assert discount_amounts(invoice) == ["-8.00"]
    # Everything: 20% of (231.50 − 60.00) = 34.30
    invoice = invoice_on(utc(2025, 2, 1), applied(a_coupon()), drawn={"tokens": D("60")})
    assert discount_amounts(invoice) == ["-34.30"]
    # Lines order: the credit before the discount; the invoice 541.50 − 60.00 − 34.30.
    kinds = [line.kind for line in invoice.lines]
    assert kinds.index(LineKind.CREDIT) < kinds.index(LineKind.COUPON)
    assert invoice.total == D("447.20")


def test_discounts_stack_each_on_what_the_earlier_left() -> None:
    tokens = frozenset({"tokens"})
    first = applied(a_coupon(percent="60", products=tokens), discount_id="dsc_a")
    second = applied(
        a_coupon(percent="60", products=tokens), at=utc(2025, 1, 16), discount_id="dsc_b"
    )
    # 60% of 100.00 = 60.00, then 60% of the 40.00 left = 24.00
    assert discount_amounts(invoice_on(utc(2025, 2, 1), second, first)) == ["-60.00", "-24.00"]


@pytest.mark.parametrize(
    ("coupon", "discounted_invoices"),
    [
        # Applied 15 January: the January period is the first one.
        (a_coupon(), [utc(2025, 2, 1)]),
        (
            a_coupon(duration=CouponDuration.REPEATING, periods=3),
            [utc(2025, m, 1) for m in (2, 3, 4)],
        ),
        (a_coupon(duration=CouponDuration.FOREVER), [utc(2025, m, 1) for m in (2, 3, 4, 5, 6)]),
    ],
)
def test_a_discount_lasts_its_duration_in_billing_periods(
    coupon: Coupon, discounted_invoices: list[datetime]
) -> None:
    discount = applied(coupon)
    carrying = [
        at
        for at in (utc(2025, m, 1) for m in (2, 3, 4, 5, 6))
        if lines_of(invoice_on(at, discount), LineKind.COUPON)
    ]
    assert carrying == discounted_invoices


def test_a_repeating_discount_counts_fixed_interval_periods() -> None:
    contract = a_contract(interval=timedelta(seconds=10))
    start = contract.term_start
    discount = applied(
        a_coupon(duration=CouponDuration.REPEATING, periods=2),
        contract,
        start + timedelta(seconds=13),
    )
    assert (discount.starts_at, discount.ends_before) == (
        start + timedelta(seconds=10),
        start + timedelta(seconds=30),
    )


def test_a_removed_discount_ends_at_the_period_of_its_removal() -> None:
    discount = applied(a_coupon(duration=CouponDuration.FOREVER))
    removed = replace(discount, ends_before=utc(2025, 3, 1), removed_at=utc(2025, 3, 5))
    assert lines_of(invoice_on(utc(2025, 3, 1), removed), LineKind.COUPON)
    assert not lines_of(invoice_on(utc(2025, 4, 1), removed), LineKind.COUPON)


# ---------------------------------------------------------------- coupons


def test_a_coupon_reads_back_from_its_dict_form() -> None:
    coupon = Coupon(
        "WELCOME-10",
        "Welcome",
        CouponDuration.REPEATING,
        amount_off=D("10.00"),
        currency=USD,
        duration_periods=3,
        product_keys=frozenset({"tokens"}),
        product_tags=frozenset({"llm"}),
        max_redemptions=5,
        redeem_by=utc(2025, 6, 1),
    )
    assert coupon_from_dict(coupon_to_dict(coupon)) == coupon
    discount = applied(coupon)
    assert discount_from_dict(discount_to_dict(discount)) == discount


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"duration": "once"}, {"coupon.percent_off"}),  # neither off
        (
            {"duration": "once", "percent_off": "10", "amount_off": "5", "currency": "USD"},
            {"coupon.percent_off"},
        ),
        ({"duration": "once", "percent_off": "101"}, {"coupon.percent_off"}),
        ({"duration": "once", "percent_off": "0"}, {"coupon.percent_off"}),
        ({"duration": "once", "amount_off": "5"}, {"coupon.currency"}),
        ({"duration": "once", "amount_off": "5.001", "currency": "USD"}, {"coupon.amount_off"}),
        ({"duration": "repeating", "percent_off": "10"}, {"coupon.duration_periods"}),
        (
            {"duration": "once", "percent_off": "10", "duration_periods": 2},
            {"coupon.duration_periods"},
        ),
        ({"duration": "weekly", "percent_off": "10"}, {"coupon.duration"}),
        (
            {"duration": "once", "percent_off": "10", "max_redemptions": -1},
            {"coupon.max_redemptions"},
        ),
    ],
)
def test_a_bad_coupon_names_its_fields(fields: dict[str, object], bad: set[str]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        coupon_from_dict({"coupon_id": "X", **fields}, "coupon")
    assert {v.field for v in raised.value.violations} == bad


def test_a_bad_coupon_id_is_refused() -> None:
    with pytest.raises(InvalidArgument) as raised:
        coupon_from_dict({"coupon_id": "no spaces", "duration": "once", "percent_off": "5"})
    assert [v.field for v in raised.value.violations] == ["coupon_id"]


@pytest.mark.parametrize(
    ("coupon", "redemptions", "currency", "at", "reason"),
    [
        (a_coupon(), 0, "USD", utc(2025, 1, 1), None),
        (
            Coupon("C", "", CouponDuration.ONCE, D(5), max_redemptions=2),
            1,
            "USD",
            utc(2025, 1, 1),
            None,
        ),
        (
            Coupon("C", "", CouponDuration.ONCE, D(5), max_redemptions=2),
            2,
            "USD",
            utc(2025, 1, 1),
            COUPON_EXHAUSTED,
        ),
        (
            Coupon("C", "", CouponDuration.ONCE, D(5), redeem_by=utc(2025, 1, 1)),
            0,
            "USD",
            utc(2025, 1, 1) - timedelta(microseconds=1),
            None,
        ),
        (
            Coupon("C", "", CouponDuration.ONCE, D(5), redeem_by=utc(2025, 1, 1)),
            0,
            "USD",
            utc(2025, 1, 1),
            COUPON_EXPIRED,
        ),
        (a_coupon(amount="5"), 0, "EUR", utc(2025, 1, 1), COUPON_CURRENCY_MISMATCH),
        (a_coupon(), 0, "EUR", utc(2025, 1, 1), None),  # percent off fits any currency
    ],
)
def test_a_coupon_is_redeemable_until_its_limits(
    coupon: Coupon, redemptions: int, currency: str, at: datetime, reason: str | None
) -> None:
    def check() -> None:
        check_redeemable(
            coupon,
            archived=False,
            redemptions=redemptions,
            invoice_currency=currency_of(currency),
            at=at,
        )

    if reason is None:
        check()
    else:
        with pytest.raises(FailedPrecondition) as raised:
            check()
        assert raised.value.reason == reason


# ---------------------------------------------------------------- trials


def a_trial_contract(mode: TrialMode = TrialMode.FREE_USAGE, ends: datetime = FEBRUARY) -> Contract:
    credit = D("25") if mode is TrialMode.TRIAL_CREDIT else None
    return replace(a_contract(), trial=Trial(ends, mode, credit))


def test_a_free_usage_trial_waives_the_charges_of_its_periods() -> None:
    contract = a_trial_contract()
    invoice = invoice_on(utc(2025, 2, 1), contract=contract)
    [trial] = lines_of(invoice, LineKind.TRIAL)
    # tokens 100.00 + gpu 41.50 + support 90.00 of January waived; February's platform 310.00
    # in advance is after the trial.
    assert trial.amount == D("-231.50")
    assert invoice.total == D("310.00")
    assert lines_of(invoice, LineKind.USAGE)  # the usage is still shown
    after = invoice_on(utc(2025, 3, 1), contract=contract)
    assert not lines_of(after, LineKind.TRIAL)
    assert after.total == D("541.50")


def test_a_free_usage_trial_waives_usage_net_of_credits_and_leaves_no_discount() -> None:
    contract = a_trial_contract()
    invoice = invoice_on(
        utc(2025, 2, 1), applied(a_coupon(), contract), contract=contract, drawn={"tokens": D("60")}
    )
    # 231.50 − 60.00 credited = 171.50 waived; nothing left in January for the coupon.
    assert [line.amount for line in lines_of(invoice, LineKind.TRIAL)] == [D("-171.50")]
    assert discount_amounts(invoice) == []
    assert invoice.total == D("310.00")


def test_a_free_usage_trial_ends_on_a_period_boundary() -> None:
    with pytest.raises(InvalidArgument) as raised:
        a_trial_contract(ends=utc(2025, 2, 15))
    assert [v.field for v in raised.value.violations] == ["trial.ends_at"]
    assert a_trial_contract(TrialMode.TRIAL_CREDIT, utc(2025, 2, 15)).trial is not None


def test_a_trial_is_written_only_when_set() -> None:
    plain = a_contract()
    assert "trial" not in contract_to_dict(plain)
    for contract in (a_trial_contract(), a_trial_contract(TrialMode.TRIAL_CREDIT)):
        data = contract_to_dict(contract)
        assert data["trial"]
        assert contract_from_dict(data) == contract


@pytest.mark.parametrize(
    ("trial", "bad"),
    [
        ({"ends_at": "2025-02-01T00:00:00+00:00", "mode": "trial_credit"}, "contract.trial.credit"),
        (
            {"ends_at": "2025-02-01T00:00:00+00:00", "mode": "free_usage", "credit": "5"},
            "contract.trial.credit",
        ),
        ({"ends_at": "2024-12-01T00:00:00+00:00", "mode": "free_usage"}, "contract.trial.ends_at"),
        ({"ends_at": "2025-02-01T00:00:00+00:00", "mode": "gratis"}, "contract.trial.mode"),
    ],
)
def test_a_bad_trial_names_its_field(trial: dict[str, object], bad: str) -> None:
    data = {**contract_to_dict(a_contract()), "trial": trial}
    with pytest.raises(InvalidArgument) as raised:
        contract_from_dict(data, "contract")
    assert bad in {v.field for v in raised.value.violations}


# ---------------------------------------------------------------- the ledger


def net_receivable_moves(invoice: Invoice) -> dict[str, Decimal]:
    """Per account, what finalization moved from it into the receivable (negative: out of it)."""
    receivable = receivable_account_id("ctr_1")
    moved: dict[str, Decimal] = {}
    for transfer in finalization_transfers(invoice):
        if transfer.debit_account_id == receivable:
            moved[transfer.credit_account_id] = (
                moved.get(transfer.credit_account_id, D(0)) + transfer.amount
            )
        else:
            assert transfer.credit_account_id == receivable
            moved[transfer.debit_account_id] = (
                moved.get(transfer.debit_account_id, D(0)) - transfer.amount
            )
    return moved


def test_what_a_coupon_or_a_trial_gives_away_is_debited_to_the_discounts_account() -> None:
    discounts = revenue_account_id("ctr_1", DISCOUNTS_REVENUE)
    coupon = invoice_on(FEBRUARY, applied(a_coupon()), drawn={"tokens": D("60")})
    moved = net_receivable_moves(coupon)
    assert moved[discounts] == D("-34.30")
    # The overage (usage 141.50 less 60.00 of credit) still leaves its account whole.
    assert moved[overage_account_id("ctr_1")] == D("81.50")
    assert sum(moved.values(), D(0)) == coupon.total == D("447.20")
    trial = invoice_on(FEBRUARY, contract=a_trial_contract())
    assert net_receivable_moves(trial)[discounts] == D("-231.50")
    assert (discounts, AccountKind.REVENUE, DISCOUNTS_REVENUE) in invoice_accounts(trial)


def test_a_contract_cancelled_in_its_trial_ends_and_its_next_term_has_no_trial() -> None:
    contract = replace(a_trial_contract(), term_end=utc(2025, 6, 1))
    stopped = cancelled(contract, MID_JANUARY)
    assert stopped is not None and stopped.term_end == MID_JANUARY
    assert stopped.trial == contract.trial  # it covers what is left of the term
    assert next_contract(contract).trial is None


def test_the_document_shows_the_coupon_and_the_trial_apart_from_maximum_spend() -> None:
    parties = InvoiceParties("Seller", "Buyer")
    page = render_html(invoice_on(FEBRUARY, applied(a_coupon())), parties)
    assert "Coupon discounts" in page and "Discount: Launch (20% off)" in page
    assert "Maximum spend discounts" not in page
    trial = render_html(invoice_on(FEBRUARY, contract=a_trial_contract()), parties)
    assert "Trial (until 2025-02-01T00:00:00+00:00)" in trial
