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
    and the incremental charge of an event is its own price.

    A free allowance per period (Lago's free units per events / per total aggregation): the
    first `free_events` events, and the first `free_value` of event value, cost nothing. With
    both, the allowance ends at whichever runs out first. An event wholly inside the allowance
    costs nothing at all (no fixed fee, no minimum); an event that uses its last part pays the
    rate on the value beyond it, plus the fixed fee, within the minimum and maximum.
    """

    MODEL: ClassVar[str] = "percentage"

    rate: Decimal
    fixed_fee: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    free_events: int | None = None
    free_value: Decimal | None = None

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
        if self.free_events is not None and (
            not isinstance(self.free_events, int)
            or isinstance(self.free_events, bool)
            or self.free_events < 0
        ):
            violations.add("free_events", f"must be a whole number ≥ 0, got {self.free_events!r}")
        if self.free_value is not None:
            check_price(violations, "free_value", self.free_value)
        violations.raise_if_any("invalid percentage price")

    def event_price(self, value: Decimal) -> PricedAmount:
        """The price of one event of this value, with its breakdown (no allowance used yet)."""
        require_quantity(value, "quantity")
        return priced_exactly(lambda: self._after_allowance(value, ZERO, 0))

    def period_total(self, event_values: Iterable[Decimal]) -> PricedAmount:
        """The sum of the prices of a period's events, with one line per kind of component."""
        values = list(event_values)
        for index, value in enumerate(values):
            require_quantity(value, f"event_values[{index}]")
        return priced_exactly(lambda: self._sum(values))

    def incremental_charge(
        self, period_to_date: Decimal, quantity: Decimal, events_before: int = 0
    ) -> PricedAmount:
        """The event's own price, given the period's value and events before it.

        Earlier events matter only through the free allowance they have used.
        """
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return priced_exactly(
            lambda: self._after_allowance(quantity, period_to_date, events_before)
        )

    @property
    def has_allowance(self) -> bool:
        """True when some events or value are free each period."""
        return self.free_events is not None or self.free_value is not None

    def _after_allowance(
        self, value: Decimal, value_before: Decimal, events_before: int
    ) -> PricedAmount:
        if not self._allowance_open(value_before, events_before):
            return self._price(value)
        if self.free_value is None:
            free, item = value, LineItem.FREE_EVENTS
        else:
            free, item = min(value, self.free_value - value_before), LineItem.FREE_VALUE
        free_line = PriceLine(item, free, ZERO, ZERO, ZERO)
        billable = value - free
        if not billable:
            return PricedAmount(ZERO, (free_line,))
        priced = self._price(billable)
        return PricedAmount(priced.amount, (free_line, *priced.lines))

    def _allowance_open(self, value_before: Decimal, events_before: int) -> bool:
        if not self.has_allowance:
            return False
        events_left = self.free_events is None or events_before < self.free_events
        value_left = self.free_value is None or value_before < self.free_value
        return events_left and value_left

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
        value_before = ZERO
        for events_before, value in enumerate(values):
            priced = self._after_allowance(value, value_before, events_before)
            value_before += value
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
