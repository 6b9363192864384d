"""Graduated tiers: each unit at the price of its own tier, plus a flat fee per tier entered."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import priced_exactly, require_quantity
from rating_service.core.pricing.tiers import Tier, check_tiers, tier_bounds, tier_index


@dataclass(frozen=True, slots=True)
class Graduated:
    """Graduated (stairstep) tiers: P(q) sums, over the tiers q reaches, units × price + flat fee.

    A tier's flat fee is charged once, when the quantity first goes above the tier's lower
    bound; a tier sold in blocks charges each block its units start. Tier boundaries and
    blocks are described in `rating_service.core.pricing.tiers`.
    """

    MODEL: ClassVar[str] = "graduated"

    tiers: tuple[Tier, ...]
    # Precomputed so P(q) is one bisect and one multiply, not a loop over the lower tiers.
    _bounds: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    _lowers: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    _totals_below: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        violations = ViolationCollector()
        check_tiers(self.tiers, violations)
        violations.raise_if_any("invalid graduated tiers")
        bounds = tier_bounds(self.tiers)
        lowers = (ZERO, *bounds)
        object.__setattr__(self, "_bounds", bounds)
        object.__setattr__(self, "_lowers", lowers)
        object.__setattr__(
            self, "_totals_below", priced_exactly(lambda: self._cumulate(bounds), "tiers")
        )

    def _cumulate(self, bounds: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        # _totals_below[k] = P(lower bound of tier k): every tier below k full, with its flat fee.
        totals = [ZERO]
        lower = ZERO
        for tier, upper in zip(self.tiers, bounds, strict=False):
            sold = tier.units_of_sale(upper - lower)
            totals.append(totals[-1] + sold * tier.unit_price + tier.flat_fee)
            lower = upper
        return tuple(totals)

    def period_total(self, quantity: Decimal) -> PricedAmount:
        """The price of a period's quantity, with one line per tier reached."""
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._lines_between(ZERO, quantity))

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """P(period_to_date + quantity) − P(period_to_date), with one line per tier touched."""
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._lines_between(period_to_date, quantity))

    def price_at(self, quantity: Decimal) -> Decimal:
        """P(quantity) alone, no breakdown; the caller is in the exact context."""
        return self._total(quantity)

    def _total(self, quantity: Decimal) -> Decimal:
        if not quantity:
            return ZERO
        k = tier_index(self._bounds, quantity)
        tier = self.tiers[k]
        sold = tier.units_of_sale(quantity - self._lowers[k])
        return self._totals_below[k] + sold * tier.unit_price + tier.flat_fee

    def _lines_between(self, before: Decimal, quantity: Decimal) -> PricedAmount:
        if not quantity:
            return NOTHING
        after = before + quantity
        # The tiers holding the units in (before, after]: from the first whose bound exceeds
        # `before` to the one holding `after`.
        first = bisect_right(self._bounds, before)
        last = tier_index(self._bounds, after)
        lines = []
        for k in range(first, last + 1):
            tier = self.tiers[k]
            lower = self._lowers[k]
            upper = after if k == last else self._bounds[k]
            start = before if before > lower else lower
            # The flat fee belongs to the event that first goes above the tier's lower bound.
            flat_fee = tier.flat_fee if before <= lower else ZERO
            if tier.block_size is None:
                units, item = upper - start, LineItem.TIER
            else:
                # The blocks this event starts in the tier: those held after less those before.
                units = tier.units_of_sale(upper - lower) - tier.units_of_sale(start - lower)
                item = LineItem.TIER_BLOCKS
                if not units and not flat_fee:
                    continue
            amount = units * tier.unit_price + flat_fee
            lines.append(PriceLine(item, units, tier.unit_price, flat_fee, amount, k))
        # The amount is P(after) − P(before) by definition; the lines add up to the same value.
        return PricedAmount(self._total(after) - self._total(before), tuple(lines))
