"""Period terms on a price: free units, free amount, maximum spend, first-tier fee at zero.

Each table gives the period total T(q) at both sides of every boundary, with the arithmetic in
a comment, and a few incremental charges with the breakdown lines that explain them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    FlatFee,
    Graduated,
    LineItem,
    Package,
    Percentage,
    PerUnit,
    Tier,
    Volume,
    incremental_charge,
)
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms
from rating_service.core.pricing.spend_limits import minimum_top_up

D = Decimal

STRIPE = (Tier(D(5), D(7)), Tier(D(10), D("6.50")), Tier(None, D(6)))
"""Units 1–5 at $7, 6–10 at $6.50, 11+ at $6."""

# $2 a unit, the first 100 units of each period free.
FREE_100 = PriceWithTerms(PerUnit(D(2)), PeriodTerms(free_units=D(100)))
# Stripe's graduated tiers after 2 free units.
GRADUATED_FREE_2 = PriceWithTerms(Graduated(STRIPE), PeriodTerms(free_units=D(2)))
# $0.50 a unit, the first $10 of each period free.
FREE_10_DOLLARS = PriceWithTerms(PerUnit(D("0.5")), PeriodTerms(free_amount=D(10)))
# $2 a unit, at most $100 a period.
CAPPED_100 = PriceWithTerms(PerUnit(D(2)), PeriodTerms(maximum_spend=D(100)))
# Stripe's volume tiers, at most $100 a period.
VOLUME_CAPPED = PriceWithTerms(Volume(STRIPE), PeriodTerms(maximum_spend=D(100)))
# Everything at once: 10 free units, then $1 a unit, $5 free, at most $50.
ALL_TERMS = PriceWithTerms(
    PerUnit(D(1)), PeriodTerms(free_units=D(10), free_amount=D(5), maximum_spend=D(50))
)

FEE_TIERS = (Tier(D(10), D(1), D(20)), Tier(None, D("0.5")))
"""Up to 10 units at $1 with a $20 flat fee on entering the first tier, then $0.50."""
GRADUATED_AT_ZERO = PriceWithTerms(Graduated(FEE_TIERS), PeriodTerms(first_tier_fee_at_zero=True))
VOLUME_AT_ZERO = PriceWithTerms(
    Volume((Tier(D(10), D(1), D(20)), Tier(None, D("0.5"), D(30)))),
    PeriodTerms(first_tier_fee_at_zero=True),
)
AT_ZERO_FREE_5 = PriceWithTerms(
    Graduated(FEE_TIERS), PeriodTerms(free_units=D(5), first_tier_fee_at_zero=True)
)


@pytest.mark.parametrize(
    ("price", "quantity", "total"),
    [
        (FREE_100, "0", "0"),
        (FREE_100, "100", "0"),  # all free
        (FREE_100, "100.5", "1"),  # 0.5 × 2
        (FREE_100, "101", "2"),  # 1 × 2
        (FREE_100, "150", "100"),  # 50 × 2
        (GRADUATED_FREE_2, "2", "0"),
        (GRADUATED_FREE_2, "7", "35"),  # 5 billable: 5 × 7
        (GRADUATED_FREE_2, "8", "41.50"),  # 6 billable: 35 + 6.50
        (FREE_10_DOLLARS, "19.99", "0"),  # 9.995 − 10 → 0
        (FREE_10_DOLLARS, "20", "0"),  # 10 − 10
        (FREE_10_DOLLARS, "20.01", "0.005"),  # 10.005 − 10
        (FREE_10_DOLLARS, "100", "40"),  # 50 − 10
        (CAPPED_100, "49.5", "99"),
        (CAPPED_100, "50", "100"),  # exactly the maximum
        (CAPPED_100, "50.5", "100"),  # 101 capped
        (CAPPED_100, "1000", "100"),
        (VOLUME_CAPPED, "16", "96"),  # 16 × 6
        (VOLUME_CAPPED, "17", "100"),  # 102 capped
        (ALL_TERMS, "10", "0"),  # free units
        (ALL_TERMS, "15", "0"),  # $5 of units, paid by the free $5
        (ALL_TERMS, "16", "1"),  # 6 − 5
        (ALL_TERMS, "65", "50"),  # 55 − 5 = 50, the maximum exactly
        (ALL_TERMS, "66", "50"),  # 56 − 5 = 51, capped
        (GRADUATED_AT_ZERO, "0", "20"),  # the first tier's fee, owed at zero
        (GRADUATED_AT_ZERO, "5", "25"),  # 5 × 1 + 20
        (GRADUATED_AT_ZERO, "10", "30"),
        (GRADUATED_AT_ZERO, "12", "31"),  # 30 + 2 × 0.5
        (VOLUME_AT_ZERO, "0", "20"),
        (VOLUME_AT_ZERO, "10", "30"),  # 10 × 1 + 20
        (VOLUME_AT_ZERO, "11", "35.5"),  # 11 × 0.5 + 30
        (AT_ZERO_FREE_5, "5", "20"),  # nothing billable: the fee alone
        (AT_ZERO_FREE_5, "6", "21"),  # 1 × 1 + 20
    ],
)
def test_period_totals(price: PriceWithTerms, quantity: str, total: str) -> None:
    priced = price.period_total(D(quantity))
    assert priced.amount == D(total)
    assert sum((line.amount for line in priced.lines), D(0)) == priced.amount


@pytest.mark.parametrize(
    ("price", "before", "quantity", "charge", "items"),
    [
        (FREE_100, "90", "20", "20", [LineItem.FREE_UNITS, LineItem.UNITS]),  # 10 free, 10 × 2
        (FREE_100, "100", "1", "2", [LineItem.UNITS]),
        (FREE_100, "0", "100", "0", [LineItem.FREE_UNITS]),
        # P(30) = 15 less the free 10 = 5; P(10) = 5 is all free.
        (FREE_10_DOLLARS, "10", "20", "5", [LineItem.UNITS, LineItem.FREE_AMOUNT]),
        (FREE_10_DOLLARS, "30", "10", "5", [LineItem.UNITS]),  # the free amount is used up
        # T(51) = 100, T(49) = 98: 2 of the 4 charged, 2 capped.
        (CAPPED_100, "49", "2", "2", [LineItem.UNITS, LineItem.MAXIMUM_SPEND]),
        (CAPPED_100, "60", "5", "0", [LineItem.UNITS, LineItem.MAXIMUM_SPEND]),  # past the cap
        (CAPPED_100, "0", "50", "100", [LineItem.UNITS]),  # reaches it exactly: nothing capped
        # The fee was billed with the period, so the event entering the tier gives it back.
        (GRADUATED_AT_ZERO, "0", "5", "5", [LineItem.TIER, LineItem.FIRST_TIER_FEE]),
        (GRADUATED_AT_ZERO, "5", "7", "6", [LineItem.TIER, LineItem.TIER]),  # 5 × 1 + 2 × 0.5
        # Volume: T(11) − T(0) = 35.5 − 20.
        (
            VOLUME_AT_ZERO,
            "0",
            "11",
            "15.5",
            [LineItem.TIER, LineItem.FIRST_TIER_FEE],
        ),
        (
            AT_ZERO_FREE_5,
            "0",
            "6",
            "1",
            [LineItem.FREE_UNITS, LineItem.TIER, LineItem.FIRST_TIER_FEE],
        ),
    ],
)
def test_incremental_charges(
    price: PriceWithTerms, before: str, quantity: str, charge: str, items: list[LineItem]
) -> None:
    priced = incremental_charge(price, D(before), D(quantity))
    assert priced.amount == D(charge)
    assert [line.item for line in priced.lines] == items
    assert sum((line.amount for line in priced.lines), D(0)) == priced.amount


@pytest.mark.parametrize(
    ("price", "fee"),
    [
        (GRADUATED_AT_ZERO, "20"),
        (VOLUME_AT_ZERO, "20"),
        (AT_ZERO_FREE_5, "20"),
        (PriceWithTerms(Graduated(FEE_TIERS), PeriodTerms(free_units=D(5))), "0"),  # default
        # The free amount pays part of the fee owed at zero: 20 − 15.
        (
            PriceWithTerms(
                Graduated(FEE_TIERS), PeriodTerms(free_amount=D(15), first_tier_fee_at_zero=True)
            ),
            "5",
        ),
        # … and a maximum below it caps it.
        (
            PriceWithTerms(
                Graduated(FEE_TIERS), PeriodTerms(maximum_spend=D(12), first_tier_fee_at_zero=True)
            ),
            "12",
        ),
    ],
)
def test_the_period_fee_is_what_zero_usage_owes(price: PriceWithTerms, fee: str) -> None:
    assert price.period_fee() == D(fee)
    assert price.period_total(D(0)).amount == D(fee)


def test_without_the_option_zero_usage_costs_nothing() -> None:
    # Lago's former convention, still the default: the first event pays the tier's fee.
    plain = Graduated(FEE_TIERS)
    assert plain.period_total(D(0)).amount == 0
    assert incremental_charge(plain, D(0), D(5)).amount == D(25)


@pytest.mark.parametrize(
    ("spent", "minimum", "top_up"),
    [
        ("0", "50", "50"),
        ("49.99", "50", "0.01"),
        ("50", "50", "0"),  # reached exactly
        ("50.01", "50", "0"),
        ("10", None, "0"),  # no minimum
    ],
)
def test_minimum_top_up(spent: str, minimum: str | None, top_up: str) -> None:
    assert minimum_top_up(D(spent), None if minimum is None else D(minimum)) == D(top_up)


@pytest.mark.parametrize(
    ("model", "terms", "field"),
    [
        (FlatFee(D(10)), PeriodTerms(free_units=D(1)), "model"),
        (Package(D(10), D(1)), PeriodTerms(free_units=D(1)), "free_units"),
        (Percentage(D("0.1")), PeriodTerms(free_units=D(1)), "free_units"),
        (Percentage(D("0.1")), PeriodTerms(free_amount=D(1)), "free_amount"),
        (Percentage(D("0.1")), PeriodTerms(maximum_spend=D(1)), "maximum_spend"),
        (Percentage(D("0.1")), PeriodTerms(prorated=True), "prorated"),
        (PerUnit(D(1)), PeriodTerms(first_tier_fee_at_zero=True), "first_tier_fee_at_zero"),
    ],
)
def test_terms_that_do_not_fit_the_model_are_refused(
    model: object, terms: PeriodTerms, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        PriceWithTerms(model, terms)  # type: ignore[arg-type]
    assert [v.field for v in error.value.violations] == [field]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"free_units": D(-1)}, "free_units"),
        ({"free_amount": D(-1)}, "free_amount"),
        ({"minimum_spend": D(-1)}, "minimum_spend"),
        ({"minimum_spend": D(10), "maximum_spend": D("9.99")}, "maximum_spend"),
    ],
)
def test_invalid_terms_name_the_field(arguments: dict[str, Decimal], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        PeriodTerms(**arguments)  # type: ignore[arg-type]
    assert [v.field for v in error.value.violations] == [field]


def test_a_percentage_takes_a_minimum_spend() -> None:
    price = PriceWithTerms(Percentage(D("0.1")), PeriodTerms(minimum_spend=D(5)))
    assert price.period_fee() == 0
    assert incremental_charge(price, D(0), D(30)).amount == D(3)
    assert price.period_total_of_events([D(30), D(20)]).amount == D(5)
