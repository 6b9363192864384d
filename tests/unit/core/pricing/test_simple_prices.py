"""Per-unit prices and flat recurring fees."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, getcontext, localcontext

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import BillingTiming, FlatFee, LineItem, PerUnit, PriceLine

D = Decimal

TOKENS = PerUnit(D("0.0000025"))  # $2.50 per million tokens


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),
        ("1", "0.0000025"),  # one token: far below a cent, kept exact
        ("400", "0.001"),  # 400 × 0.0000025
        ("1000000", "2.5"),  # a million tokens
        ("0.5", "0.00000125"),  # fractional quantity
    ],
)
def test_per_unit_totals(quantity: str, total: str) -> None:
    assert TOKENS.period_total(D(quantity)).amount == D(total)


def test_per_unit_charge_ignores_what_came_before() -> None:
    priced = TOKENS.incremental_charge(D(123_456_789), D(400))
    # 400 × 0.0000025 = 0.001, as if nothing had come before
    assert priced.amount == D("0.001")
    assert priced == TOKENS.period_total(D(400))
    assert priced.lines == (PriceLine(LineItem.UNITS, D(400), D("0.0000025"), D(0), D("0.001")),)


def test_flat_fee_is_not_a_function_of_quantity() -> None:
    fee = FlatFee(D(49), BillingTiming.IN_ADVANCE)
    assert fee.period_total().amount == D(49)
    assert fee.period_total(D(1_000_000)).amount == D(49)
    # usage never moves a flat fee: P(c + x) − P(c) = 49 − 49 = 0
    assert fee.incremental_charge(D(10), D(5)).amount == D(0)
    assert fee.incremental_charge(D(10), D(5)).lines == ()
    assert FlatFee(D(49)).timing is BillingTiming.IN_ARREARS


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: PerUnit(D("-0.01")), "unit_price"),
        (lambda: PerUnit(D("Infinity")), "unit_price"),
        (lambda: PerUnit(0.5), "unit_price"),  # type: ignore[arg-type]  # a float is refused even from Python code
        (lambda: FlatFee(D(-1)), "amount"),
        (lambda: FlatFee(D(1), "monthly"), "timing"),  # type: ignore[arg-type]
    ],
)
def test_invalid_simple_prices_name_the_field(build: Callable[[], object], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        build()
    assert [v.field for v in error.value.violations] == [field]


def test_pricing_ignores_the_callers_decimal_context() -> None:
    # A caller's 3-digit context would round 1234567 × 0.0000025 to 3.09; pricing stays exact.
    with localcontext(prec=3):
        assert TOKENS.period_total(D(1_234_567)).amount == D("3.0864175")
        assert getcontext().prec == 3  # and pricing left the caller's context alone


def test_an_amount_beyond_fifty_digits_is_refused_not_rounded() -> None:
    forty_digits = D("1." + "1" * 39)
    # 40 × 40 significant digits need about 80: rounding would lose money, so refuse
    with pytest.raises(InvalidArgument) as error:
        PerUnit(forty_digits).period_total(forty_digits)
    assert [v.field for v in error.value.violations] == ["quantity"]
