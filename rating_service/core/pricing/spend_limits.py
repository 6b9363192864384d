"""Minimum and maximum spend of one price per billing period.

The maximum caps the price: P'(q) = min(P(q), maximum), so events past the cap charge 0 and
incremental charges still sum to the capped total; the invoice shows the part capped as a
discount. The minimum cannot be charged event by event (the period is not over until it is):
the invoice tops the period's spend up to it on a line of its own.
"""

from __future__ import annotations

from decimal import Decimal

from rating_service.core.pricing.breakdown import ZERO


def capped_at(amount: Decimal, maximum: Decimal | None) -> Decimal:
    """A period's price, capped at the maximum spend if there is one."""
    return amount if maximum is None or amount <= maximum else maximum


def minimum_top_up(spent: Decimal, minimum: Decimal | None) -> Decimal:
    """What lifts a period's spend on a price to its minimum spend (0 when already there)."""
    return minimum - spent if minimum is not None and spent < minimum else ZERO
