"""Contract overrides: replace, multiply, replace tiers; product over tag; effective dating."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from rating_service.core.contracts import (
    OVERRIDE_DOES_NOT_FIT,
    EffectivePrices,
    Multiply,
    Override,
    OverrideAction,
    ReplacePrice,
    ReplaceTiers,
    effective_price,
    override_from_dict,
    override_to_dict,
)
from rating_service.core.errors import FailedPrecondition, InvalidArgument
from rating_service.core.pricing import (
    BillingTiming,
    FlatFee,
    Graduated,
    Matrix,
    MatrixCell,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    Tier,
    Volume,
)
from tests.unit.core.contracts.builders import T0, at

D = Decimal
BASE = PerUnit(D("0.002"))
DAY_ONE = at(1)
STRIPE = (Tier(D(5), D(7)), Tier(D(10), D("6.50")), Tier(None, D(6)))


def for_gpt(action: OverrideAction, start: datetime = T0, end: datetime | None = None) -> Override:
    return Override.for_product("gpt", action, start, end)


def for_llm(action: OverrideAction, start: datetime = T0, end: datetime | None = None) -> Override:
    return Override.for_tag("llm", action, start, end)


def price(
    overrides: list[Override], base: PriceModel = BASE, moment: datetime = DAY_ONE
) -> PriceModel:
    return effective_price(base, "gpt", {"llm", "text"}, overrides, moment)


def test_no_override_keeps_the_rate_card_price() -> None:
    assert price([]) is BASE


def test_replace_price() -> None:
    assert price([for_gpt(ReplacePrice(PerUnit(D("0.001"))))]) == PerUnit(D("0.001"))


# A multiplier scales every amount of every model; quantities (bounds, block sizes) stay.
@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (PerUnit(D("0.002")), PerUnit(D("0.0016"))),  # 0.002 × 0.8
        (
            FlatFee(D(50), BillingTiming.IN_ADVANCE),
            FlatFee(D(40), BillingTiming.IN_ADVANCE),  # 50 × 0.8
        ),
        (
            Graduated((Tier(D(5), D(7), D(10)), Tier(None, D(6)))),
            Graduated((Tier(D(5), D("5.6"), D(8)), Tier(None, D("4.8")))),  # 7×0.8, fee 10×0.8
        ),
        (
            Volume(STRIPE),
            Volume((Tier(D(5), D("5.6")), Tier(D(10), D("5.2")), Tier(None, D("4.8")))),
        ),
        (
            Package(D(1000), D(2), D(500)),
            Package(D(1000), D("1.6"), D(500)),  # block price only: 2 × 0.8
        ),
        (
            Percentage(D("0.2"), D("0.30"), D(1), D(50)),
            Percentage(D("0.16"), D("0.24"), D("0.8"), D(40)),  # rate, fee, min, max all × 0.8
        ),
        (
            Matrix(
                ("model", "token_type"),
                (
                    MatrixCell(("gpt", "input"), PerUnit(D("0.000005"))),
                    MatrixCell(("gpt", "output"), Volume(STRIPE)),
                ),
            ),
            Matrix(
                ("model", "token_type"),
                (
                    MatrixCell(("gpt", "input"), PerUnit(D("0.000004"))),
                    MatrixCell(
                        ("gpt", "output"),
                        Volume((Tier(D(5), D("5.6")), Tier(D(10), D("5.2")), Tier(None, D("4.8")))),
                    ),
                ),
            ),
        ),
    ],
    ids=["per_unit", "flat_fee", "graduated", "volume", "package", "percentage", "matrix"],
)
def test_a_multiplier_scales_every_amount(base: PriceModel, expected: PriceModel) -> None:
    assert price([for_gpt(Multiply(D("0.8")))], base) == expected


def test_a_multiplier_of_the_stripe_example() -> None:
    # Graduated Stripe tiers at 20% off: 6 units were 41.50 (5×7 + 6.50), now 41.50 × 0.8 = 33.20.
    discounted = price([for_gpt(Multiply(D("0.8")))], Graduated(STRIPE))
    assert isinstance(discounted, Graduated)
    assert discounted.period_total(D(6)).amount == D("33.20")


def test_a_multiplier_taking_a_rate_above_100_percent_does_not_fit() -> None:
    # 0.8 × 1.5 = 1.2: a percentage rate cannot exceed 1.
    with pytest.raises(FailedPrecondition) as refused:
        price([for_gpt(Multiply(D("1.5")))], Percentage(D("0.8")))
    assert refused.value.reason == OVERRIDE_DOES_NOT_FIT


@pytest.mark.parametrize("model", [Graduated, Volume])
def test_replace_tiers_keeps_the_model(model: type[Graduated] | type[Volume]) -> None:
    tiers = (Tier(D(100), D(1)), Tier(None, D("0.5")))
    assert price([for_gpt(ReplaceTiers(tiers))], model(STRIPE)) == model(tiers)


def test_replace_tiers_of_a_per_unit_price_does_not_fit() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        price([for_gpt(ReplaceTiers(STRIPE))])
    assert refused.value.reason == OVERRIDE_DOES_NOT_FIT


def test_product_key_overrides_shadow_tag_overrides() -> None:
    by_tag = for_llm(Multiply(D("0.5")))
    by_key = for_gpt(Multiply(D("0.9")))
    # Only the product's own 0.9 applies: 0.002 × 0.9 = 0.0018 (not × 0.5 too).
    assert price([by_tag, by_key]) == PerUnit(D("0.0018"))
    # Without the product override, the tag's applies: 0.002 × 0.5 = 0.001.
    assert price([by_tag]) == PerUnit(D("0.001"))
    # A tag the product does not carry changes nothing.
    other = Override.for_tag("image", Multiply(D("0.1")), T0)
    assert price([other]) == BASE


def test_a_product_override_not_in_force_does_not_shadow_the_tag() -> None:
    later = for_gpt(Multiply(D("0.9")), at(10))
    assert price([later, for_llm(Multiply(D("0.5")))], moment=at(1)) == PerUnit(D("0.001"))


def test_overrides_of_several_tags_combine() -> None:
    # 0.002 × 0.5 (llm) × 0.8 (text) = 0.0008
    text = Override.for_tag("text", Multiply(D("0.8")), T0)
    assert price([for_llm(Multiply(D("0.5"))), text]) == PerUnit(D("0.0008"))


def test_replacement_first_then_multipliers_multiply() -> None:
    overrides = [
        for_gpt(Multiply(D("0.9"))),
        for_gpt(ReplacePrice(PerUnit(D("0.01")))),
        for_gpt(Multiply(D("0.8"))),
    ]
    # 0.01 × 0.9 × 0.8 = 0.0072
    assert price(overrides) == PerUnit(D("0.0072"))


def test_then_tiers_replace_those_of_the_replacement() -> None:
    tiers = (Tier(D(100), D(1)), Tier(None, D("0.5")))
    overrides = [for_gpt(ReplaceTiers(tiers)), for_gpt(ReplacePrice(Volume(STRIPE)))]
    assert price(overrides) == Volume(tiers)


def test_the_latest_starting_replacement_wins_then_the_later_listed() -> None:
    early = for_gpt(ReplacePrice(PerUnit(D(1))), at(-10))
    late = for_gpt(ReplacePrice(PerUnit(D(2))), at(-5))
    also_late = for_gpt(ReplacePrice(PerUnit(D(3))), at(-5))
    assert price([late, early]) == PerUnit(D(2))
    assert price([late, also_late, early]) == PerUnit(D(3))


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(9.999), "0.002"),  # before effective_from
        (at(10), "0.001"),  # effective_from is inclusive
        (at(19.999), "0.001"),
        (at(20), "0.002"),  # effective_until is exclusive
    ],
)
def test_effective_dating_at_the_boundaries(moment: datetime, expected: str) -> None:
    half = for_gpt(Multiply(D("0.5")), at(10), at(20))
    assert price([half], moment=moment) == PerUnit(D(expected))


def test_an_override_names_exactly_one_target() -> None:
    with pytest.raises(InvalidArgument):
        Override("gpt", "llm", T0, None, Multiply(D(1)))
    with pytest.raises(InvalidArgument):
        Override(None, None, T0, None, Multiply(D(1)))


def test_bad_actions_are_refused_when_built() -> None:
    with pytest.raises(InvalidArgument):
        Multiply(D("-0.1"))
    with pytest.raises(InvalidArgument):
        ReplaceTiers((Tier(D(5), D(1)),))  # last tier not open


EXAMPLES = [
    {"product_key": "gpt", "effective_from": "2025-01-01T00:00:00+00:00", "multiplier": "0.8"},
    {
        "tag": "llm",
        "effective_from": "2025-01-01T00:00:00+00:00",
        "effective_until": "2025-07-01T00:00:00+00:00",
        "replace_price": {"model": "per_unit", "unit_price": "0.001"},
    },
    {
        "product_key": "gpt",
        "effective_from": "2025-01-01T00:00:00+00:00",
        "replace_tiers": [
            {"up_to": "1000", "unit_price": "0.01"},
            {"up_to": None, "unit_price": "0.008"},
        ],
    },
]


@pytest.mark.parametrize("data", EXAMPLES)
def test_dict_round_trip(data: dict[str, object]) -> None:
    override = override_from_dict(data)
    assert override_to_dict(override) == data
    assert override_from_dict(override_to_dict(override)) == override


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"effective_from": "2025-01-01T00:00:00Z", "multiplier": "1"}, "overrides[0].product_key"),
        (
            {"product_key": "gpt", "effective_from": "2025-01-01", "multiplier": "1"},
            "overrides[0].effective_from",  # no offset
        ),
        (
            {"product_key": "gpt", "effective_from": "2025-01-01T00:00:00Z", "multiplier": 0.8},
            "overrides[0].multiplier",  # a float
        ),
        (
            {"product_key": "gpt", "effective_from": "2025-01-01T00:00:00Z"},
            "overrides[0].multiplier",  # no action
        ),
        (
            {
                "product_key": "gpt",
                "effective_from": "2025-01-01T00:00:00Z",
                "replace_tiers": [{"up_to": "5", "unit_price": "x"}, {"unit_price": "1"}],
            },
            "overrides[0].replace_tiers[0].unit_price",
        ),
        (
            {
                "product_key": "gpt",
                "effective_from": "2025-01-01T00:00:00Z",
                "replace_price": {"model": "per_unit", "unit_price": "-1"},
            },
            "overrides[0].replace_price.unit_price",
        ),
        (
            {
                "product_key": "gpt",
                "effective_from": "2025-02-01T00:00:00Z",
                "effective_until": "2025-01-01T00:00:00Z",
                "multiplier": "1",
            },
            "overrides[0].effective_until",
        ),
        (
            {
                "product_key": "gpt",
                "effective_from": "2025-01-01T00:00:00Z",
                "multiplier": "1",
                "multipler": "1",
            },
            "overrides[0].multipler",  # a typo is not silently ignored
        ),
    ],
)
def test_dict_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        override_from_dict(data, "overrides[0]")
    assert field in [violation.field for violation in refused.value.violations]


def test_a_contract_builds_each_effective_price_once_for_the_overrides_in_force() -> None:
    half = for_gpt(Multiply(D("0.5")), at(10), at(20))
    prices = EffectivePrices([half, for_llm(Multiply(D("0.8")))])
    first = prices.price(BASE, "gpt", {"llm"}, at(10))
    assert first == effective_price(BASE, "gpt", {"llm"}, [half], at(10)) == PerUnit(D("0.001"))
    assert prices.price(BASE, "gpt", {"llm"}, at(15)) is first  # built once, kept
    # Another moment with other overrides in force, another base price: built afresh.
    assert prices.price(BASE, "gpt", {"llm"}, at(20)) == PerUnit(D("0.0016"))
    new_card = PerUnit(D("0.004"))
    assert prices.price(new_card, "gpt", {"llm"}, at(15)) == PerUnit(D("0.002"))
    assert prices.price(BASE, "text-only", {"text"}, at(15)) is BASE  # nothing in force
