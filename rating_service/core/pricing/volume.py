"""Volume tiers: every unit at the price of the tier the period's quantity has reached."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import priced_exactly, require_quantity
from rating_service.core.pricing.tiers import Tier, check_tiers, tier_bounds, tier_index


@dataclass(frozen=True, slots=True)
class Volume:
    """Volume (all-units) tiers: P(q) = q × price of q's tier + that tier's flat fee; P(0) = 0.

    Crossing into a cheaper tier re-prices every earlier unit, so an incremental charge can be
    negative: a credit back. A tier sold in blocks prices the period's whole quantity in
    started blocks of its size. Tier boundaries are described in
    `rating_service.core.pricing.tiers`.
    """

    MODEL: ClassVar[str] = "volume"

    tiers: tuple[Tier, ...]
    _bounds: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        violations = ViolationCollector()
        check_tiers(self.tiers, violations)
        violations.raise_if_any("invalid volume tiers")
        object.__setattr__(self, "_bounds", tier_bounds(self.tiers))

    def period_total(self, quantity: Decimal) -> PricedAmount:
        """The price of a period's quantity, with the line of the tier reached."""
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._reached(quantity))

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """P(period_to_date + quantity) − P(period_to_date), with its breakdown.

        Within one tier this is a single line for the new units. When the event moves the
        period into another tier, it is the whole period at the new tier minus the whole
        period-to-date at the old one (a line with negative quantity and amount).
        """
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._delta(period_to_date, quantity))

    def price_at(self, quantity: Decimal) -> Decimal:
        """P(quantity) alone, no breakdown; the caller is in the exact context."""
        if not quantity:
            return ZERO
        tier = self.tiers[tier_index(self._bounds, quantity)]
        return tier.units_of_sale(quantity) * tier.unit_price + tier.flat_fee

    def _reached(self, quantity: Decimal) -> PricedAmount:
        if not quantity:
            return NOTHING
        k = tier_index(self._bounds, quantity)
        tier = self.tiers[k]
        sold = tier.units_of_sale(quantity)
        amount = sold * tier.unit_price + tier.flat_fee
        item = LineItem.TIER if tier.block_size is None else LineItem.TIER_BLOCKS
        line = PriceLine(item, sold, tier.unit_price, tier.flat_fee, amount, k)
        return PricedAmount(amount, (line,))

    def _delta(self, before: Decimal, quantity: Decimal) -> PricedAmount:
        if not quantity:
            return NOTHING
        if not before:
            return self._reached(quantity)
        after = before + quantity
        old = tier_index(self._bounds, before)
        new = tier_index(self._bounds, after)
        if old == new:
            tier = self.tiers[new]
            if tier.block_size is None:
                units, item = quantity, LineItem.TIER
            else:
                units = tier.units_of_sale(after) - tier.units_of_sale(before)
                item = LineItem.TIER_BLOCKS
                if not units:
                    return NOTHING  # inside a block already paid
            amount = units * tier.unit_price
            line = PriceLine(item, units, tier.unit_price, ZERO, amount, new)
            return PricedAmount(amount, (line,))
        # Another tier reached: the whole period at the new tier, and the period-to-date at the
        # old tier given back, so the breakdown shows why the charge may be negative.
        gained = self._reached(after).lines[0]
        kept = self._reached(before).lines[0]
        given_back = PriceLine(
            kept.item, -kept.quantity, kept.unit_price, -kept.flat_fee, -kept.amount, old
        )
        return PricedAmount(gained.amount + given_back.amount, (gained, given_back))
