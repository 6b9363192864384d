"""What customers see: pool balances now, and period-to-date usage with a forecast to period end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, localcontext

from rating_service.core.billing.margins import Margin, margins
from rating_service.core.contracts.contract import Contract, billing_period_containing
from rating_service.core.contracts.pools import Pool
from rating_service.core.money import ROUNDING_CONTEXT, exact_sum
from rating_service.core.pricing.aggregation import Aggregation
from rating_service.core.pricing.incremental import incremental_charge
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_terms import PriceWithTerms
from rating_service.core.rating.rate import contract_in_force
from rating_service.services.catalog import Catalogs
from rating_service.store.books import ContractBooks
from rating_service.store.rating import RatingStore

ZERO = Decimal(0)
FORECAST_PLACES = Decimal("1e-12")
"""Forecasts divide by the elapsed share of the period; they are estimates, kept to 12 places."""


@dataclass(frozen=True, slots=True)
class Balances:
    """Every pool of the contract in force, and what can be spent now."""

    contract_id: str
    invoice_currency: str
    pools: tuple[Pool, ...]
    available: Decimal
    overage: Decimal


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Period-to-date usage of one product cell, and where it is heading."""

    product_key: str
    dimensions: dict[str, str]
    quantity: Decimal
    amount: Decimal
    forecast_quantity: Decimal
    forecast_amount: Decimal
    cost: Decimal = ZERO
    """What the usage cost us (its product's unit costs)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """A contract's usage in the billing period containing a moment."""

    contract_id: str
    invoice_currency: str
    period_start: datetime
    period_end: datetime
    rows: tuple[UsageRow, ...]
    total: Decimal
    forecast_total: Decimal


@dataclass(frozen=True)
class DailySpend:
    """What the events of one UTC day of the period charged, in the invoice currency, exact."""

    day: date
    amount: Decimal
    events: int


@dataclass(frozen=True, slots=True)
class Margins:
    """A contract's margins in the billing period containing a moment: per product, in all."""

    contract_id: str
    invoice_currency: str
    period_start: datetime
    period_end: datetime
    products: tuple[Margin, ...]
    total: Margin


class AccountViews:
    """Reads for GetBalances and GetUsage (not on the hot path: they read the database)."""

    def __init__(self, store: RatingStore, books: ContractBooks, catalogs: Catalogs) -> None:
        self._store = store
        self._books = books
        self._catalogs = catalogs

    async def balances(self, tenant_id: str, customer_id: str, at: datetime) -> Balances:
        """The pools of the customer's contract in force at `at`, with balances as of now."""
        contract = await self._contract(tenant_id, customer_id, at)
        fresh = await self._store.customer_book(tenant_id, customer_id)
        pools = fresh.pools.get(contract.contract_id, ())
        start, _ = billing_period_containing(contract, at)
        async with self._store.pool.acquire() as conn:
            overage = await conn.fetchval(
                "SELECT overage FROM contract_periods"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3",
                tenant_id,
                contract.contract_id,
                start,
            )
        available = exact_sum(p.available for p in pools if p.is_drawable and p.is_active_at(at))
        return Balances(
            contract.contract_id,
            contract.invoice_currency.code,
            pools,
            available,
            overage or ZERO,
        )

    async def daily_spend(
        self, tenant_id: str, customer_id: str, at: datetime
    ) -> tuple[str, list[DailySpend]]:
        """(contract id, each UTC day's charges) of the period containing `at`, by event time.

        Read from the rated events (one row per event, indexed by contract and period), so
        the days add up to the period's usage total; a day without events is left out.
        """
        contract = await self._contract(tenant_id, customer_id, at)
        start, _ = billing_period_containing(contract, at)
        async with self._store.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT (event_time AT TIME ZONE 'UTC')::date AS day, sum(charge) AS amount,"
                " count(*) AS events FROM rated_events"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3"
                " GROUP BY day ORDER BY day",
                tenant_id,
                contract.contract_id,
                start,
            )
        return contract.contract_id, [
            DailySpend(row["day"], row["amount"], row["events"]) for row in rows
        ]

    async def usage(self, tenant_id: str, customer_id: str, at: datetime) -> Usage:
        """Usage per product cell in the period containing `at`, with a linear forecast."""
        contract = await self._contract(tenant_id, customer_id, at)
        start, end = billing_period_containing(contract, at)
        async with self._store.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT product_key, cell, quantity, amount, cost FROM usage_counters"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3"
                " ORDER BY product_key, cell",
                tenant_id,
                contract.contract_id,
                start,
            )
        catalog = await self._catalogs.catalog(tenant_id)
        card = catalog.rate_cards[contract.rate_card_key].in_force_at(min(at, end))
        elapsed = (min(at, end) - start).total_seconds()
        with localcontext(ROUNDING_CONTEXT):  # a forecast is an estimate: it may round
            share = Decimal(int(elapsed)) / Decimal(int((end - start).total_seconds()))
        usage_rows = []
        for row in rows:
            product = catalog.products[row["product_key"]]
            model = contract.prices.price(card.price_of(product.key), product.key, product.tags, at)
            cell = tuple(row["cell"])
            names = model.dimensions if isinstance(model, Matrix) else ()
            dimensions = dict(zip(names, cell, strict=False))
            quantity, amount = row["quantity"], row["amount"]
            forecast_quantity = _forecast(quantity, share)
            settled = product.meter.window is not None or product.meter.aggregated_by in _SETTLED
            if settled or quantity < 0:
                # A peak, a gauge, an integral charged to the period's end, a past window or a
                # correction of an invoiced period does not grow with time elapsed: what is
                # charged now is the forecast.
                forecast_quantity, forecast_amount = quantity, amount
            elif isinstance(model, Percentage) or (
                isinstance(model, PriceWithTerms) and model.prices_each_event
            ):  # priced per event, not by the period's total
                forecast_amount = _forecast(amount, share)
            else:
                priced = incremental_charge(model, ZERO, forecast_quantity, dimensions).amount
                forecast_amount = card.pricing_unit.to_invoice_currency(priced)
            usage_rows.append(
                UsageRow(
                    product.key,
                    dimensions,
                    quantity,
                    amount,
                    forecast_quantity,
                    forecast_amount,
                    row["cost"],
                )
            )
        total = exact_sum(r.amount for r in usage_rows)
        forecast_total = exact_sum(r.forecast_amount for r in usage_rows)
        return Usage(
            contract.contract_id,
            contract.invoice_currency.code,
            start,
            end,
            tuple(usage_rows),
            total,
            forecast_total,
        )

    async def margins(self, tenant_id: str, customer_id: str, at: datetime) -> Margins:
        """Revenue, free credit drawn, cost and margin per product of the period holding `at`."""
        contract = await self._contract(tenant_id, customer_id, at)
        start, end = billing_period_containing(contract, at)
        usage, draws, cost_basis = await self._store.margin_inputs(
            tenant_id, contract.contract_id, start
        )
        products, total = margins(usage, draws, cost_basis)
        return Margins(
            contract.contract_id, contract.invoice_currency.code, start, end, products, total
        )

    async def _contract(self, tenant_id: str, customer_id: str, at: datetime) -> Contract:
        return contract_in_force((await self._books.book(tenant_id, customer_id)).contracts, at)


_SETTLED = (Aggregation.MAX, Aggregation.LATEST, Aggregation.TIME_WEIGHTED_SUM)


def _forecast(value: Decimal, share: Decimal) -> Decimal:
    if share <= 0:
        return value
    with localcontext(ROUNDING_CONTEXT):
        return (value / share).quantize(FORECAST_PLACES)
