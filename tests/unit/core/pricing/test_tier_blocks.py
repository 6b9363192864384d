"""Tiers sold in blocks (each started block charged whole) and package rounding up or down."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    Graduated,
    LineItem,
    Package,
    Tier,
    Volume,
    build_price_model,
    incremental_charge,
    price_model_to_dict,
)
from rating_service.core.pricing.package import PackageRounding

D = Decimal

# Up to 1000 units at $0.01 each, then blocks of 500 units at $2 a block.
GRADUATED_BLOCKS = Graduated((Tier(D(1000), D("0.01")), Tier(None, D(2), block_size=D(500))))
# Up to 1000 units in blocks of 100 at $1, beyond in blocks of 1000 at $5 (all units).
VOLUME_BLOCKS = Volume(
    (Tier(D(1000), D(1), block_size=D(100)), Tier(None, D(5), block_size=D(1000)))
)


@pytest.mark.parametrize(
    ("model", "quantity", "total"),
    [
        (GRADUATED_BLOCKS, "1000", "10"),  # 1000 × 0.01
        (GRADUATED_BLOCKS, "1000.5", "12"),  # 10 + 1 started block × 2
        (GRADUATED_BLOCKS, "1500", "12"),  # the block is full
        (GRADUATED_BLOCKS, "1500.01", "14"),  # a second block starts
        (VOLUME_BLOCKS, "1", "1"),  # ⌈1/100⌉ × 1
        (VOLUME_BLOCKS, "100", "1"),
        (VOLUME_BLOCKS, "101", "2"),
        (VOLUME_BLOCKS, "1000", "10"),  # 10 blocks of 100
        (VOLUME_BLOCKS, "1001", "10"),  # second tier: ⌈1001/1000⌉ = 2 blocks × 5
        (VOLUME_BLOCKS, "2000", "10"),
        (VOLUME_BLOCKS, "2001", "15"),  # 3 blocks × 5
    ],
)
def test_block_tier_totals(model: Graduated | Volume, quantity: str, total: str) -> None:
    assert model.period_total(D(quantity)).amount == D(total)


@pytest.mark.parametrize(
    ("model", "before", "quantity", "charge", "items"),
    [
        (GRADUATED_BLOCKS, "1200", "300", "0", []),  # inside the block already paid
        (GRADUATED_BLOCKS, "1400", "200", "2", [LineItem.TIER_BLOCKS]),  # starts block 2
        (GRADUATED_BLOCKS, "900", "200", "3", [LineItem.TIER, LineItem.TIER_BLOCKS]),  # 1 + 2
        (VOLUME_BLOCKS, "150", "50", "0", []),  # still 2 blocks of 100
        (VOLUME_BLOCKS, "150", "51", "1", [LineItem.TIER_BLOCKS]),  # a third block
        # 1001 = 2 blocks × 5 = 10, less the 10 blocks × 1 given back: 0.
        (VOLUME_BLOCKS, "950", "51", "0", [LineItem.TIER_BLOCKS, LineItem.TIER_BLOCKS]),
    ],
)
def test_block_tier_charges(
    model: Graduated | Volume, before: str, quantity: str, charge: str, items: list[LineItem]
) -> None:
    priced = incremental_charge(model, D(before), D(quantity))
    assert priced.amount == D(charge)
    assert [line.item for line in priced.lines] == items
    assert sum((line.amount for line in priced.lines), D(0)) == priced.amount


def test_a_block_line_counts_blocks_at_the_block_price() -> None:
    lines = GRADUATED_BLOCKS.period_total(D(2100)).lines
    assert [(line.item, line.quantity, line.unit_price, line.amount) for line in lines] == [
        (LineItem.TIER, D(1000), D("0.01"), D(10)),
        (LineItem.TIER_BLOCKS, D(3), D(2), D(6)),  # 1100 units: 3 started blocks
    ]


ROUND_DOWN = Package(D(1000), D(5), rounding=PackageRounding.DOWN)


@pytest.mark.parametrize(
    ("model", "quantity", "total"),
    [
        (ROUND_DOWN, "999", "0"),  # no whole block yet
        (ROUND_DOWN, "1000", "5"),
        (ROUND_DOWN, "1999", "5"),
        (ROUND_DOWN, "2000", "10"),
        (Package(D(1000), D(5), D(500), PackageRounding.DOWN), "1499", "0"),
        (Package(D(1000), D(5), D(500), PackageRounding.DOWN), "1500", "5"),  # 1000 billable
        (Package(D(1000), D(5)), "1001", "10"),  # up, today's behaviour
    ],
)
def test_package_rounding(model: Package, quantity: str, total: str) -> None:
    assert model.period_total(D(quantity)).amount == D(total)


def test_blocks_and_rounding_round_trip_through_the_dict_form() -> None:
    document = {
        "model": "graduated",
        "tiers": [
            {"up_to": "1000", "unit_price": "0.01"},
            {"up_to": None, "block_size": "500", "block_price": "2"},
        ],
    }
    model = build_price_model(document)
    assert model == GRADUATED_BLOCKS
    assert price_model_to_dict(model) == document
    package = {"model": "package", "block_size": "1000", "block_price": "5", "rounding": "down"}
    assert build_price_model(package) == ROUND_DOWN
    assert price_model_to_dict(ROUND_DOWN) == package


@pytest.mark.parametrize(
    ("tier", "fields"),
    [
        ({"up_to": None, "block_size": "0", "block_price": "2"}, ["tiers[0].block_size"]),
        ({"up_to": None, "block_size": "10"}, ["tiers[0].block_price"]),
        ({"up_to": None, "block_price": "2"}, ["tiers[0].block_size"]),
        (
            {"up_to": None, "block_size": "10", "block_price": "2", "unit_price": "1"},
            ["tiers[0].unit_price"],
        ),
    ],
)
def test_bad_block_tiers_name_the_field(tier: dict[str, object], fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model({"model": "volume", "tiers": [tier]})
    assert [v.field for v in error.value.violations] == fields


def test_an_unknown_rounding_is_refused() -> None:
    with pytest.raises(InvalidArgument) as error:
        build_price_model(
            {"model": "package", "block_size": "10", "block_price": "1", "rounding": "nearest"}
        )
    assert [v.field for v in error.value.violations] == ["rounding"]
