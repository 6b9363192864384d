"""Meters: which events count, their quantity, filters and dimensions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    Meter,
    Product,
    PropertyFilter,
    UsageEvent,
    product_from_dict,
    product_to_dict,
)

D = Decimal
AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

TOKENS = Meter("llm.completion", "tokens", dimensions=("model", "token_type"))
RESOLUTIONS = Meter("ticket.closed", filters=(PropertyFilter("outcome", ("resolved",)),))
GPU = Meter(
    "gpu.job",
    "gpu_hours",
    filters=(PropertyFilter("tier", ("a100", "h100")), PropertyFilter("billable", ("true",))),
)


def event(event_type: str, **properties: str) -> UsageEvent:
    """A usage event at a fixed moment."""
    return UsageEvent(event_type, AT, properties)


@pytest.mark.parametrize(
    ("meter", "usage", "quantity", "dimensions"),
    [
        (
            TOKENS,
            event("llm.completion", tokens="1500", model="gpt-4o", token_type="input"),
            "1500",
            {"model": "gpt-4o", "token_type": "input"},
        ),
        (TOKENS, event("llm.embedding", tokens="1500"), None, None),  # another event type
        (RESOLUTIONS, event("ticket.closed", outcome="resolved"), "1", {}),  # count: 1 per event
        (RESOLUTIONS, event("ticket.closed", outcome="escalated"), None, None),  # filtered out
        (RESOLUTIONS, event("ticket.closed"), None, None),  # no outcome: not resolved
        (RESOLUTIONS, event("ticket.closed", outcome="Resolved"), None, None),  # exact match
        (GPU, event("gpu.job", gpu_hours="0.25", tier="h100", billable="true"), "0.25", {}),
        (GPU, event("gpu.job", gpu_hours="2", tier="t4", billable="true"), None, None),
        (GPU, event("gpu.job", gpu_hours="2", tier="a100", billable="false"), None, None),
        (GPU, event("gpu.job", gpu_hours="0", tier="a100", billable="true"), "0", {}),
    ],
)
def test_measure(
    meter: Meter,
    usage: UsageEvent,
    quantity: str | None,
    dimensions: dict[str, str] | None,
) -> None:
    measured = meter.measure(usage)
    if quantity is None:
        assert measured is None
    else:
        assert measured is not None
        assert measured.quantity == D(quantity)
        assert measured.dimensions == dimensions


@pytest.mark.parametrize(
    ("usage", "field", "words"),
    [
        (event("llm.completion", tokens="10", model="gpt-4o"), "properties.token_type", "missing"),
        (
            event("llm.completion", tokens="10", model="", token_type="input"),
            "properties.model",
            "missing",
        ),
        (event("llm.completion", model="m", token_type="input"), "properties.tokens", "missing"),
        (
            event("llm.completion", tokens="ten", model="m", token_type="input"),
            "properties.tokens",
            "not a decimal",
        ),
        (
            event("llm.completion", tokens="-5", model="m", token_type="input"),
            "properties.tokens",
            "negative",
        ),
        (
            event("llm.completion", tokens="NaN", model="m", token_type="input"),
            "properties.tokens",
            "not a decimal",
        ),
    ],
)
def test_bad_events_are_errors_naming_the_property(
    usage: UsageEvent, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        TOKENS.measure(usage)
    assert [v.field for v in error.value.violations] == [field]
    assert words in error.value.violations[0].description


def test_a_filtered_out_event_is_not_checked_for_dimensions() -> None:
    meter = Meter("chat", "tokens", (PropertyFilter("outcome", ("resolved",)),), ("model",))
    assert meter.measure(event("chat", outcome="abandoned")) is None


def test_event_timestamps_must_be_aware_and_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    usage = UsageEvent("x", datetime(2025, 3, 1, 13, 0, tzinfo=paris), {})
    assert usage.timestamp == AT
    assert usage.timestamp.utcoffset() == timedelta(0)
    with pytest.raises(InvalidArgument) as error:
        UsageEvent("x", datetime(2025, 3, 1), {})  # noqa: DTZ001 - naive on purpose
    assert [v.field for v in error.value.violations] == ["timestamp"]


@pytest.mark.parametrize(
    ("build", "fields"),
    [
        (lambda: Meter(""), ["event_type"]),
        (lambda: Meter("x", ""), ["quantity_property"]),
        (lambda: Meter("x", dimensions=("model", "model")), ["dimensions[1]"]),
        (lambda: Meter("x", filters=(PropertyFilter("outcome", ()),)), ["filters[0].one_of"]),
        (lambda: Meter("x", filters=(PropertyFilter("", ("a",)),)), ["filters[0].property"]),
        (lambda: PropertyFilter("outcome", "resolved"), ["one_of"]),  # type: ignore[arg-type]
    ],
)
def test_invalid_meters_name_the_field(build: Callable[[], object], fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        build()
    assert [v.field for v in error.value.violations] == fields


def test_product_dict_round_trip() -> None:
    data: dict[str, object] = {
        "key": "support_resolutions",
        "name": "Resolved tickets",
        "meter": {
            "event_type": "ticket.closed",
            "filters": [
                {"property": "outcome", "equals": "resolved"},
                {"property": "channel", "one_of": ["chat", "email"]},
            ],
            "dimensions": ["channel"],
        },
    }
    product = product_from_dict(data)
    assert product == Product(
        "support_resolutions",
        Meter(
            "ticket.closed",
            None,
            (
                PropertyFilter("outcome", ("resolved",)),
                PropertyFilter("channel", ("chat", "email")),
            ),
            ("channel",),
        ),
        "Resolved tickets",
    )
    assert product_to_dict(product) == data


def test_product_dict_errors_name_every_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        product_from_dict(
            {
                "key": "",
                "meter": {
                    "event_type": "x",
                    "quantity": "tokens",
                    "filters": [{"property": "outcome", "equals": 1}],
                    "dimensions": ["model", "model"],
                },
            },
            "products[2]",
        )
    assert sorted(v.field for v in error.value.violations) == [
        "products[2].key",
        "products[2].meter.filters[0].equals",
        "products[2].meter.quantity",
    ]
