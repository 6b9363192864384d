"""Percentage of an event's value (e.g. 20% of `deal_value`), priced event by event."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import check_price, priced_exactly, require_quantity

ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Percentage:
    """Each event costs clamp(value × rate + fixed_fee, minimum, maximum).

    `rate` is a fraction in [0, 1] (0.2 = 20%). The minimum and maximum bound the whole
    per-event price, fixed fee included. Because they apply per event, the price is not a
    function of the period's total value: the period total is the sum of the events' prices,
    and the incremental charge of an event is simply its own price.
    """

    MODEL: ClassVar[str] = "percentage"

    rate: Decimal
    fixed_fee: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if check_price(violations, "rate", self.rate) and self.rate > ONE:
            violations.add(
                "rate", f"must be a fraction between 0 and 1 (0.2 = 20%), got {self.rate}"
            )
        check_price(violations, "fixed_fee", self.fixed_fee)
        minimum_ok = self.minimum is None or check_price(violations, "minimum", self.minimum)
        maximum_ok = self.maximum is None or check_price(violations, "maximum", self.maximum)
        if (
            minimum_ok
            and maximum_ok
            and self.minimum is not None
            and self.maximum is not None
            and self.maximum < self.minimum
        ):
            violations.add("maximum", f"must not be below minimum ({self.minimum})")
        violations.raise_if_any("invalid percentage price")

    def event_price(self, value: Decimal) -> PricedAmount:
        """The price of one event of this value, with its breakdown."""
        require_quantity(value, "quantity")
        return priced_exactly(lambda: self._price(value))

    def period_total(self, event_values: Iterable[Decimal]) -> PricedAmount:
        """The sum of the prices of a period's events, with one line per kind of component."""
        values = list(event_values)
        for index, value in enumerate(values):
            require_quantity(value, f"event_values[{index}]")
        return priced_exactly(lambda: self._sum(values))

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """The event's own price: earlier events of the period do not change it."""
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._price(quantity))

    def _price(self, value: Decimal) -> PricedAmount:
        share = value * self.rate
        lines = [PriceLine(LineItem.PERCENTAGE, value, self.rate, ZERO, share)]
        if self.fixed_fee:
            lines.append(PriceLine(LineItem.FIXED_FEE, ONE, self.fixed_fee, ZERO, self.fixed_fee))
        amount = share + self.fixed_fee
        bound: Decimal | None = None
        if self.minimum is not None and amount < self.minimum:
            bound, item = self.minimum, LineItem.MINIMUM_ADJUSTMENT
        elif self.maximum is not None and amount > self.maximum:
            bound, item = self.maximum, LineItem.MAXIMUM_ADJUSTMENT
        if bound is not None:
            adjustment = bound - amount
            lines.append(PriceLine(item, ZERO, ZERO, adjustment, adjustment))
            amount = bound
        return PricedAmount(amount, tuple(lines))

    def _sum(self, values: list[Decimal]) -> PricedAmount:
        # Each line kind keeps one unit price (rate, fixed fee, 0), so lines of a kind add up.
        merged: dict[LineItem, PriceLine] = {}
        amount = ZERO
        for value in values:
            priced = self._price(value)
            amount += priced.amount
            for line in priced.lines:
                seen = merged.get(line.item)
                merged[line.item] = (
                    line
                    if seen is None
                    else PriceLine(
                        line.item,
                        seen.quantity + line.quantity,
                        line.unit_price,
                        seen.flat_fee + line.flat_fee,
                        seen.amount + line.amount,
                    )
                )
        return PricedAmount(amount, tuple(merged.values()))
