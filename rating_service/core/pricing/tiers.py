"""Price tiers shared by the graduated and volume models, and where a quantity falls in them.

Tiers are written by their inclusive upper bounds. Tier k covers the quantities in
(up_to[k-1], up_to[k]], the first tier starts just above 0 and the last tier is open
(`up_to = None`). This holds for fractional quantities too: with Stripe's tiers (up to 5,
up to 10, open), 5 is in the first tier, 5.0001 in the second and 10.5 in the third. A
quantity of 0 is in no tier, so it costs nothing and enters no tier's flat fee. Because a
tier starts exactly where the previous one ends, tiers cannot overlap or leave gaps.

A tier may be sold in blocks (`block_size`): its units are then counted in whole blocks, each
started block charged in full, and its `unit_price` is the price of one block (the unit of
sale is the block). With blocks of 1000 at $2, 1 to 1000 units in the tier cost $2 and 1001
cost $4.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import ZERO
from rating_service.core.pricing.constraints import check_price


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier: a unit price for the units in it, and a flat fee charged when it is entered.

    With a `block_size`, `unit_price` is the price of each started block of that many units.
    """

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = ZERO
    block_size: Decimal | None = None

    def units_of_sale(self, units: Decimal) -> Decimal:
        """What `units` of this tier are sold as: themselves, or the blocks they start."""
        if self.block_size is None or not units:
            return units
        # divmod is exact (integer quotient and remainder), unlike a division then a ceiling.
        whole, rest = divmod(units, self.block_size)
        return whole + 1 if rest else whole


def check_tiers(tiers: Sequence[object], violations: ViolationCollector) -> None:
    """Record every violation of a tier list: order, open last tier, and non-negative prices."""
    if not tiers:
        violations.add("tiers", "at least one tier is required")
        return
    last = len(tiers) - 1
    previous_bound: Decimal | None = ZERO
    for index, tier in enumerate(tiers):
        path = f"tiers[{index}]"
        if not isinstance(tier, Tier):
            violations.add(path, f"must be a Tier, got {type(tier).__name__}")
            previous_bound = None
            continue
        check_price(violations, f"{path}.unit_price", tier.unit_price)
        check_price(violations, f"{path}.flat_fee", tier.flat_fee)
        if tier.block_size is not None:
            check_price(violations, f"{path}.block_size", tier.block_size, positive=True)
        bound = tier.up_to
        if index == last:
            if bound is not None:
                violations.add(
                    f"{path}.up_to",
                    f"the last tier must be open (up_to null): quantities above {bound}"
                    " would have no price",
                )
            continue
        if bound is None:
            violations.add(f"{path}.up_to", "only the last tier may be open (up_to null)")
            previous_bound = None
            continue
        if not check_price(violations, f"{path}.up_to", bound, positive=True):
            previous_bound = None
            continue
        if previous_bound is not None and bound <= previous_bound and index > 0:
            violations.add(
                f"{path}.up_to",
                f"must be greater than tiers[{index - 1}].up_to ({previous_bound}):"
                " tiers are listed in ascending order without repeats",
            )
        previous_bound = bound


def tier_bounds(tiers: Sequence[Tier]) -> tuple[Decimal, ...]:
    """The upper bounds of every tier but the open last one, ascending."""
    return tuple(tier.up_to for tier in tiers if tier.up_to is not None)


def tier_index(bounds: Sequence[Decimal], quantity: Decimal) -> int:
    """Index of the tier holding a quantity > 0 (the first tier whose bound is ≥ it)."""
    return bisect_left(bounds, quantity)
