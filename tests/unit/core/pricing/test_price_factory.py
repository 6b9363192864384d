"""The factory: price models from plain dicts (catalog / proto shape) and back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    MODEL_NAMES,
    BillingTiming,
    FlatFee,
    Graduated,
    Matrix,
    MatrixCell,
    Package,
    Percentage,
    PerUnit,
    Tier,
    Volume,
    build_price_model,
    price_model_to_dict,
)
from rating_service.core.pricing.seat_fee import SeatFee

D = Decimal

STRIPE_TIERS = [
    {"up_to": "5", "unit_price": "7"},
    {"up_to": "10", "unit_price": "6.50"},
    {"up_to": None, "unit_price": "6"},
]

EXAMPLES: list[tuple[dict[str, object], object]] = [
    ({"model": "per_unit", "unit_price": "0.0000025"}, PerUnit(D("0.0000025"))),
    (
        {"model": "flat_fee", "amount": "49.00", "timing": "in_advance"},
        FlatFee(D(49), BillingTiming.IN_ADVANCE),
    ),
    (
        {"model": "graduated", "tiers": STRIPE_TIERS},
        Graduated((Tier(D(5), D(7)), Tier(D(10), D("6.5")), Tier(None, D(6)))),
    ),
    (
        {
            "model": "seat_fee",
            "per_seat": {"model": "graduated", "tiers": STRIPE_TIERS},
            "timing": "in_advance",
        },
        SeatFee(Graduated((Tier(D(5), D(7)), Tier(D(10), D("6.5")), Tier(None, D(6))))),
    ),
    (
        {
            "model": "volume",
            "tiers": [
                {"up_to": "1000", "unit_price": "0.01", "flat_fee": "5"},
                {"up_to": None, "unit_price": "0.008"},
            ],
        },
        Volume((Tier(D(1000), D("0.01"), D(5)), Tier(None, D("0.008")))),
    ),
    (
        {"model": "package", "block_size": "1000", "block_price": "2", "free_units": "500"},
        Package(D(1000), D(2), D(500)),
    ),
    (
        {
            "model": "percentage",
            "rate": "0.2",
            "fixed_fee": "0.30",
            "minimum": "1",
            "maximum": "50",
        },
        Percentage(D("0.2"), D("0.3"), D(1), D(50)),
    ),
    (
        {
            "model": "matrix",
            "dimensions": ["model", "token_type"],
            "cells": [
                {
                    "match": {"model": "gpt-4o", "token_type": "input"},
                    "price": {"model": "per_unit", "unit_price": "0.0000025"},
                },
                {
                    "match": {"model": "gpt-4o", "token_type": "output"},
                    "price": {"model": "graduated", "tiers": STRIPE_TIERS},
                },
            ],
        },
        Matrix(
            ("model", "token_type"),
            (
                MatrixCell(("gpt-4o", "input"), PerUnit(D("0.0000025"))),
                MatrixCell(
                    ("gpt-4o", "output"),
                    Graduated((Tier(D(5), D(7)), Tier(D(10), D("6.5")), Tier(None, D(6)))),
                ),
            ),
        ),
    ),
]


@pytest.mark.parametrize(("data", "model"), EXAMPLES, ids=lambda value: str(value)[:30])
def test_every_model_builds_from_its_dict_and_round_trips(
    data: dict[str, object], model: object
) -> None:
    built = build_price_model(data)
    assert built == model
    assert price_model_to_dict(built) == data
    assert build_price_model(price_model_to_dict(built)) == built


def test_every_model_name_has_an_example() -> None:
    assert sorted(str(data["model"]) for data, _ in EXAMPLES) == sorted(MODEL_NAMES)


def test_ints_are_accepted_as_yaml_writes_them() -> None:
    built = build_price_model(
        {"model": "graduated", "tiers": [{"up_to": 5, "unit_price": 7}, {"unit_price": 6}]}
    )
    assert built == Graduated((Tier(D(5), D(7)), Tier(None, D(6))))


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"model": "tiered", "tiers": []}, ["model"]),  # unknown model name
        ({"unit_price": "1"}, ["model"]),  # no model at all
        ({"model": "per_unit"}, ["unit_price"]),  # required field missing
        ({"model": "per_unit", "unit_price": 0.1}, ["unit_price"]),  # a float, from YAML `0.1`
        ({"model": "per_unit", "unit_price": "1", "currency": "USD"}, ["currency"]),  # unknown
        ({"model": "flat_fee", "amount": "1", "timing": "monthly"}, ["timing"]),
        (
            {"model": "seat_fee", "per_seat": {"model": "package"}},
            ["per_seat.block_size", "per_seat.block_price"],
        ),
        (
            {"model": "seat_fee", "per_seat": {"model": "flat_fee", "amount": "1"}},
            ["per_seat.model"],
        ),
        ({"model": "seat_fee", "timing": "weekly"}, ["per_seat", "timing"]),
        (
            {
                "model": "graduated",
                "tiers": [
                    {"up_to": "5", "unit_price": "abc"},
                    {"up_to": "NaN", "unit_price": "6.5"},
                    {"up_to": None, "unit_price": 6.0},
                ],
            },
            ["tiers[0].unit_price", "tiers[1].up_to", "tiers[2].unit_price"],  # all at once
        ),
        (
            {
                "model": "volume",
                "tiers": [
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": "5", "unit_price": "1"},
                    {"unit_price": "1"},
                ],
            },
            ["tiers[1].up_to"],  # unsorted, reported by the model with the dict's path
        ),
        (
            {"model": "volume", "tiers": [{"up_to": "5", "price": "1"}]},
            ["tiers[0].price", "tiers[0].unit_price"],
        ),
        ({"model": "volume", "tiers": "5:1"}, ["tiers"]),
        ({"model": "package", "block_size": "0", "block_price": "1"}, ["block_size"]),
        ({"model": "percentage", "rate": "20"}, ["rate"]),  # 20 is not a fraction
        (
            {
                "model": "matrix",
                "dimensions": ["model", "token_type"],
                "cells": [
                    {"match": {"model": "a"}, "price": {"model": "per_unit", "unit_price": "1"}},
                    {
                        "match": {"model": "a", "token_type": "in", "region": "eu"},
                        "price": {"model": "per_unit", "unit_price": "1"},
                    },
                    {
                        "match": {"model": "b", "token_type": "in"},
                        "price": {"model": "per_unit", "unit_price": "-1"},
                    },
                    {"match": {"model": "c", "token_type": "in"}, "price": {"model": "unit"}},
                ],
            },
            [
                "cells[0].match.token_type",
                "cells[1].match.region",
                "cells[2].price.unit_price",
                "cells[3].price.model",
            ],
        ),
        (
            {
                "model": "matrix",
                "dimensions": ["model"],
                "cells": [
                    {"match": {"model": "a"}, "price": {"model": "per_unit", "unit_price": "1"}},
                    {"match": {"model": "a"}, "price": {"model": "per_unit", "unit_price": "2"}},
                ],
            },
            ["cells[1].match"],  # a duplicate cell, named by its dict field
        ),
    ],
)
def test_invalid_dicts_name_every_field(data: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model(data)
    assert sorted(v.field for v in error.value.violations) == sorted(fields)


def test_a_prefix_places_fields_where_the_catalog_has_them() -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model(
            {
                "model": "graduated",
                "tiers": [{"up_to": "5", "unit_price": "-7"}, {"unit_price": "6"}],
            },
            "prices.tokens",
        )
    assert [v.field for v in error.value.violations] == ["prices.tokens.tiers[0].unit_price"]


def test_an_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model({"model": "stairstep"})
    assert "graduated" in error.value.violations[0].description
