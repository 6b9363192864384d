"""Rate cards: effective-dated versions, the one in force at a timestamp, catalog checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.core.errors import FailedPrecondition, InvalidArgument, NotFound
from rating_service.core.money import PricingUnit
from rating_service.core.pricing import (
    Matrix,
    MatrixCell,
    Meter,
    PerUnit,
    Product,
    RateCard,
    RateCardHistory,
    rate_card_from_dict,
    rate_card_in_force,
    rate_card_to_dict,
    validate_rate_card,
)

D = Decimal
USD = PricingUnit.of_currency("USD")
JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def card(version: int, start: datetime, end: datetime | None, price: str = "1") -> RateCard:
    """A version of the `standard` card pricing `tokens` per unit."""
    return RateCard("standard", version, start, end, USD, {"tokens": PerUnit(D(price))})


V1 = card(1, JAN, FEB, "3")
V2 = card(2, FEB, MAR, "2")
V3 = card(3, MAR, None, "1")
HISTORY = RateCardHistory([V3, V1, V2])  # given in any order


@pytest.mark.parametrize(
    ("at", "version"),
    [
        (JAN, 1),  # effective_from is inclusive
        (FEB - TICK, 1),  # the last microsecond of v1
        (FEB, 2),  # effective_until is exclusive: v2 starts exactly there
        (MAR - TICK, 2),
        (MAR, 3),
        (datetime(2030, 1, 1, tzinfo=UTC), 3),  # open-ended
    ],
)
def test_the_version_in_force_at_the_event_timestamp(at: datetime, version: int) -> None:
    assert HISTORY.in_force_at(at).version == version
    assert rate_card_in_force([V1, V2, V3], at).version == version


def test_no_version_in_force_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as error:
        HISTORY.in_force_at(JAN - TICK)
    assert error.value.reason == "NO_RATE_CARD_IN_FORCE"
    gapped = RateCardHistory([V1, V3])  # nothing from February to March
    with pytest.raises(FailedPrecondition):
        gapped.in_force_at(FEB)


@pytest.mark.parametrize(
    ("versions", "fields"),
    [
        ([V1, card(2, FEB - TICK, None)], ["versions[1].effective_from"]),  # overlaps v1's end
        ([card(1, JAN, None), card(2, MAR, None)], ["versions[1].effective_from"]),  # v1 open
        ([card(2, FEB, None), card(1, JAN, MAR)], ["versions[0].effective_from"]),  # any order
        ([V1, card(1, FEB, None)], ["versions[1].version"]),  # the same version twice
        (
            [V1, RateCard("premium", 2, FEB, None, USD, {"tokens": PerUnit(D(1))})],
            ["versions[1].key"],
        ),
        ([], ["versions"]),
    ],
)
def test_overlapping_or_mismatched_versions_are_refused(
    versions: list[RateCard], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        RateCardHistory(versions)
    assert [v.field for v in error.value.violations] == fields


@pytest.mark.parametrize(
    ("build", "fields"),
    [
        (lambda: card(0, JAN, None), ["version"]),
        (lambda: card(1, FEB, JAN), ["effective_until"]),
        (lambda: card(1, FEB, FEB), ["effective_until"]),  # an empty range
        (lambda: card(1, datetime(2025, 1, 1), None), ["effective_from"]),  # noqa: DTZ001
        (lambda: RateCard("s", 1, JAN, None, USD, {}), ["prices"]),
        (lambda: RateCard("s", 1, JAN, None, USD, {"tokens": "1"}), ["prices.tokens"]),  # type: ignore[dict-item]
    ],
)
def test_invalid_rate_cards_name_the_field(build: Callable[[], object], fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        build()
    assert [v.field for v in error.value.violations] == fields


def test_price_of_a_product_missing_from_the_card() -> None:
    assert V1.price_of("tokens") == PerUnit(D(3))
    with pytest.raises(NotFound) as error:
        V1.price_of("images")
    assert error.value.reason == "PRODUCT_NOT_PRICED"


CATALOG = {
    "tokens": Product("tokens", Meter("llm.completion", "tokens", dimensions=("model",))),
    "seats": Product("seats", Meter("seat.active")),
}


def test_catalog_checks_products_and_matrix_dimensions() -> None:
    bad = RateCard(
        "standard",
        1,
        JAN,
        None,
        USD,
        {
            "tokens": Matrix(("model", "region"), (MatrixCell(("gpt-4o", "eu"), PerUnit(D(1))),)),
            "images": PerUnit(D(1)),
        },
    )
    with pytest.raises(InvalidArgument) as error:
        validate_rate_card(bad, CATALOG)
    assert [v.field for v in error.value.violations] == [
        "prices.tokens.dimensions[1]",
        "prices.images",
    ]
    validate_rate_card(V1, CATALOG)  # a card that fits raises nothing


CARD_DICT: dict[str, object] = {
    "key": "standard",
    "version": 2,
    "effective_from": "2025-02-01T00:00:00+00:00",
    "effective_until": None,
    "pricing_unit": {
        "custom_unit": "credits",
        "invoice_currency": "USD",
        "rate_to_invoice_currency": "0.01",
    },
    "prices": {
        "tokens": {
            "model": "matrix",
            "dimensions": ["model"],
            "cells": [
                {"match": {"model": "gpt-4o"}, "price": {"model": "per_unit", "unit_price": "0.25"}}
            ],
        },
        "seats": {"model": "flat_fee", "amount": "1000", "timing": "in_advance"},
    },
}


def test_rate_card_dict_round_trip() -> None:
    built = rate_card_from_dict(CARD_DICT, CATALOG)
    assert built.pricing_unit == PricingUnit.custom("credits", "USD", D("0.01"))
    assert built.effective_from == FEB
    assert rate_card_to_dict(built) == CARD_DICT
    # YAML gives timestamps as datetimes, and "Z" is accepted
    assert rate_card_from_dict({**CARD_DICT, "effective_from": FEB}) == built
    assert rate_card_from_dict({**CARD_DICT, "effective_from": "2025-02-01T00:00:00Z"}) == built


def test_rate_card_dict_errors_name_every_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        rate_card_from_dict(
            {
                **CARD_DICT,
                "version": "2",
                "effective_from": "2025-02-01",  # no offset: ambiguous
                "pricing_unit": {
                    "custom_unit": "credits",
                    "invoice_currency": "USD",
                    "rate_to_invoice_currency": 0.01,
                },
                "prices": {"tokens": {"model": "per_unit", "unit_price": "-1"}},
            },
            CATALOG,
            "rate_cards[0]",
        )
    assert sorted(v.field for v in error.value.violations) == [
        "rate_cards[0].effective_from",
        "rate_cards[0].prices.tokens.unit_price",
        "rate_cards[0].pricing_unit.rate_to_invoice_currency",
        "rate_cards[0].version",
    ]


def test_rate_card_dict_refuses_unknown_products_with_the_catalog() -> None:
    with pytest.raises(InvalidArgument) as error:
        rate_card_from_dict(
            {**CARD_DICT, "prices": {"images": {"model": "per_unit", "unit_price": "1"}}},
            CATALOG,
        )
    assert [v.field for v in error.value.violations] == ["prices.images"]
