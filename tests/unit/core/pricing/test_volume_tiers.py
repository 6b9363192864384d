"""Volume tiers: every unit at the price of the tier the period has reached."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import LineItem, PriceLine, Tier, Volume

D = Decimal

# Stripe's documented example: units 1–5 at $7, 6–10 at $6.50, 11+ at $6.
STRIPE = Volume((Tier(D(5), D(7)), Tier(D(10), D("6.50")), Tier(None, D(6))))

# With flat fees: $10 for tier 1, $5 for tier 2, $2 for tier 3 (only the reached tier's fee).
WITH_FEES = Volume((Tier(D(5), D(7), D(10)), Tier(D(10), D("6.50"), D(5)), Tier(None, D(6), D(2))))


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),  # nothing used: no tier reached
        ("1", "7"),  # 1×7
        ("5", "35"),  # 5×7
        ("6", "39"),  # 6×6.50 (Stripe: $39)
        ("10", "65"),  # 10×6.50
        ("11", "66"),  # 11×6
        ("20", "120"),  # 20×6 (Stripe: $120)
        ("4.5", "31.5"),  # 4.5×7
        ("5.5", "35.75"),  # 5.5 is above 5: 5.5×6.50
        ("10.5", "63"),  # 10.5×6
    ],
)
def test_stripe_volume_totals(quantity: str, total: str) -> None:
    assert STRIPE.period_total(D(quantity)).amount == D(total)


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),  # no tier, no fee
        ("5", "45"),  # 5×7 + 10
        ("6", "44"),  # 6×6.50 + 5
        ("10", "70"),  # 10×6.50 + 5
        ("11", "68"),  # 11×6 + 2
    ],
)
def test_volume_flat_fee_is_the_reached_tiers_only(quantity: str, total: str) -> None:
    assert WITH_FEES.period_total(D(quantity)).amount == D(total)


@pytest.mark.parametrize(
    ("before", "quantity", "charge"),
    [
        ("0", "5", "35"),  # 5×7
        ("4", "1", "7"),  # same tier: 1×7
        ("5", "1", "4"),  # 6×6.50 − 5×7 = 39 − 35
        ("9", "1", "6.50"),  # same tier: 1×6.50
        ("10", "1", "1"),  # 11×6 − 10×6.50 = 66 − 65
        ("9", "2", "7.50"),  # 11×6 − 9×6.50 = 66 − 58.50
        ("10", "0", "0"),
    ],
)
def test_stripe_volume_incremental_charges(before: str, quantity: str, charge: str) -> None:
    priced = STRIPE.incremental_charge(D(before), D(quantity))
    assert priced.amount == D(charge)
    assert sum(line.amount for line in priced.lines) == priced.amount


def test_crossing_into_a_cheaper_tier_can_be_a_credit() -> None:
    # Tier 1 up to 100 at $1, then everything at $0.50: the 101st unit re-prices the first 100.
    tiers = Volume((Tier(D(100), D(1)), Tier(None, D("0.50"))))
    priced = tiers.incremental_charge(D(100), D(1))
    # 101×0.50 − 100×1 = 50.50 − 100 = −49.50
    assert priced.amount == D("-49.50")
    assert priced.lines == (
        PriceLine(LineItem.TIER, D(101), D("0.50"), D(0), D("50.50"), 1),
        PriceLine(LineItem.TIER, D(-100), D(1), D(0), D(-100), 0),
    )


def test_crossing_tiers_gives_back_the_old_flat_fee() -> None:
    # 5 used (5×7 + 10 = 45); one more reaches tier 2 (6×6.50 + 5 = 44): 44 − 45 = −1
    priced = WITH_FEES.incremental_charge(D(5), D(1))
    assert priced.amount == D(-1)
    assert priced.lines[1] == PriceLine(LineItem.TIER, D(-5), D(7), D(-10), D(-45), 0)


@pytest.mark.parametrize(
    ("tiers", "fields"),
    [
        ((Tier(D(10), D(7)), Tier(D(5), D(6)), Tier(None, D(5))), ["tiers[1].up_to"]),
        ((Tier(D(5), D(7)),), ["tiers[0].up_to"]),  # a single closed tier leaves a gap
        ((Tier(D(5), D(7)), Tier(None, D("-6"))), ["tiers[1].unit_price"]),
    ],
)
def test_invalid_volume_tiers_name_the_field(tiers: tuple[Tier, ...], fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        Volume(tiers)
    assert [v.field for v in error.value.violations] == fields
