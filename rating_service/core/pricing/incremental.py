"""Real-time rating: the exact charge of one event given the period-to-date quantity.

For a period total P and period-to-date quantity c, an event of quantity x costs
P(c + x) − P(c), at full precision. The charges of a period therefore add up to P(total)
exactly, so an invoice line is a sum of charges and never a re-rating. A charge can be
negative (a volume tier crossed into a cheaper price) and is then a credit back.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from rating_service.core.pricing.breakdown import PricedAmount
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.price_terms import PriceWithTerms

_NO_DIMENSIONS: Mapping[str, str] = MappingProxyType({})


def incremental_charge(
    model: PriceModel,
    period_to_date: Decimal,
    quantity: Decimal,
    dimensions: Mapping[str, str] = _NO_DIMENSIONS,
    events_before: int = 0,
) -> PricedAmount:
    """Charge one event: P(period_to_date + quantity) − P(period_to_date), with its breakdown.

    `period_to_date` is the quantity already rated in this period under the key that
    `usage_cell(model, dimensions)` returns (a matrix tracks each cell apart), and
    `events_before` the number of events rated there (a percentage's free events count them).
    For a percentage model, `quantity` is the event's value and the charge is the event's own
    price. A flat fee, and a price's fee owed at zero usage, are billed per period by the
    invoice, so an event adds nothing to them.
    """
    if isinstance(model, Matrix):
        return model.incremental_charge(period_to_date, quantity, dimensions, events_before)
    if isinstance(model, Percentage | PriceWithTerms):
        return model.incremental_charge(period_to_date, quantity, events_before)
    return model.incremental_charge(period_to_date, quantity)


def usage_cell(
    model: PriceModel, dimensions: Mapping[str, str] = _NO_DIMENSIONS
) -> tuple[str, ...]:
    """The key under which an event's period-to-date quantity is kept: its matrix cell, or ()."""
    if isinstance(model, Matrix):
        return model.cell_for(dimensions)
    return ()
