"""Rating one event, purely: find the contract, measure and price it, plan its debit.

Two steps, because the second needs rows locked in the database and the first does not:
`prepare_event` (before any lock: contract in force, meters, price model, cell, period) and
`rate_prepared` (under the locks: P(c + x) − P(c) on the period-to-date quantity, then
`plan_debit` over the pools as they are now).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from rating_service.core.contracts.contract import (
    Contract,
    billing_period_containing,
    nominal_billing_period,
)
from rating_service.core.contracts.debit import invoice_currency_charge, plan_debit
from rating_service.core.contracts.pools import Pool
from rating_service.core.errors import FailedPrecondition, InvalidArgument, NotFound
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.money import EXACT_CONTEXT, exact_sum
from rating_service.core.pricing.aggregation import Aggregation, MeterStep, TimeUnit, aggregate
from rating_service.core.pricing.breakdown import PricedAmount, negated
from rating_service.core.pricing.catalog import Catalog
from rating_service.core.pricing.incremental import incremental_charge, usage_cell
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.meter import Product, UsageEvent
from rating_service.core.pricing.period_price import is_prorated, price_for_period
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.rate_card import RateCard
from rating_service.core.pricing.unit_costs import unit_cost_at
from rating_service.core.rating.rated_event import (
    ChargeLine,
    FiredAlert,
    MeterChange,
    RatedEvent,
)

FUTURE_TOLERANCE = timedelta(minutes=5)
"""Events stamped further ahead than this are refused (DESIGN.md §5: clocks drift, not more)."""

EVENT_IN_FUTURE = "EVENT_IN_FUTURE"
NO_CONTRACT_IN_FORCE = "NO_CONTRACT_IN_FORCE"
UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
PERIOD_CLOSED = "PERIOD_CLOSED"
ZERO = Decimal(0)
OVERAGE = ""
"""The `period_draws` source that stands for overage rather than a pool."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One product the event counts for: its quantity, cell and the contract's price for it."""

    product: Product
    quantity: Decimal
    dimensions: Mapping[str, str]
    model: PriceModel
    card: RateCard
    cell: tuple[str, ...]
    """The matrix cell, then the window's label for a windowed meter."""
    mark: str | None = None
    """The event's entry key where the meter remembers entries (a distinct value, a time)."""


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """An event resolved against the catalog and the customer's contracts, ready to rate."""

    tenant_id: str
    event_id: str
    fingerprint: str
    contract: Contract
    at: datetime
    period: tuple[datetime, datetime]
    measured: tuple[Measured, ...]
    invoiced_period: tuple[datetime, datetime] | None = None
    """The closed period the event fell in, when it was rolled forward into `period`."""


@dataclass(frozen=True, slots=True)
class Counter:
    """A period-to-date quantity and amount (invoice currency) for one product cell."""

    quantity: Decimal = ZERO
    amount: Decimal = ZERO
    events: int = 0
    cost: Decimal = ZERO
    """What the quantity cost us (the product's unit cost); 0 without unit costs."""


@dataclass(slots=True)
class PeriodLedger:
    """A contract's billing period as locked for a batch: spend, usage counters, draws."""

    spend: Decimal
    state: str
    counters: dict[tuple[str, tuple[str, ...]], Counter] = field(default_factory=dict)
    draws: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    """(product, pool id or OVERAGE) → net amount this period."""
    entries: dict[tuple[str, tuple[str, ...]], dict[str, Decimal]] = field(default_factory=dict)
    """(product, cell) → the aggregation entries known around this batch's events' marks."""
    new_entries: dict[tuple[str, tuple[str, ...], str], Decimal] = field(default_factory=dict)
    """(product, cell, entry key) → value, the entries this batch remembers."""

    @property
    def overage(self) -> Decimal:
        """The period's overage over all products."""
        return exact_sum(v for (_, src), v in self.draws.items() if src == OVERAGE)


@dataclass(frozen=True, slots=True)
class Rated:
    """The outcome of one event: the answer, its transfers, and the state after it."""

    result: RatedEvent
    transfers: tuple[Transfer, ...]
    pools_after: dict[str, Pool]
    recharge_due: bool = False
    """The prepaid balance crossed below the contract's auto-recharge threshold."""
    cost: Decimal = ZERO
    """What the event cost us, in the invoice currency (products without unit costs: 0)."""


