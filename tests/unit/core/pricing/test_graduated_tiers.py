"""Graduated tiers: each unit at its own tier's price, flat fees when a tier is entered."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import Graduated, LineItem, PriceLine, Tier

D = Decimal

# Stripe's documented example: units 1–5 at $7, 6–10 at $6.50, 11+ at $6.
STRIPE = Graduated((Tier(D(5), D(7)), Tier(D(10), D("6.50")), Tier(None, D(6))))

# The same bounds with flat fees: $10 on entering tier 1, $5 on tier 2, $2 on tier 3.
WITH_FEES = Graduated(
    (Tier(D(5), D(7), D(10)), Tier(D(10), D("6.50"), D(5)), Tier(None, D(6), D(2)))
)


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),  # nothing used, no tier entered
        ("1", "7"),  # 1×7
        ("5", "35"),  # 5×7: last unit of tier 1
        ("6", "41.50"),  # 5×7 + 1×6.50 (Stripe: $41.50)
        ("10", "67.50"),  # 5×7 + 5×6.50
        ("11", "73.50"),  # 5×7 + 5×6.50 + 1×6
        ("20", "127.50"),  # 5×7 + 5×6.50 + 10×6 (Stripe: $127.50)
        ("0.5", "3.5"),  # 0.5×7
        ("5.5", "38.25"),  # 5×7 + 0.5×6.50: 5.5 is above 5, so in tier 2
        ("5.0001", "35.00065"),  # 5×7 + 0.0001×6.50
        ("10.25", "69"),  # 5×7 + 5×6.50 + 0.25×6
    ],
)
def test_stripe_graduated_totals(quantity: str, total: str) -> None:
    assert STRIPE.period_total(D(quantity)).amount == D(total)


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),  # no tier entered, no flat fee
        ("1", "17"),  # 1×7 + 10
        ("5", "45"),  # 5×7 + 10
        ("6", "56.50"),  # 5×7 + 10 + 1×6.50 + 5
        ("10", "82.50"),  # 5×7 + 10 + 5×6.50 + 5
        ("11", "90.50"),  # 82.50 + 1×6 + 2
        ("20", "144.50"),  # 82.50 + 10×6 + 2
    ],
)
def test_graduated_flat_fee_is_charged_once_per_tier_entered(quantity: str, total: str) -> None:
    assert WITH_FEES.period_total(D(quantity)).amount == D(total)


def test_period_total_breakdown_has_one_line_per_tier_reached() -> None:
    priced = STRIPE.period_total(D(20))
    assert priced.lines == (
        PriceLine(LineItem.TIER, D(5), D(7), D(0), D(35), 0),  # 5×7
        PriceLine(LineItem.TIER, D(5), D("6.50"), D(0), D("32.50"), 1),  # 5×6.50
        PriceLine(LineItem.TIER, D(10), D(6), D(0), D(60), 2),  # 10×6
    )
    assert sum(line.amount for line in priced.lines) == priced.amount


@pytest.mark.parametrize(
    ("before", "quantity", "charge", "tiers_touched"),
    [
        ("0", "5", "35", [0]),  # 5×7
        ("4", "1", "7", [0]),  # the 5th unit, still tier 1
        ("5", "1", "6.50", [1]),  # the 6th unit opens tier 2
        ("4", "2", "13.50", [0, 1]),  # 1×7 + 1×6.50
        ("9", "2", "12.50", [1, 2]),  # 1×6.50 + 1×6
        ("10", "1", "6", [2]),  # the 11th unit
        ("3", "10", "64.50", [0, 1, 2]),  # 2×7 + 5×6.50 + 3×6 = 14 + 32.50 + 18
        ("5", "0", "0", []),  # an empty event costs nothing
    ],
)
def test_stripe_graduated_incremental_charges(
    before: str, quantity: str, charge: str, tiers_touched: list[int]
) -> None:
    priced = STRIPE.incremental_charge(D(before), D(quantity))
    expected = (
        STRIPE.period_total(D(before) + D(quantity)).amount - STRIPE.period_total(D(before)).amount
    )
    assert priced.amount == expected
    assert priced.amount == D(charge)
    assert [line.tier for line in priced.lines] == tiers_touched
    assert sum(line.amount for line in priced.lines) == priced.amount


def test_incremental_flat_fee_belongs_to_the_event_entering_the_tier() -> None:
    # 5 units used; the 6th enters tier 2: 1×6.50 + 5 flat = 11.50
    entering = WITH_FEES.incremental_charge(D(5), D(1))
    assert entering.amount == D("11.50")
    assert entering.lines == (PriceLine(LineItem.TIER, D(1), D("6.50"), D(5), D("11.50"), 1),)
    # 6 units used; the 7th stays in tier 2 and pays no flat fee again: 1×6.50
    assert WITH_FEES.incremental_charge(D(6), D(1)).amount == D("6.50")


@pytest.mark.parametrize(
    ("tiers", "fields"),
    [
        ((), ["tiers"]),
        ((Tier(D(5), D(7)), Tier(D(5), D(6)), Tier(None, D(5))), ["tiers[1].up_to"]),  # repeat
        ((Tier(D(10), D(7)), Tier(D(5), D(6)), Tier(None, D(5))), ["tiers[1].up_to"]),  # unsorted
        ((Tier(D(0), D(7)), Tier(None, D(6))), ["tiers[0].up_to"]),  # empty first tier
        ((Tier(D(-1), D(7)), Tier(None, D(6))), ["tiers[0].up_to"]),
        ((Tier(D(5), D(7)), Tier(D(10), D(6))), ["tiers[1].up_to"]),  # gap above 10: unpriced
        ((Tier(None, D(7)), Tier(None, D(6))), ["tiers[0].up_to"]),  # open before the last
        ((Tier(D(5), D(-7)), Tier(None, D(6))), ["tiers[0].unit_price"]),  # negative price
        ((Tier(D(5), D(7)), Tier(None, D(6), D("-1"))), ["tiers[1].flat_fee"]),
        ((Tier(D(5), D("NaN")), Tier(None, D(6))), ["tiers[0].unit_price"]),
        (
            # every problem at once, each under its own path
            (Tier(D(5), D(-1)), Tier(D(3), D(6)), Tier(D(9), D(5), D(-2))),
            ["tiers[0].unit_price", "tiers[1].up_to", "tiers[2].flat_fee", "tiers[2].up_to"],
        ),
    ],
)
def test_invalid_tiers_are_refused_naming_each_field(
    tiers: tuple[Tier, ...], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        Graduated(tiers)
    assert sorted(v.field for v in error.value.violations) == sorted(fields)


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(InvalidArgument) as error:
        STRIPE.period_total(D(-1))
    assert [v.field for v in error.value.violations] == ["quantity"]
    with pytest.raises(InvalidArgument) as error:
        STRIPE.incremental_charge(D(-1), D(1))
    assert [v.field for v in error.value.violations] == ["period_to_date"]


def test_graduated_is_an_immutable_value() -> None:
    assert Graduated([Tier(D(5), D(7)), Tier(None, D(6))]) == Graduated(  # type: ignore[arg-type]
        (Tier(D("5.0"), D("7.00")), Tier(None, D(6)))
    )
    with pytest.raises(AttributeError):
        STRIPE.tiers = ()  # type: ignore[misc]
