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
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.meter import Product
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.price_terms import PriceWithTerms
from rating_service.core.pricing.rate_card import RateCard
from rating_service.core.pricing.spend_limits import minimum_top_up


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
class PeriodLine:
    """What a price's period terms would add on the invoice if the period ended with this usage.

    `kind` is `first_tier_fee` (owed at zero usage) or `minimum_spend` (the top-up).
    """

    product_key: str
    cell: tuple[str, ...]
    kind: str
    amount: Decimal


FIRST_TIER_FEE = "first_tier_fee"
MINIMUM_SPEND = "minimum_spend"


@dataclass(frozen=True, slots=True)
class Quote:
    """The rate card version used, the priced lines and their exact total in its pricing unit.

    `period_lines` are the invoice lines the quoted prices' period terms would add for a period
    holding exactly the period-to-date usage and the quoted lines; they are not in `total`.
    """

    rate_card: RateCard
    lines: tuple[QuotedLine, ...]
    total: Decimal
    period_lines: tuple[PeriodLine, ...] = ()

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

    Each period-to-date line counts as one event of the period (a percentage's free events
    count them). `adjust` applies a contract's terms to each list price (the default quotes
    list prices).
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

    events: dict[tuple[str, tuple[str, ...]], int] = {}
    # What each cell's events are charged over the period (period-to-date lines included).
    spent: dict[tuple[str, tuple[str, ...]], Decimal] = {}
    prices: dict[tuple[str, tuple[str, ...]], PriceModel] = {}
    quoted = []
    with localcontext(EXACT_CONTEXT):
        total = Decimal(0)
        for is_quoted, line in [(False, x) for x in period_to_date] + [(True, x) for x in lines]:
            model = price(line.product_key)
            key = (line.product_key, usage_cell(model, line.dimensions))
            prices[key] = model
            before = used.get(key, Decimal(0))
            aggregated_by = aggregation(line.product_key)
            after = aggregated_by.combine(before, line.quantity)
            priced = _change(model, before, after, line.dimensions, events.get(key, 0))
            used[key] = after
            events[key] = events.get(key, 0) + 1
            spent[key] = spent.get(key, Decimal(0)) + priced.amount
            if is_quoted:
                quoted.append(QuotedLine(line, priced, before, after, aggregated_by))
                total += priced.amount
        period_lines = _period_lines(prices, spent)
    return Quote(card, tuple(quoted), total, period_lines)


def _period_lines(
    prices: Mapping[tuple[str, tuple[str, ...]], PriceModel],
    spent: Mapping[tuple[str, tuple[str, ...]], Decimal],
) -> tuple[PeriodLine, ...]:
    """The first-tier fees and minimum top-ups of the cells the quote touched."""
    found = []
    for (product_key, cell), model in sorted(prices.items()):
        price = model.price_of(cell) if isinstance(model, Matrix) else model
        if not isinstance(price, PriceWithTerms):
            continue
        fee = price.period_fee()
        if fee:
            found.append(PeriodLine(product_key, cell, FIRST_TIER_FEE, fee))
        top_up = minimum_top_up(fee + spent[(product_key, cell)], price.terms.minimum_spend)
        if top_up:
            found.append(PeriodLine(product_key, cell, MINIMUM_SPEND, top_up))
    return tuple(found)


def _change(
    model: PriceModel,
    before: Decimal,
    after: Decimal,
    dimensions: Mapping[str, str],
    events_before: int,
) -> PricedAmount:
    """P(after) − P(before), with a negative breakdown when the quantity went down."""
    if after >= before:
        return incremental_charge(model, before, after - before, dimensions, events_before)
    return negated(incremental_charge(model, after, before - after, dimensions, events_before))


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
