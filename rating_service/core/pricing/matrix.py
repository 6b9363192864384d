"""Matrix (dimensional) pricing: a price model per combination of dimension values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, TypeAlias

from rating_service.core.errors import FieldViolation, InvalidArgument, ViolationCollector
from rating_service.core.pricing.breakdown import ZERO, PricedAmount
from rating_service.core.pricing.constraints import priced_exactly, require_quantity
from rating_service.core.pricing.flat_fee import FlatFee
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.package import Package
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_terms import PriceWithTerms
from rating_service.core.pricing.volume import Volume

CellPriceModel: TypeAlias = (
    PerUnit | FlatFee | Graduated | Volume | Package | Percentage | PriceWithTerms
)
"""What a matrix cell may hold: any price model but another matrix, with its period terms."""

CellUsage: TypeAlias = Decimal | Sequence[Decimal]
"""A cell's period usage: its period-to-date quantity, or its events' values (percentage)."""

UNPRICED_DIMENSIONS = "UNPRICED_DIMENSIONS"
"""ErrorInfo reason when an event's dimension values name no cell of the matrix."""


@dataclass(frozen=True, slots=True)
class MatrixCell:
    """The price of one combination of dimension values, given in the matrix's dimension order."""

    values: tuple[str, ...]
    price: CellPriceModel

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))


@dataclass(frozen=True, slots=True)
class Matrix:
    """A price per combination of dimension values (e.g. model × token_type).

    Period-to-date quantity is tracked per cell, each cell's price model sees only its own
    cell's quantity, and the period total is the sum of the cells' totals. A combination with
    no cell is an error, never a silent zero.
    """

    MODEL: ClassVar[str] = "matrix"

    dimensions: tuple[str, ...]
    cells: tuple[MatrixCell, ...]
    _index: dict[tuple[str, ...], CellPriceModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        object.__setattr__(self, "cells", tuple(self.cells))
        violations = ViolationCollector()
        _check_dimensions(self.dimensions, violations)
        index: dict[tuple[str, ...], CellPriceModel] = {}
        first_seen: dict[tuple[str, ...], int] = {}
        if not self.cells:
            violations.add("cells", "at least one cell is required")
        for position, cell in enumerate(self.cells):
            path = f"cells[{position}]"
            if not isinstance(cell, MatrixCell):
                violations.add(path, f"must be a MatrixCell, got {type(cell).__name__}")
                continue
            values = tuple(cell.values)
            if len(values) != len(self.dimensions) or not all(
                isinstance(value, str) and value for value in values
            ):
                violations.add(
                    f"{path}.values",
                    f"must give one non-empty value for each of {', '.join(self.dimensions)}",
                )
                continue
            if not isinstance(cell.price, CellPriceModel):
                violations.add(
                    f"{path}.price",
                    f"must be a price model other than a matrix, got {type(cell.price).__name__}",
                )
                continue
            if values in first_seen:
                violations.add(
                    f"{path}.values",
                    f"{_describe(self.dimensions, values)} is already priced by"
                    f" cells[{first_seen[values]}]",
                )
                continue
            first_seen[values] = position
            index[values] = cell.price
        violations.raise_if_any("invalid matrix price")
        object.__setattr__(self, "_index", index)

    def cell_for(self, dimensions: Mapping[str, str]) -> tuple[str, ...]:
        """The cell an event's dimension values select, or InvalidArgument naming what is wrong."""
        try:
            key = tuple([dimensions[name] for name in self.dimensions])
        except KeyError:
            missing = [name for name in self.dimensions if name not in dimensions]
            raise InvalidArgument(
                f"missing dimension {', '.join(missing)}: the price depends on it",
                [FieldViolation(f"dimensions.{name}", "missing") for name in missing],
            ) from None
        if key not in self._index:
            raise _unpriced(self.dimensions, key)
        return key

    def price_of(self, cell: tuple[str, ...]) -> CellPriceModel:
        """The price model of a cell named by its dimension values."""
        price = self._index.get(tuple(cell))
        if price is None:
            raise _unpriced(self.dimensions, tuple(cell))
        return price

    def period_total(self, usage: Mapping[tuple[str, ...], CellUsage]) -> PricedAmount:
        """The sum of every used cell's period total, each line labelled with its cell.

        For a percentage cell, give the events' values (a single Decimal is one event); for any
        other cell, give its period-to-date quantity (a sequence of event quantities is summed).
        """
        parts = [self._cell_total(cell, cell_usage) for cell, cell_usage in usage.items()]
        return PricedAmount(
            priced_exactly(lambda: sum((part.amount for part in parts), ZERO)),
            tuple(line for part in parts for line in part.lines),
        )

    def incremental_charge(
        self,
        period_to_date: Decimal,
        quantity: Decimal,
        dimensions: Mapping[str, str],
        events_before: int = 0,
    ) -> PricedAmount:
        """Charge an event in the cell its dimensions select, given that cell's period-to-date."""
        cell = self.cell_for(dimensions)
        price = self._index[cell]
        if isinstance(price, Percentage | PriceWithTerms):
            charge = price.incremental_charge(period_to_date, quantity, events_before)
        else:
            charge = price.incremental_charge(period_to_date, quantity)
        return charge.in_cell(cell)

    def _cell_total(self, cell: tuple[str, ...], usage: CellUsage) -> PricedAmount:
        price = self.price_of(cell)
        if isinstance(price, Percentage) or (
            isinstance(price, PriceWithTerms) and price.prices_each_event
        ):
            values = [usage] if isinstance(usage, Decimal) else list(usage)
            if isinstance(price, PriceWithTerms):
                return price.period_total_of_events(values).in_cell(tuple(cell))
            return price.period_total(values).in_cell(tuple(cell))
        if isinstance(usage, Decimal):
            quantity = usage
        else:
            quantities = list(usage)
            for position, value in enumerate(quantities):
                require_quantity(value, f"usage[{position}]")
            quantity = priced_exactly(lambda: sum(quantities, ZERO))
        return price.period_total(quantity).in_cell(tuple(cell))


def _check_dimensions(dimensions: tuple[str, ...], violations: ViolationCollector) -> None:
    if not dimensions:
        violations.add("dimensions", "at least one dimension is required")
    seen: set[str] = set()
    for position, name in enumerate(dimensions):
        if not isinstance(name, str) or not name:
            violations.add(f"dimensions[{position}]", "must be a non-empty name")
        elif name in seen:
            violations.add(f"dimensions[{position}]", f"{name!r} is listed twice")
        else:
            seen.add(name)


def _unpriced(dimensions: Sequence[str], values: Sequence[str]) -> InvalidArgument:
    description = f"no price for {_describe(dimensions, values)}"
    return InvalidArgument(
        description, [FieldViolation("dimensions", description)], reason=UNPRICED_DIMENSIONS
    )


def _describe(dimensions: Sequence[str], values: Sequence[str]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in zip(dimensions, values, strict=False))
