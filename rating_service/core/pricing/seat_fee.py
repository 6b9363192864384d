"""A recurring fee per seat: flat per seat, or tiered by the contract's seat count."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, TypeAlias

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, PricedAmount
from rating_service.core.pricing.constraints import require_quantity
from rating_service.core.pricing.flat_fee import BillingTiming
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.volume import Volume

SeatPrice: TypeAlias = PerUnit | Graduated | Volume
"""How seats are priced: each at one price, in graduated tiers, or all at their volume tier."""


@dataclass(frozen=True, slots=True)
class SeatFee:
    """A fee per billing period for the contract's seats: P(seats) = `per_seat` priced at seats.

    Seats are a contract term (`Contract.seats`, changed by amendments), not usage: events never
    change the fee (each incremental charge is 0). The invoice composer bills it like a flat
    fee, per stretch of the period one seat count was in force, prorated by day.
    """

    MODEL: ClassVar[str] = "seat_fee"

    per_seat: SeatPrice
    timing: BillingTiming = BillingTiming.IN_ADVANCE

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.per_seat, PerUnit | Graduated | Volume):
            violations.add("per_seat", "must be a per_unit, graduated or volume price")
        if not isinstance(self.timing, BillingTiming):
            violations.add("timing", f"must be one of {', '.join(BillingTiming)}")
        violations.raise_if_any("invalid seat fee")

    def period_total(self, quantity: Decimal = ZERO) -> PricedAmount:
        """The fee for a whole period with `quantity` seats."""
        require_quantity(quantity, "quantity")
        return self.per_seat.period_total(quantity)

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """Always nothing: usage does not change a seat fee."""
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return NOTHING