def prepare_event(
    catalog: Catalog,
    contracts: Sequence[Contract],
    tenant_id: str,
    event_id: str,
    fingerprint: str,
    event: UsageEvent,
    now: datetime,
) -> PreparedEvent:
    """Resolve an event: its contract in force, the products it measures, their prices."""
    at = event.timestamp
    if at > now + FUTURE_TOLERANCE:
        raise InvalidArgument(
            f"the event is stamped {at.isoformat()}, more than 5 minutes ahead of"
            f" {now.isoformat()}",
            [],
            reason=EVENT_IN_FUTURE,
        )
    contract = contract_in_force(contracts, at)
    products = [p for p in catalog.products.values() if p.meter.event_type == event.event_type]
    if not products:
        raise InvalidArgument.of_field(
            "event.event_type", f"no product meters events of type {event.event_type!r}"
        )
    history = catalog.rate_cards.get(contract.rate_card_key)
    if history is None:
        raise NotFound(f"no rate card {contract.rate_card_key!r}", reason="RATE_CARD_NOT_FOUND")
    card = history.in_force_at(at)
    period = billing_period_containing(contract, at)
    measured = []
    for product in sorted(products, key=lambda p: p.key):
        measurement = product.meter.measure(event)
        if measurement is None:  # filtered out: e.g. a conversation that was not resolved
            continue
        model = contract.prices.price(card.price_of(product.key), product.key, product.tags, at)
        # A prorated price shrinks to the part of the period the contract is active.
        if is_prorated(model):
            model = price_for_period(model, nominal_billing_period(contract, at), period)
        cell = usage_cell(model, measurement.dimensions)
        if product.meter.window is not None:
            cell = (*cell, product.meter.window.label(at))
        measured.append(
            Measured(
                product,
                measurement.quantity,
                measurement.dimensions,
                model,
                card,
                cell,
                measurement.mark,
            )
        )
    return PreparedEvent(
        tenant_id,
        event_id,
        fingerprint,
        contract,
        at,
        period,
        tuple(measured),
    )


def rate_prepared(
    prepared: PreparedEvent,
    pools: Mapping[str, Pool],
    period: PeriodLedger,
    invoiced: PeriodLedger | None = None,
) -> Rated:
    """Price and plan the event on the locked state; on success, `period` is updated in place.

    `invoiced` is the closed period of an event rolled forward into `period` (its
    `invoiced_period`): a correction is priced on that period's final quantity.

    A refusal raises and leaves `period` as it was (every line is planned before any is kept).
    """
    if period.state != "open":
        raise FailedPrecondition(
            f"the billing period starting {prepared.period[0].isoformat()} is {period.state};"
            " it no longer takes usage",
            reason=PERIOD_CLOSED,
        )
    contract = prepared.contract
    working = dict(pools)
    spend = period.spend
    counters: dict[tuple[str, tuple[str, ...]], Counter] = {}
    draws: dict[tuple[str, str], Decimal] = {}
    entries: dict[tuple[str, tuple[str, ...], str], Decimal] = {}
    lines: list[ChargeLine] = []
    transfers: list[Transfer] = []
    alerts: list[FiredAlert] = []
    event_draws: dict[str, Decimal] = {}
    event_overage = ZERO
    event_cost = ZERO
    recharge_due = False
    with localcontext(EXACT_CONTEXT):
        for m in prepared.measured:
            key = (m.product.key, m.cell)
            meter = m.product.meter
            base, label = ZERO, ""
            if invoiced is not None and meter.corrections and m.quantity < 0:
                # A correction of an invoiced period: priced on that period's final quantity
                # (the difference it would have made there), booked in its own cell here, so
                # the next invoice shows it as a line and repeated corrections stop at zero.
                assert prepared.invoiced_period is not None
                label = f"correction of {prepared.invoiced_period[0].isoformat()}"
                base = invoiced.counters.get(key, Counter()).quantity
                key = (m.product.key, (*m.cell, label))
            before = counters.get(key) or period.counters.get(key) or Counter()
            change: MeterChange | None = None
            if meter.corrections or meter.window or meter.aggregated_by not in _PLAIN:
                step = _aggregate(m, base + before.quantity, period, entries, prepared.period)
                priced = _repriced(m, base + before.quantity, step.quantity_after, before.events)
                change = MeterChange(
                    str(meter.aggregated_by),
                    m.cell[-1] if meter.window is not None else "",
                    base + before.quantity,
                    step.quantity_after,
                    "; ".join(filter(None, (label, step.note))),
                )
                after = step.quantity_after - base
                entries.update(((m.product.key, m.cell, k), v) for k, v in step.entries)
            else:
                priced = incremental_charge(
                    m.model, before.quantity, m.quantity, m.dimensions, before.events
                )
                after = before.quantity + m.quantity
            charge = invoice_currency_charge(priced.amount, m.card.pricing_unit, contract)

            def drawn(source: str, product: str = m.product.key) -> Decimal:
                return draws.get((product, source), period.draws.get((product, source), ZERO))

            plan = plan_debit(
                contract=contract,
                pools=tuple(working.values()),
                product_key=m.product.key,
                charge=charge,
                at=prepared.at,
                reference=f"event:{prepared.event_id}:{m.product.key}",
                period_spend=spend,
                period_draws={pool_id: drawn(pool_id) for pool_id in working},
                period_overage=drawn(OVERAGE),
            )
            working.update((p.pool_id, p) for p in plan.pools_after)
            spend = plan.period_spend_after
            cost = _cost(m, after - before.quantity, prepared.at, contract)
            event_cost += cost
            counters[key] = Counter(
                after, before.amount + charge, before.events + 1, before.cost + cost
            )
            for pool_id, amount in plan.allocation.parts:
                draws[(m.product.key, pool_id)] = drawn(pool_id) + amount
                event_draws[pool_id] = event_draws.get(pool_id, ZERO) + amount
            if plan.allocation.overage:
                draws[(m.product.key, OVERAGE)] = drawn(OVERAGE) + plan.allocation.overage
                event_overage += plan.allocation.overage
            transfers.extend(plan.transfers)
            recharge_due = recharge_due or plan.recharge_due
            alerts.extend(
                FiredAlert(a.kind.value, a.subject, a.limit, a.measured) for a in plan.alerts
            )
            lines.append(
                ChargeLine(
                    m.product.key,
                    m.quantity,
                    dict(m.dimensions),
                    priced.amount,
                    charge,
                    priced.lines,
                    m.model.dimensions if isinstance(m.model, Matrix) else (),
                    change,
                )
            )
        total = exact_sum(line.amount_in_invoice_currency for line in lines)
    period.spend = spend
    period.counters.update(counters)
    period.draws.update(draws)
    for (product, cell, mark), value in entries.items():
        period.entries.setdefault((product, cell), {})[mark] = value
    period.new_entries.update(entries)
    touched = sorted(event_draws)
    result = RatedEvent(
        prepared.event_id,
        contract.contract_id,
        contract.invoice_currency.code,
        total,
        tuple(lines),
        tuple((pool_id, event_draws[pool_id]) for pool_id in touched),
        event_overage,
        tuple((pool_id, working[pool_id].balance, working[pool_id].pending) for pool_id in touched),
        tuple(alerts),
        prepared.period[0],
        prepared.period[1],
    )
    return Rated(result, tuple(transfers), working, recharge_due, event_cost)


