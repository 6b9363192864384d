"""The first tier's flat fee at zero usage: two conventions, chosen per price.

By default (Lago's historical convention, and this service's) a quantity of 0 enters no tier,
so a period without usage costs nothing and the first tier's flat fee is charged by the event
that first enters the tier. With `first_tier_fee_at_zero` (OpenMeter's convention, and Lago's
since it changed) the fee is owed for every period, used or not: P(0) = the first tier's flat
fee. That fee is billed once per period as a line of its own on the invoice, and events never
charge it, so each event's charge stays P(c + x) − P(c) and the invoice is fee + Σ charges.
"""

from __future__ import annotations

from decimal import Decimal

from rating_service.core.pricing.breakdown import ZERO
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.volume import Volume


def first_tier_fee(model: Graduated | Volume) -> Decimal:
    """The flat fee of a tiered price's first tier."""
    return model.tiers[0].flat_fee if model.tiers else ZERO


def price_at_zero_convention(
    model: Graduated | Volume, billable: Decimal, price: Decimal
) -> Decimal:
    """P(q) with the first tier's fee owed at zero: the fee when nothing is billable."""
    return price if billable else first_tier_fee(model)
