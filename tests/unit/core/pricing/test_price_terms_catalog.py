"""Price terms in the catalog dict form, under contract overrides, and in a quote's period lines."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from rating_service.core.contracts import Multiply, Override, ReplaceTiers, effective_price
from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    Graduated,
    Percentage,
    PerUnit,
    Tier,
    Volume,
    build_price_model,
    price_model_to_dict,
)
from rating_service.core.pricing.catalog import catalog_from_document
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms
from rating_service.core.pricing.quote import FIRST_TIER_FEE, MINIMUM_SPEND, UsageLine, quote

D = Decimal
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("price", "fields"),
    [
        ({"model": "per_unit", "unit_price": "1", "prorated": "yes"}, ["prorated"]),
        ({"model": "per_unit", "unit_price": "1", "free_units": "-1"}, ["free_units"]),
        ({"model": "per_unit", "unit_price": "1", "free_amount": 0.5}, ["free_amount"]),  # float
        ({"model": "flat_fee", "amount": "10", "minimum_spend": "5"}, ["minimum_spend"]),
        (
            {
                "model": "matrix",
                "dimensions": ["model"],
                "cells": [
                    {"match": {"model": "a"}, "price": {"model": "per_unit", "unit_price": "1"}}
                ],
                "maximum_spend": "5",
            },
            ["maximum_spend"],
        ),
        (
            {"model": "per_unit", "unit_price": "1", "first_tier_fee_at_zero": True},
            ["first_tier_fee_at_zero"],
        ),
        (
            {"model": "per_unit", "unit_price": "1", "minimum_spend": "5", "maximum_spend": "4"},
            ["maximum_spend"],
        ),
    ],
)
def test_bad_terms_are_refused_naming_the_field(
    price: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model(price, "prices.p")
    assert [v.field for v in error.value.violations] == [f"prices.p.{f}" for f in fields]


def test_a_matrix_cell_takes_terms_and_plain_terms_are_no_terms() -> None:
    matrix = build_price_model(
        {
            "model": "matrix",
            "dimensions": ["model"],
            "cells": [
                {
                    "match": {"model": "a"},
                    "price": {"model": "per_unit", "unit_price": "1", "free_units": "5"},
                }
            ],
        }
    )
    assert price_model_to_dict(matrix)["cells"] == [
        {
            "match": {"model": "a"},
            "price": {"model": "per_unit", "unit_price": "1", "free_units": "5"},
        }
    ]
    # Terms that change nothing leave the bare model (what is stored and exported stays short).
    plain = build_price_model(
        {"model": "per_unit", "unit_price": "1", "free_units": "0", "prorated": False}
    )
    assert plain == PerUnit(D(1))


TIERS = (Tier(D(10), D(1), D(20)), Tier(None, D("0.5")))
TERMED = PriceWithTerms(
    Graduated(TIERS),
    PeriodTerms(
        free_units=D(5),
        free_amount=D(4),
        minimum_spend=D(50),
        maximum_spend=D(100),
        first_tier_fee_at_zero=True,
    ),
)


def test_a_multiplier_scales_amounts_and_keeps_quantities() -> None:
    override = Override.for_product("p", Multiply(D("0.5")), T0)
    assert effective_price(TERMED, "p", (), [override], T0) == PriceWithTerms(
        Graduated((Tier(D(10), D("0.5"), D(10)), Tier(None, D("0.25")))),
        PeriodTerms(
            free_units=D(5),  # a quantity: unchanged
            free_amount=D(2),
            minimum_spend=D(25),
            maximum_spend=D(50),
            first_tier_fee_at_zero=True,
        ),
    )
    blocks = Volume((Tier(None, D(5), block_size=D(100)),))
    assert effective_price(blocks, "p", (), [override], T0) == Volume(
        (Tier(None, D("2.5"), block_size=D(100)),)
    )
    allowance = Percentage(D("0.2"), free_events=3, free_value=D(100))
    assert effective_price(allowance, "p", (), [override], T0) == Percentage(
        D("0.1"), free_events=3, free_value=D(100)
    )


def test_replacing_the_tiers_keeps_the_terms() -> None:
    new_tiers = (Tier(D(20), D(2)), Tier(None, D(1)))
    override = Override.for_product("p", ReplaceTiers(new_tiers), T0)
    assert effective_price(TERMED, "p", (), [override], T0) == PriceWithTerms(
        Graduated(new_tiers), TERMED.terms
    )


CATALOG = catalog_from_document(
    {
        "products": [
            {"key": "storage", "meter": {"event_type": "storage", "quantity_property": "gb"}},
            {"key": "deals", "meter": {"event_type": "deal", "quantity_property": "value"}},
        ],
        "rate_cards": [
            {
                "key": "list",
                "version": 1,
                "effective_from": "2020-01-01T00:00:00+00:00",
                "pricing_unit": "USD",
                "prices": {
                    "storage": price_model_to_dict(TERMED),
                    "deals": {
                        "model": "percentage",
                        "rate": "0.1",
                        "free_events": 1,
                        "minimum_spend": "30",
                    },
                },
            }
        ],
    }
)


def test_a_quote_shows_the_period_lines_its_prices_add() -> None:
    result = quote(
        CATALOG,
        "list",
        T0,
        [UsageLine("storage", D(10), {}), UsageLine("deals", D(100), {})],
        [UsageLine("deals", D(500), {})],  # the free event
    )
    # Storage: 5 free units, 5 × 1 + 20 = 25 less 4 free = 21; T(0) = 20 − 4 = 16; 21 − 16 = 5.
    # Deals: the period-to-date event was the free one; this one pays 10.
    assert [line.priced.amount for line in result.lines] == [D(5), D(10)]
    assert result.total == D(15)
    assert [(p.product_key, p.kind, p.amount) for p in result.period_lines] == [
        ("deals", MINIMUM_SPEND, D(20)),  # 30 − (0 + 10)
        ("storage", FIRST_TIER_FEE, D(16)),
        ("storage", MINIMUM_SPEND, D(29)),  # 50 − (16 + 5)
    ]
