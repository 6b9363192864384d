"""What a unit of a product costs us (a GPU-second, a provider's token): effective-dated.

A product's `unit_costs` are versions, each from its `effective_from` until the next: a cost per
unit in a currency, and optionally a cost per matrix cell (`match` on dimension values, e.g. a
model and token type). Rating records each event's cost, the unit cost in force at the event's
time times the quantity it added to the period's counter, beside its charge; margins compare the
two (`rating_service.core.billing.margins`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from rating_service.core.dict_form import DictReader
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import Currency, currency_of, format_decimal


@dataclass(frozen=True, slots=True)
class CellCost:
    """The unit cost of the events whose dimensions match every (name, value) of `match`."""

    match: tuple[tuple[str, str], ...]
    cost: Decimal

    def matches(self, dimensions: Mapping[str, str]) -> bool:
        """True when every dimension named has the value given."""
        return all(dimensions.get(name) == value for name, value in self.match)


@dataclass(frozen=True, slots=True)
class UnitCost:
    """A product's cost per unit from `effective_from` on, in `currency`; cells may differ."""

    effective_from: datetime
    currency: Currency
    cost: Decimal
    cells: tuple[CellCost, ...] = ()

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.effective_from, datetime) or self.effective_from.utcoffset() is None:
            violations.add("effective_from", "must be a timezone-aware datetime")
        for path, amount in (
            ("cost", self.cost),
            *((f"cells[{i}].cost", c.cost) for i, c in enumerate(self.cells)),
        ):
            if not isinstance(amount, Decimal) or not amount.is_finite() or amount < 0:
                violations.add(path, f"must be a finite decimal ≥ 0, got {amount!r}")
        violations.raise_if_any("invalid unit cost")

    def per_unit(self, dimensions: Mapping[str, str]) -> Decimal:
        """The cost of one unit of an event with these dimensions: its cell's, else the default."""
        for cell in self.cells:
            if cell.matches(dimensions):
                return cell.cost
        return self.cost


def unit_cost_at(costs: Sequence[UnitCost], at: datetime) -> UnitCost | None:
    """The version in force at `at` (costs sorted by effective_from), or None before the first."""
    index = bisect_right(costs, at, key=lambda c: c.effective_from) - 1
    return costs[index] if index >= 0 else None


def unit_costs_from_dict(raw: object, path: str, violations: ViolationCollector) -> list[UnitCost]:
    """Unit cost versions from their dict form, sorted, every bad field recorded."""
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        violations.add(path, "must be a list of unit costs")
        return []
    found: list[UnitCost] = []
    for index, item in enumerate(raw):
        at = f"{path}[{index}]"
        fields = DictReader(item, at, violations, "a unit cost")
        effective_from = fields.timestamp("effective_from")
        code = fields.raw("currency")
        currency: Currency | None = None
        try:
            currency = currency_of(code if isinstance(code, str) else "", fields.at("currency"))
        except InvalidArgument as error:
            violations.violations.extend(error.violations)
        cost = fields.decimal("cost")
        cells: list[CellCost] = []
        for n, raw_cell in enumerate(fields.sequence("cells")):
            cell = DictReader(raw_cell, fields.at(f"cells[{n}]"), violations, "a cell cost")
            match = cell.raw("match")
            if (
                not isinstance(match, Mapping)
                or not match
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in match.items())
            ):
                violations.add(cell.at("match"), "must map dimension names to values")
                match = {}
            cell_cost = cell.decimal("cost")
            cell.reject_unknown()
            if cell_cost is not None:
                cells.append(CellCost(tuple(sorted(match.items())), cell_cost))
        fields.reject_unknown()
        if effective_from is None or currency is None or cost is None:
            continue
        try:
            found.append(UnitCost(effective_from, currency, cost, tuple(cells)))
        except InvalidArgument as error:
            for violation in error.violations:
                violations.add(f"{at}.{violation.field}", violation.description)
    found.sort(key=lambda c: c.effective_from)
    starts = [c.effective_from for c in found]
    if len(set(starts)) != len(starts):
        violations.add(path, "two unit costs take effect at the same moment")
    return found


def unit_costs_to_dict(costs: Sequence[UnitCost]) -> list[dict[str, object]]:
    """The dict form of unit cost versions."""
    out = []
    for cost in costs:
        data: dict[str, object] = {
            "effective_from": cost.effective_from.isoformat(),
            "currency": cost.currency.code,
            "cost": format_decimal(cost.cost),
        }
        if cost.cells:
            data["cells"] = [
                {"match": dict(cell.match), "cost": format_decimal(cell.cost)}
                for cell in cost.cells
            ]
        out.append(data)
    return out
