"""A percentage's free events and free value per period, with its per-event minimum and maximum.

Each table rates a period's events in order: (event value, its charge), the arithmetic in a
comment. The price is 10% of the value + 0.50 per event, at least 1 and at most 20 per event.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    LineItem,
    Percentage,
    build_price_model,
    incremental_charge,
    price_model_to_dict,
)

D = Decimal


def take_rate(free_events: int | None = None, free_value: str | None = None) -> Percentage:
    """10% + 0.50 per event, clamped to [1, 20], with the free allowance given."""
    return Percentage(
        D("0.1"),
        D("0.5"),
        D(1),
        D(20),
        free_events,
        None if free_value is None else D(free_value),
    )


@pytest.mark.parametrize(
    ("model", "events"),
    [
        (
            take_rate(free_events=2),
            [
                ("100", "0"),  # free event 1: no rate, no fee, no minimum
                ("50", "0"),  # free event 2
                ("100", "10.5"),  # 10 + 0.50
                ("0", "1"),  # 0.50 lifted to the minimum
                ("1000", "20"),  # 100.50 cut to the maximum
            ],
        ),
        (
            take_rate(free_value="150"),
            [
                ("100", "0"),  # 100 of the 150 free
                ("40", "0"),  # 140 used
                ("20", "1.5"),  # 10 free, 10 billable: 1 + 0.50
                ("3", "1"),  # 0.30 + 0.50 = 0.80, lifted to the minimum
            ],
        ),
        (
            take_rate(free_value="150"),
            [
                ("100", "0"),
                ("50", "0"),  # reaches the free value exactly: still free
                ("0", "1"),  # the allowance is used up: 0.50, lifted to the minimum
            ],
        ),
        (
            take_rate(free_events=2, free_value="150"),
            [
                ("100", "0"),
                ("100", "5.5"),  # free value runs out first: 50 billable × 0.1 + 0.50
                ("10", "1.5"),  # 1 + 0.50
            ],
        ),
        (
            take_rate(free_events=2, free_value="150"),
            [
                ("10", "0"),
                ("10", "0"),
                ("10", "1.5"),  # free events run out first; the 130 of value left is lost
            ],
        ),
    ],
    ids=["free-events", "free-value", "free-value-exactly", "value-first", "events-first"],
)
def test_free_allowance_event_by_event(model: Percentage, events: list[tuple[str, str]]) -> None:
    value_before = D(0)
    for count, (value, charge) in enumerate(events):
        priced = incremental_charge(model, value_before, D(value), events_before=count)
        assert priced.amount == D(charge), (count, value)
        assert sum((line.amount for line in priced.lines), D(0)) == priced.amount
        value_before += D(value)
    total = sum((D(charge) for _, charge in events), D(0))
    assert model.period_total([D(value) for value, _ in events]).amount == total


def test_the_breakdown_shows_the_free_part() -> None:
    priced = incremental_charge(take_rate(free_value="150"), D(140), D(20), events_before=2)
    assert [(line.item, line.quantity, line.amount) for line in priced.lines] == [
        (LineItem.FREE_VALUE, D(10), D(0)),
        (LineItem.PERCENTAGE, D(10), D(1)),
        (LineItem.FIXED_FEE, D(1), D("0.5")),
    ]
    free_event = incremental_charge(take_rate(free_events=1), D(0), D(80))
    assert [(line.item, line.quantity) for line in free_event.lines] == [
        (LineItem.FREE_EVENTS, D(80))
    ]


def test_the_allowance_round_trips_through_the_dict_form() -> None:
    document = {
        "model": "percentage",
        "rate": "0.1",
        "fixed_fee": "0.5",
        "minimum": "1",
        "maximum": "20",
        "free_events": 2,
        "free_value": "150",
    }
    model = build_price_model(document)
    assert model == take_rate(2, "150")
    assert price_model_to_dict(model) == document
    # A whole-number string is read too, and so is the float a wire Struct turns 2 into.
    assert build_price_model({**document, "free_events": "2"}) == model
    assert build_price_model({**document, "free_events": 2.0}) == model


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"free_events": "1.5"}, "free_events"),
        ({"free_events": 1.5}, "free_events"),
        ({"free_events": -1}, "free_events"),
        ({"free_value": "-1"}, "free_value"),
        ({"free_units": "10"}, "free_units"),  # a percentage counts value, not units
        ({"maximum_spend": "10"}, "maximum_spend"),
    ],
)
def test_bad_allowances_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model({"model": "percentage", "rate": "0.1", **changes})
    assert [v.field for v in error.value.violations] == [field]
