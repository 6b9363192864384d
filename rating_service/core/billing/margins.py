"""Margins: what a period's usage was sold for, what free credit paid of it, what it cost us.

Per product of a contract's billing period, in the invoice currency:

- revenue: the usage's charges (the period counters' amounts, at the contract's prices);
- free credit: the part of that revenue paid by credit nobody paid for, each draw from a pool
  times (1 − the pool's cost basis): a promotional credit (basis 0) counts whole, a commit
  bought at a 10% discount (basis 0.9) counts a tenth, bought credit (basis 1) nothing;
- cost: the events' unit costs (`rating_service.core.pricing.unit_costs`);
- margin = revenue − free credit − cost, and margin % = margin / (revenue − free credit).

Amounts are exact; only the margin % is rounded (to 2 places, half up), as a ratio for people.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from rating_service.core.money import EXACT_CONTEXT, ROUNDING_CONTEXT, exact_sum

ZERO = Decimal(0)
ONE = Decimal(1)
PERCENT_PLACES = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Margin:
    """One product's (or the period's) revenue, free credit drawn, cost and margin."""

    product_key: str
    revenue: Decimal
    free_credit: Decimal
    cost: Decimal

    @property
    def net_revenue(self) -> Decimal:
        """Revenue less what free credit paid: what the customer pays for."""
        with localcontext(EXACT_CONTEXT):
            return self.revenue - self.free_credit

    @property
    def margin(self) -> Decimal:
        """Net revenue less cost."""
        with localcontext(EXACT_CONTEXT):
            return self.net_revenue - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        """Margin as a percentage of net revenue (2 places); None with no net revenue."""
        if not self.net_revenue:
            return None
        with localcontext(ROUNDING_CONTEXT):
            ratio = self.margin * 100 / self.net_revenue
            return ratio.quantize(PERCENT_PLACES, ROUND_HALF_UP)


def margins(
    usage: Mapping[str, tuple[Decimal, Decimal]],
    draws: Iterable[tuple[str, str, Decimal]],
    cost_basis: Mapping[str, Decimal],
) -> tuple[tuple[Margin, ...], Margin]:
    """Each product's margin and the period's, from its usage, draws and pools' cost basis.

    `usage` maps product keys to (revenue, cost); `draws` are (product key, pool id, amount),
    the overage among them (a source that is no pool) paid for by the customer.
    """
    free: dict[str, Decimal] = {}
    with localcontext(EXACT_CONTEXT):
        for product_key, source, amount in draws:
            basis = cost_basis.get(source)
            if basis is not None and basis < ONE:
                free[product_key] = free.get(product_key, ZERO) + amount * (ONE - basis)
    rows = tuple(
        Margin(key, revenue, free.get(key, ZERO), cost)
        for key, (revenue, cost) in sorted(usage.items())
    )
    total = Margin(
        "",
        exact_sum(r.revenue for r in rows),
        exact_sum(r.free_credit for r in rows),
        exact_sum(r.cost for r in rows),
    )
    return rows, total
