"""Quote: price hypothetical usage against a catalog at a time, exactly as rating would."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from rating_service.core.errors import InvalidArgument, NotFound, ViolationCollector
from rating_service.core.money import EXACT_CONTEXT, parse_decimal
from rating_service.core.pricing.aggregation import Aggregation
from rating_service.core.pricing.breakdown import PricedAmount, negated
from rating_service.core.pricing.catalog import Catalog
from rating_service.core.pricing.incremental import incremental_charge, usage_cell
from rating_service.core.pricing.meter import Product
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.rate_card import RateCard


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Usage of one product: a quantity (or event value) and its dimension values."""

    product_key: str
    quantity: Decimal
    dimensions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class QuotedLine:
    """A usage line with its exact charge and the breakdown that explains it."""

    usage: UsageLine
    priced: PricedAmount
    quantity_before: Decimal = Decimal(0)
    """The period's aggregated quantity before the line (the meter's Q)."""
    quantity_after: Decimal = Decimal(0)
    """…and after it: a `max` line below the peak, a repeat, leaves it as it was."""
    aggregation: Aggregation = Aggregation.SUM


@dataclass(frozen=True, slots=True)
class Quote:
    """The rate card version used, the priced lines and their exact total in its pricing unit."""

    rate_card: RateCard
    lines: tuple[QuotedLine, ...]
    total: Decimal

    @property
    def total_in_invoice_currency(self) -> Decimal:
        """The total converted from the pricing unit, unrounded."""
        return self.rate_card.pricing_unit.to_invoice_currency(self.total)


def usage_line(
    product_key: str, quantity: object, dimensions: Mapping[str, str], path: str
) -> UsageLine:
    """A usage line from wire values, with errors under `path` (e.g. `lines[2]`)."""
    if not product_key:
        raise InvalidArgument.of_field(f"{path}.product_key", "is required")
    return UsageLine(product_key, parse_decimal(quantity, f"{path}.quantity"), dict(dimensions))


ZERO = Decimal(0)

PriceAdjustment = Callable[[Product, PriceModel], PriceModel]
"""How a contract turns the list price of a product into its own (its overrides)."""


def _list_price(product: Product, model: PriceModel) -> PriceModel:
    return model


def quote(
    catalog: Catalog,
    rate_card_key: str,
    at: datetime,
    lines: Sequence[UsageLine],
    period_to_date: Sequence[UsageLine] = (),
    adjust: PriceAdjustment = _list_price,
) -> Quote:
    """Price `lines` in order as P(Q′) − P(Q), Q starting at `period_to_date` per cell.

    A line's quantity is the meter's aggregated quantity: what it adds for a sum, a count, a
    unique count (new distinct values) or a time-weighted sum (e.g. GPU-hours); the peak it
    reaches for a max; the reading for a latest gauge.

    `adjust` applies a contract's terms to each list price (the default quotes list prices).
    """
    history = catalog.rate_cards.get(rate_card_key)
    if history is None:
        raise NotFound(f"no rate card {rate_card_key!r}", reason="RATE_CARD_NOT_FOUND")
    card = history.in_force_at(at)
    used: dict[tuple[str, tuple[str, ...]], Decimal] = {}
    violations = ViolationCollector()
    for section, entries in (("period_to_date", period_to_date), ("lines", lines)):
        for index, line in enumerate(entries):
            _check_dimensions(catalog, line, f"{section}[{index}]", violations)
    violations.raise_if_any("the usage does not fit the catalog")

    def price(product_key: str) -> PriceModel:
        return adjust(catalog.products[product_key], card.price_of(product_key))

    def aggregation(product_key: str) -> Aggregation:
        return catalog.products[product_key].meter.aggregated_by

    for line in period_to_date:
        model = price(line.product_key)
        key = (line.product_key, usage_cell(model, line.dimensions))
        used[key] = aggregation(line.product_key).combine(used.get(key, ZERO), line.quantity)
    quoted = []
    with localcontext(EXACT_CONTEXT):
        total = ZERO
        for line in lines:
            model = price(line.product_key)
            key = (line.product_key, usage_cell(model, line.dimensions))
            before = used.get(key, ZERO)
            aggregated_by = aggregation(line.product_key)
            after = aggregated_by.combine(before, line.quantity)
            priced = _change(model, before, after, line.dimensions)
            used[key] = after
            quoted.append(QuotedLine(line, priced, before, after, aggregated_by))
            total += priced.amount
    return Quote(card, tuple(quoted), total)


def _change(
    model: PriceModel, before: Decimal, after: Decimal, dimensions: Mapping[str, str]
) -> PricedAmount:
    """P(after) − P(before), with a negative breakdown when the quantity went down."""
    if after >= before:
        return incremental_charge(model, before, after - before, dimensions)
    return negated(incremental_charge(model, after, before - after, dimensions))


def _check_dimensions(
    catalog: Catalog, line: UsageLine, path: str, violations: ViolationCollector
) -> None:
    product = catalog.products.get(line.product_key)
    if product is None:
        violations.add(f"{path}.product_key", f"{line.product_key!r} is not a product")
        return
    for name in sorted(set(line.dimensions) - set(product.meter.dimensions)):
        violations.add(
            f"{path}.dimensions.{name}",
            f"{line.product_key!r} has no dimension {name!r}"
            f" (it has {', '.join(product.meter.dimensions) or 'none'})",
        )
