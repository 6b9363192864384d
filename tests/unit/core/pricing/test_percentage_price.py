"""Percentage of an event's value, with a fixed fee and per-event minimum and maximum."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import LineItem, Percentage, PriceLine

D = Decimal

# 20% of the deal value + $0.30 per deal, at least $1 and at most $50 per deal.
TAKE_RATE = Percentage(D("0.2"), D("0.30"), D(1), D(50))


@pytest.mark.parametrize(
    ("value", "price"),
    [
        ("0", "1"),  # 0×0.2 + 0.30 = 0.30, lifted to the $1 minimum
        ("3.5", "1"),  # 3.5×0.2 + 0.30 = 1.00: exactly the minimum
        ("3.55", "1.01"),  # 0.71 + 0.30
        ("100", "20.30"),  # 100×0.2 + 0.30
        ("248.5", "50"),  # 49.70 + 0.30 = 50: exactly the maximum
        ("248.55", "50"),  # 49.71 + 0.30 = 50.01, capped at 50
        ("1000000", "50"),  # capped
    ],
)
def test_event_price_is_clamped_between_minimum_and_maximum(value: str, price: str) -> None:
    priced = TAKE_RATE.event_price(D(value))
    assert priced.amount == D(price)
    assert sum(line.amount for line in priced.lines) == priced.amount


def test_event_price_breakdown_shows_the_adjustment() -> None:
    assert TAKE_RATE.event_price(D(1000)).lines == (
        PriceLine(LineItem.PERCENTAGE, D(1000), D("0.2"), D(0), D(200)),  # 1000×0.2
        PriceLine(LineItem.FIXED_FEE, D(1), D("0.30"), D(0), D("0.30")),
        PriceLine(LineItem.MAXIMUM_ADJUSTMENT, D(0), D(0), D("-150.30"), D("-150.30")),
    )


def test_period_total_is_the_sum_of_event_prices() -> None:
    values = [D(0), D(100), D(1000)]
    # 1 (minimum) + 20.30 + 50 (maximum) = 71.30; P is not a function of Σ values (1100)
    total = TAKE_RATE.period_total(values)
    assert total.amount == D("71.30")
    assert total.amount != TAKE_RATE.event_price(D(1100)).amount
    assert sum(line.amount for line in total.lines) == total.amount
    # the incremental charge of an event is its own price, whatever came before
    assert TAKE_RATE.incremental_charge(D(5000), D(100)).amount == D("20.30")


@pytest.mark.parametrize(
    ("arguments", "fields"),
    [
        ((D("1.2"),), ["rate"]),  # 120%: a rate is a fraction in [0, 1]
        ((D("-0.1"),), ["rate"]),
        ((D("0.2"), D(-1)), ["fixed_fee"]),
        ((D("0.2"), D(0), D(-1)), ["minimum"]),
        ((D("0.2"), D(0), D(10), D(5)), ["maximum"]),  # maximum below minimum
        ((D(2), D(-1), D(-1), D(-2)), ["rate", "fixed_fee", "minimum", "maximum"]),
    ],
)
def test_invalid_percentages_name_every_field(
    arguments: tuple[Any, ...], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        Percentage(*arguments)
    assert [v.field for v in error.value.violations] == fields
