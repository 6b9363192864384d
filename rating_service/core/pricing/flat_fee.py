"""A flat recurring fee per billing period, billed in advance or in arrears."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import check_price, require_quantity


class BillingTiming(StrEnum):
    """When a recurring fee is invoiced relative to the period it pays for."""

    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


@dataclass(frozen=True, slots=True)
class FlatFee:
    """A fee of `amount` per billing period, whatever the usage: P(q) = amount.

    Usage events never change it (each incremental charge is 0); the invoice composer bills it
    once per period, prorated by day with `rating_service.core.pricing.proration.prorate` when the
    contract was active for part of the period.
    """

    MODEL: ClassVar[str] = "flat_fee"

    amount: Decimal
    timing: BillingTiming = BillingTiming.IN_ARREARS

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        check_price(violations, "amount", self.amount)
        if not isinstance(self.timing, BillingTiming):
            violations.add("timing", f"must be one of {', '.join(BillingTiming)}")
        violations.raise_if_any("invalid flat fee")

    def period_total(self, quantity: Decimal = ZERO) -> PricedAmount:
        """The fee for a whole period; the quantity is accepted for symmetry and ignored."""
        require_quantity(quantity, "quantity")
        line = PriceLine(LineItem.FLAT_FEE, ZERO, ZERO, self.amount, self.amount)
        return PricedAmount(self.amount, (line,))

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """Always nothing: usage does not change a flat fee."""
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return NOTHING
