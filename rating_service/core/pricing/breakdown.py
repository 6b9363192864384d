"""The explanation of a priced amount: one line per unit price, tier, block, cell or fee."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple

ZERO = Decimal(0)


class LineItem(StrEnum):
    """What a breakdown line prices."""

    UNITS = "units"
    """Units at a single unit price (per-unit model)."""
    TIER = "tier"
    """Units priced by one tier (graduated or volume); `tier` is its index."""
    FREE_UNITS = "free_units"
    """Units given free before package blocks start."""
    BLOCKS = "blocks"
    """Package blocks: `quantity` counts blocks, `unit_price` is the price of one block."""
    FLAT_FEE = "flat_fee"
    """A recurring fee that does not depend on quantity."""
    PERCENTAGE = "percentage"
    """An event value (`quantity`) times a rate (`unit_price`)."""
    FIXED_FEE = "fixed_fee"
    """The fixed fee charged on every event of a percentage model."""
    MINIMUM_ADJUSTMENT = "minimum_adjustment"
    """What lifts an event's price up to the per-event minimum."""
    MAXIMUM_ADJUSTMENT = "maximum_adjustment"
    """What brings an event's price down to the per-event maximum (negative)."""
    TIER_BLOCKS = "tier_blocks"
    """Blocks of a tier sold in blocks: `quantity` counts blocks, `unit_price` is a block's."""
    FREE_EVENTS = "free_events"
    """The value of events that are among the period's free events (a percentage price)."""
    FREE_VALUE = "free_value"
    """Event value inside the period's free value (a percentage price)."""
    FREE_AMOUNT = "free_amount"
    """The part of the price the period's free amount pays (negative)."""
    FIRST_TIER_FEE = "first_tier_fee"
    """The first tier's flat fee, billed once per period on the invoice even at zero usage:
    positive in a period total, negative on the event that enters the first tier."""
    MAXIMUM_SPEND = "maximum_spend"
    """What brings the period's price down to the price's maximum spend (negative)."""


class PriceLine(NamedTuple):
    """One line of an explanation, always with `amount == quantity * unit_price + flat_fee`.

    In an incremental charge a line may be negative: re-pricing the earlier units of a volume
    tier that was left, for instance. `tier` is the index into the model's tiers; `cell` holds
    the matrix dimension values, in the matrix's dimension order, when the line comes from one.
    An immutable named tuple rather than a frozen dataclass: lines are built on every rated
    event, and a tuple is several times cheaper to build.
    """

    item: LineItem
    quantity: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal
    tier: int | None = None
    cell: tuple[str, ...] = ()


class PricedAmount(NamedTuple):
    """An exact amount in the pricing unit and the lines that explain it (they sum to it)."""

    amount: Decimal
    lines: tuple[PriceLine, ...] = ()

    def in_cell(self, cell: tuple[str, ...]) -> PricedAmount:
        """The same amount with every line labelled with a matrix cell's dimension values."""
        return PricedAmount(
            self.amount,
            tuple(
                PriceLine(
                    line.item,
                    line.quantity,
                    line.unit_price,
                    line.flat_fee,
                    line.amount,
                    line.tier,
                    cell,
                )
                for line in self.lines
            ),
        )


NOTHING = PricedAmount(ZERO)
"""A zero amount with nothing to explain."""


def negated(priced: PricedAmount) -> PricedAmount:
    """The same explanation taken back: P(before) − P(after) when a quantity goes down."""
    return PricedAmount(
        -priced.amount,
        tuple(
            PriceLine(
                line.item,
                -line.quantity,
                line.unit_price,
                -line.flat_fee,
                -line.amount,
                line.tier,
                line.cell,
            )
            for line in priced.lines
        ),
    )