def _cost(m: Measured, added: Decimal, at: datetime, contract: Contract) -> Decimal:
    """The cost of the quantity an event added to its counter, at the unit cost then.

    Zero when the product has no unit cost then, or one in another currency than the
    contract's invoices (there are no exchange rates: such margins are not reported).
    """
    unit = unit_cost_at(m.product.unit_costs, at)
    if unit is None or unit.currency != contract.invoice_currency:
        return ZERO
    return unit.per_unit(m.dimensions) * added


_PLAIN = (Aggregation.SUM, Aggregation.COUNT)
"""Aggregations whose event adds its own quantity (the fast path, unchanged)."""


def _aggregate(
    m: Measured,
    before: Decimal,
    period: PeriodLedger,
    pending: Mapping[tuple[str, tuple[str, ...], str], Decimal],
    period_bounds: tuple[datetime, datetime],
) -> MeterStep:
    """The event's step on its counter, seeing the entries stored and those of this event."""
    meter = m.product.meter
    known: Mapping[str, Decimal] = period.entries.get((m.product.key, m.cell), {})
    mine = {k: v for (p, c, k), v in pending.items() if p == m.product.key and c == m.cell}
    if mine:
        known = {**known, **mine}
    return aggregate(
        meter.aggregated_by,
        before,
        m.quantity,
        m.mark,
        known,
        period_bounds,
        meter.time_unit or TimeUnit.HOUR,
    )


def _repriced(m: Measured, before: Decimal, after: Decimal, events_before: int) -> PricedAmount:
    """P(after) − P(before), also when the quantity went down (a correction, a gauge falling)."""
    with localcontext(EXACT_CONTEXT):
        if after >= before:
            return incremental_charge(m.model, before, after - before, m.dimensions, events_before)
        back = incremental_charge(m.model, after, before - after, m.dimensions, events_before)
        return negated(back)


def contract_in_force(contracts: Sequence[Contract], at: datetime) -> Contract:
    """The version in force at `at` of the customer's contract covering it, or refuse."""
    return contract_covering(contracts, at).at(at)


def contract_covering(contracts: Sequence[Contract], at: datetime) -> Contract:
    """The customer's contract whose term covers `at` (there is at most one), or refuse."""
    for contract in contracts:
        if contract.term_start <= at and (contract.term_end is None or at < contract.term_end):
            return contract
    raise FailedPrecondition(
        f"the customer has no contract in force at {at.isoformat()}",
        reason=NO_CONTRACT_IN_FORCE,
    )
