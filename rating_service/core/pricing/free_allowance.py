"""Free allowances per period: the first units of a period, or the first amount of its price.

`free_units` shifts the quantity a price sees (the first N units, or N events on a meter that
counts events, cost nothing); `free_amount` takes the first part of the period's price off it.
Both are functions of the period-to-date quantity, so incremental rating stays exact.
"""

from __future__ import annotations

from decimal import Decimal

from rating_service.core.pricing.breakdown import ZERO


def billable_units(quantity: Decimal, free_units: Decimal) -> Decimal:
    """The part of a period's quantity beyond its free units."""
    return quantity - free_units if quantity > free_units else ZERO


def after_free_amount(amount: Decimal, free_amount: Decimal) -> Decimal:
    """A period's price less its free amount, never below zero."""
    return amount - free_amount if amount > free_amount else ZERO
