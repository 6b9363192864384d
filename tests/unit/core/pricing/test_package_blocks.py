"""Package pricing: a price per started block of N units, after free units."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import LineItem, Package, PriceLine

D = Decimal

# $5 per block of 1000 units, the first 500 units free.
PACKAGE = Package(D(1000), D(5), D(500))


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),
        ("500", "0"),  # all free
        ("500.5", "5"),  # 0.5 billable → 1 started block × 5
        ("501", "5"),  # 1 billable → 1 block
        ("1500", "5"),  # 1000 billable → exactly 1 block
        ("1501", "10"),  # 1001 billable → 2 blocks
        ("2500", "10"),  # 2000 billable → 2 blocks
        ("2500.001", "15"),  # just over → 3 blocks
    ],
)
def test_package_totals_round_blocks_up(quantity: str, total: str) -> None:
    assert PACKAGE.period_total(D(quantity)).amount == D(total)


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("0", "0"),
        ("0.25", "3"),  # ⌈0.25 / 0.5⌉ = 1 block × 3
        ("0.5", "3"),  # exactly 1 block
        ("0.75", "6"),  # ⌈1.5⌉ = 2 blocks
        ("2", "12"),  # 4 blocks
    ],
)
def test_fractional_block_sizes(quantity: str, total: str) -> None:
    half_hours = Package(D("0.5"), D(3))  # $3 per started half GPU hour
    assert half_hours.period_total(D(quantity)).amount == D(total)


@pytest.mark.parametrize(
    ("before", "quantity", "charge", "items"),
    [
        ("0", "400", "0", [LineItem.FREE_UNITS]),  # within the free units
        ("400", "200", "5", [LineItem.FREE_UNITS, LineItem.BLOCKS]),  # 100 free, then block 1
        ("600", "100", "0", []),  # inside the block already paid
        ("1400", "200", "5", [LineItem.BLOCKS]),  # starts block 2
        ("1400", "2100", "10", [LineItem.BLOCKS]),  # 3000 billable = 3 blocks, 900 = 1: (3−1)×5
    ],
)
def test_package_incremental_charges(
    before: str, quantity: str, charge: str, items: list[LineItem]
) -> None:
    priced = PACKAGE.incremental_charge(D(before), D(quantity))
    assert priced.amount == D(charge)
    assert [line.item for line in priced.lines] == items


def test_package_breakdown() -> None:
    # 2600 units: 500 free, 2100 billable → 3 blocks × 5 = 15
    assert PACKAGE.period_total(D(2600)).lines == (
        PriceLine(LineItem.FREE_UNITS, D(500), D(0), D(0), D(0)),
        PriceLine(LineItem.BLOCKS, D(3), D(5), D(0), D(15)),
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ((D(0), D(5)), "block_size"),
        ((D(-10), D(5)), "block_size"),
        ((D(10), D(-5)), "block_price"),
        ((D(10), D(5), D(-1)), "free_units"),
    ],
)
def test_invalid_packages_name_the_field(arguments: tuple[Any, ...], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        Package(*arguments)
    assert [v.field for v in error.value.violations] == [field]
