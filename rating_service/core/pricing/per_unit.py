"""Per-unit pricing: every unit at the same price."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import check_price, priced_exactly, require_quantity


@dataclass(frozen=True, slots=True)
class PerUnit:
    """Each unit costs `unit_price`: P(q) = q × unit_price."""

    MODEL: ClassVar[str] = "per_unit"

    unit_price: Decimal

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        check_price(violations, "unit_price", self.unit_price)
        violations.raise_if_any("invalid per-unit price")

    def period_total(self, quantity: Decimal) -> PricedAmount:
        """The price of a period's quantity, with its breakdown."""
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._units(quantity))

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """P(period_to_date + quantity) − P(period_to_date), with its breakdown."""
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        # Linear, so the delta does not depend on what came before.
        return priced_exactly(lambda: self._units(quantity))

    def price_at(self, quantity: Decimal) -> Decimal:
        """P(quantity) alone, no breakdown; the caller is in the exact context."""
        return quantity * self.unit_price

    def _units(self, quantity: Decimal) -> PricedAmount:
        if not quantity:
            return NOTHING
        amount = quantity * self.unit_price
        line = PriceLine(LineItem.UNITS, quantity, self.unit_price, ZERO, amount)
        return PricedAmount(amount, (line,))
