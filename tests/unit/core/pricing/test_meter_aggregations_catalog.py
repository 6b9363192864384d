"""Meter aggregations as catalog keys: read, written back, refused, and quoted (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from rating_service.cli.catalog_file import dump_catalog, load_catalog_text, read_catalog_file
from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing.aggregation import Aggregation, TimeUnit
from rating_service.core.pricing.catalog import catalog_from_document, plan_changes
from rating_service.core.pricing.meter import UsageEvent, product_from_dict
from rating_service.core.pricing.quote import UsageLine, quote
from rating_service.core.pricing.window import Window

D = Decimal
NOW = datetime(2026, 12, 3, tzinfo=UTC)
DOCUMENT = read_catalog_file(
    Path(__file__).resolve().parents[4] / "rating_service" / "examples" / "meters.yaml"
)
METERS = catalog_from_document(DOCUMENT)


def test_the_example_reads_every_new_key_and_exports_back_unchanged() -> None:
    meters = {key: p.meter for key, p in METERS.products.items()}
    assert meters["gpu-peak"].aggregation is Aggregation.MAX
    assert meters["active-users"].unique_property == "user_id"
    assert meters["stored-gb"].aggregation is Aggregation.LATEST
    assert meters["gpu-hours"].time_unit is TimeUnit.HOUR
    assert meters["fine-tune-seconds"].corrections is True
    assert meters["daily-peak-sessions"].window is Window.DAY
    again = catalog_from_document(load_catalog_text(dump_catalog(METERS.to_document())))
    assert plan_changes(METERS, again, NOW) == []


@pytest.mark.parametrize(
    ("meter", "field", "says"),
    [
        ({"aggregation": "median", "quantity_property": "q"}, "aggregation", "must be one of"),
        ({"aggregation": "max"}, "quantity_property", "is required by aggregation max"),
        ({"aggregation": "unique_count"}, "unique_property", "is required"),
        (
            {"aggregation": "unique_count", "unique_property": "u", "quantity_property": "q"},
            "quantity_property",
            "is not read by aggregation unique_count",
        ),
        ({"quantity_property": "q", "unique_property": "u"}, "unique_property", "only by"),
        ({"quantity_property": "q", "time_unit": "hour"}, "time_unit", "only by"),
        (
            {"aggregation": "time_weighted_sum", "quantity_property": "q", "time_unit": "week"},
            "time_unit",
            "must be one of",
        ),
        (
            {"aggregation": "latest", "quantity_property": "q", "window": "day"},
            "window",
            "does not apply to aggregation latest",
        ),
        ({"quantity_property": "q", "window": "month"}, "window", "must be one of"),
        (
            {"aggregation": "max", "quantity_property": "q", "corrections": True},
            "corrections",
            "apply only to aggregation sum",
        ),
        ({"quantity_property": "q", "corrections": "yes"}, "corrections", "true or false"),
    ],
)
def test_a_meter_that_cannot_aggregate_is_refused_naming_the_field(
    meter: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        product_from_dict({"key": "p", "meter": {"event_type": "e", **meter}}, "products[0]")
    [violation] = [v for v in refused.value.violations if v.field == f"products[0].meter.{field}"]
    assert says in violation.description


def test_a_percentage_needs_a_summing_meter() -> None:
    document = {
        "products": [DOCUMENT["products"][0]],
        "rate_cards": [
            {
                **DOCUMENT["rate_cards"][0],
                "prices": {"gpu-peak": {"model": "percentage", "rate": "0.1"}},
            }
        ],
    }
    with pytest.raises(InvalidArgument, match="a percentage prices each event's own value"):
        catalog_from_document(document)


def test_a_product_cannot_change_how_its_usage_is_aggregated() -> None:
    products = [dict(p) for p in DOCUMENT["products"]]
    products[0] = {**products[0], "meter": {**products[0]["meter"], "aggregation": "latest"}}
    changed = catalog_from_document({"products": products, "rate_cards": DOCUMENT["rate_cards"]})
    with pytest.raises(InvalidArgument) as refused:
        plan_changes(METERS, changed, NOW)
    assert [v.field for v in refused.value.violations] == ["products[gpu-peak].meter.aggregation"]


def test_corrections_let_a_sum_meter_read_a_negative_quantity() -> None:
    event = UsageEvent("finetune.job", NOW, {"seconds": "-30"})
    measured = METERS.products["fine-tune-seconds"].meter.measure(event)
    assert measured is not None and measured.quantity == D(-30)


def line(product: str, quantity: str) -> UsageLine:
    return UsageLine(product, D(quantity), {})


@pytest.mark.parametrize(
    ("product", "period_to_date", "quantities", "charges", "after"),
    [
        # the peak: 4 → 2 charges nothing, 12 reaches tier 2: P(12) − P(4) = 22 − 8
        ("gpu-peak", ["4"], ["2", "12"], ["0", "14"], "12"),
        # new distinct users add up: 9 + 2 = 11 → P(11) − P(9) = 21 − 18
        ("active-users", ["9"], ["2"], ["3"], "11"),
        # a gauge's reading replaces the quantity: 12 → 5: P(5) − P(12) = 10 − 22
        ("stored-gb", ["12"], ["5"], ["-12"], "5"),
        # GPU-hours add: 10 + 0.5 → P(10.5) − P(10) = 0.5
        ("gpu-hours", ["10"], ["0.5"], ["0.5"], "10.5"),
        # a correction lowers the sum, never below 0: 3 − 5 → 0: −6
        ("fine-tune-seconds", ["3"], ["-5"], ["-6"], "0"),
    ],
)
def test_a_quote_prices_the_aggregated_quantity(
    product: str,
    period_to_date: list[str],
    quantities: list[str],
    charges: list[str],
    after: str,
) -> None:
    result = quote(
        METERS,
        "platform",
        NOW,
        [line(product, q) for q in quantities],
        [line(product, q) for q in period_to_date],
    )
    assert [q.priced.amount for q in result.lines] == [D(c) for c in charges]
    assert result.lines[-1].quantity_after == D(after)
    assert result.lines[-1].aggregation is METERS.products[product].meter.aggregated_by
