"""Package pricing: a price per block of N units, blocks rounded up (or down), after free units."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar

from rating_service.core.errors import ViolationCollector
from rating_service.core.pricing.breakdown import NOTHING, ZERO, LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.constraints import check_price, priced_exactly, require_quantity


class PackageRounding(StrEnum):
    """How a part-used block counts: `up` charges it whole, `down` gives it free."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Package:
    """P(q) = ⌈max(q − free_units, 0) / block_size⌉ × block_price (⌊…⌋ when rounding down).

    Rounding up, a started block is paid in full (1001 units in blocks of 1000 are two blocks);
    rounding down, only completed blocks are paid (1999 units are one block). Block sizes may
    be fractional (e.g. blocks of 0.5 GPU hour).
    """

    MODEL: ClassVar[str] = "package"

    block_size: Decimal
    block_price: Decimal
    free_units: Decimal = ZERO
    rounding: PackageRounding = PackageRounding.UP

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        check_price(violations, "block_size", self.block_size, positive=True)
        check_price(violations, "block_price", self.block_price)
        check_price(violations, "free_units", self.free_units)
        if not isinstance(self.rounding, PackageRounding):
            violations.add("rounding", f"must be one of {', '.join(PackageRounding)}")
        violations.raise_if_any("invalid package price")

    def period_total(self, quantity: Decimal) -> PricedAmount:
        """The price of a period's quantity: a free-units line and a blocks line."""
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._delta(ZERO, quantity))

    def incremental_charge(self, period_to_date: Decimal, quantity: Decimal) -> PricedAmount:
        """P(period_to_date + quantity) − P(period_to_date): the blocks this event starts."""
        require_quantity(period_to_date, "period_to_date")
        require_quantity(quantity, "quantity")
        return priced_exactly(lambda: self._delta(period_to_date, quantity))

    def price_at(self, quantity: Decimal) -> Decimal:
        """P(quantity) alone, no breakdown; the caller is in the exact context."""
        return self._blocks(quantity) * self.block_price

    def _blocks(self, quantity: Decimal) -> Decimal:
        billable = quantity - self.free_units
        if billable <= 0:
            return ZERO
        # divmod is exact (integer quotient and remainder), unlike a division then a ceiling.
        whole, rest = divmod(billable, self.block_size)
        return whole + 1 if rest and self.rounding is PackageRounding.UP else whole

    def _delta(self, before: Decimal, quantity: Decimal) -> PricedAmount:
        if not quantity:
            return NOTHING
        after = before + quantity
        lines = []
        if before < self.free_units:
            free = min(after, self.free_units) - before
            lines.append(PriceLine(LineItem.FREE_UNITS, free, ZERO, ZERO, ZERO))
        blocks = self._blocks(after) - self._blocks(before)
        if blocks:
            amount = blocks * self.block_price
            lines.append(PriceLine(LineItem.BLOCKS, blocks, self.block_price, ZERO, amount))
        else:
            amount = ZERO
        return PricedAmount(amount, tuple(lines))
