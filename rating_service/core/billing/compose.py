"""Compose an invoice from a closed period: usage, fees, commits, credits applied, true-up.

Usage is aggregated, never re-rated: a usage line's amount is the exact sum of its events'
charges, read from the period counters, so the invoice costs the same for 10 events or 10
million. Each line is rounded once, half up, to the currency's minor unit; the total is the
sum of the rounded lines.

Order of the lines: usage in arrears (by product, then matrix cell), each followed by its
maximum-spend discount (negative) when its price caps the period, minimum-spend top-ups,
credits and commits applied to that usage (negative), recurring fees (arrears for the closed
period, including first-tier fees owed at zero usage, then advance for the next), prepaid
commits due, and at term end the postpaid true-up.

A price's period terms (`rating_service.core.pricing.price_terms`) are read from the price in
force at the period's last moment, prorated to the part of the period the contract was active.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal, Inexact, localcontext
from itertools import pairwise

from rating_service.core.billing.invoice import (
    Invoice,
    InvoiceLine,
    LineKind,
    PoolBalance,
    TierLine,
    invoice_id_for,
    rounded_line,
)
from rating_service.core.billing.schedule import BillingDate
from rating_service.core.contracts.contract import Contract, nominal_billing_period
from rating_service.core.contracts.overrides import effective_price
from rating_service.core.contracts.pools import CommitmentKind, Pool
from rating_service.core.errors import DomainError
from rating_service.core.money import EXACT_CONTEXT, PricingUnit, exact_sum
from rating_service.core.pricing.aggregation import Aggregation
from rating_service.core.pricing.breakdown import LineItem, PriceLine
from rating_service.core.pricing.catalog import Catalog
from rating_service.core.pricing.flat_fee import BillingTiming, FlatFee
from rating_service.core.pricing.matrix import CellPriceModel, Matrix
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.period_price import price_for_period
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.price_terms import PriceWithTerms
from rating_service.core.pricing.proration import prorate, share_of
from rating_service.core.pricing.seat_fee import SeatFee
from rating_service.core.pricing.spend_limits import minimum_top_up

ZERO = Decimal(0)
_MICROSECOND = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_JUST_BEFORE = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """A closed period's usage of one product (one matrix cell): Σ quantities and Σ charges."""

    product_key: str
    cell: tuple[str, ...]
    quantity: Decimal
    amount: Decimal
    events: int


@dataclass(frozen=True, slots=True)
class InvoiceInputs:
    """Everything an invoice is made from, read after its period was closed.

    `drawn` is what each pool paid of the closed period's usage (the overage is the rest);
    `pools` are the contract's pools now (for commits due and balances left);
    `billed_commitments` the pools a live invoice already billed; `term_usage` the usage
    charged per product over the whole term (read on the final date, for the true-up).
    """

    tenant_id: str
    contract: Contract
    date: BillingDate
    catalog: Catalog
    usage: tuple[UsageTotal, ...] = ()
    drawn: Mapping[str, Decimal] | None = None
    pools: tuple[Pool, ...] = ()
    billed_commitments: frozenset[str] = frozenset()
    term_usage: Mapping[str, Decimal] | None = None
    revision: int = 0


def compose_invoice(inputs: InvoiceInputs) -> Invoice:
    """The draft invoice of a billing date, every line rounded once.

    It reads the contract's amendments recorded by the billing date only, so the invoice of
    a date is the same whenever it is composed (a replay, a regeneration after a void).
    """
    inputs = replace(inputs, contract=inputs.contract.as_known_at(inputs.date.at))
    contract, when = inputs.contract, inputs.date
    currency = contract.invoice_currency
    pools = {pool.pool_id: pool for pool in inputs.pools}
    lines: list[InvoiceLine] = []
    if when.arrears is not None:
        lines.extend(_usage_lines(inputs, when.arrears))
        lines.extend(_minimum_spend_lines(inputs, when.arrears))
        for pool_id, amount in sorted((inputs.drawn or {}).items()):
            if amount and pool_id in pools:
                pool = pools[pool_id]
                lines.append(
                    rounded_line(
                        currency,
                        LineKind.CREDIT,
                        f"credit:{pool_id}",
                        f"{describe_pool(pool)} applied",
                        when.arrears,
                        -amount,
                    )
                )
        lines.extend(_fee_lines(inputs, when.arrears, BillingTiming.IN_ARREARS))
        lines.extend(_advance_fee_changes(inputs, when.arrears))
        lines.extend(_first_tier_fee_lines(inputs, when.arrears))
    if when.advance is not None:
        lines.extend(_fee_lines(inputs, when.advance, BillingTiming.IN_ADVANCE))
    lines.extend(_commit_lines(inputs))
    if when.is_final:
        lines.extend(_true_up_lines(inputs))
    period = when.arrears or when.advance or (when.at, when.at)
    return Invoice(
        invoice_id_for(contract.contract_id, when.at, inputs.revision),
        inputs.tenant_id,
        contract.contract_id,
        contract.customer_id,
        currency,
        when.at,
        period[0],
        period[1],
        tuple(lines),
        tuple(
            PoolBalance(pool.pool_id, describe_pool(pool), pool.balance, pool.expires_at)
            for pool in sorted(inputs.pools, key=lambda p: p.created_seq)
            if pool.is_drawable
        ),
        inputs.revision,
    )


def describe_pool(pool: Pool) -> str:
    """How a pool is named on an invoice."""
    if pool.kind is CommitmentKind.PREPAID_COMMIT:
        return f"Prepaid commit {pool.pool_id}"
    if pool.kind is CommitmentKind.POSTPAID_COMMIT:
        return f"Postpaid commit {pool.pool_id}"
    return f"{'Promotional' if pool.is_free else 'Purchased'} credit {pool.pool_id}"


AGGREGATION_LABELS = {
    Aggregation.MAX: "peak",
    Aggregation.UNIQUE_COUNT: "distinct",
    Aggregation.LATEST: "last reading",
    Aggregation.TIME_WEIGHTED_SUM: "time-weighted",
}
"""How an invoice line names the quantity of a meter that does not simply add events up."""


def _usage_lines(inputs: InvoiceInputs, period: tuple[datetime, datetime]) -> list[InvoiceLine]:
    contract, catalog = inputs.contract, inputs.catalog
    lines = []
    for usage in sorted(inputs.usage, key=lambda u: (u.product_key, u.cell)):
        if not usage.events and not usage.amount:
            continue
        product = catalog.products.get(usage.product_key)
        name = (product.name or product.key) if product is not None else usage.product_key
        if product is not None and product.meter.aggregated_by in AGGREGATION_LABELS:
            name = f"{name} ({AGGREGATION_LABELS[product.meter.aggregated_by]})"
        tiers, capped = _breakdown(inputs, usage, period)
        key = f"{usage.product_key}:{json.dumps(list(usage.cell))}"
        description = " · ".join((name, *usage.cell))
        with localcontext(EXACT_CONTEXT):
            uncapped = usage.amount + capped
        lines.append(
            rounded_line(
                contract.invoice_currency,
                LineKind.USAGE,
                f"usage:{key}",
                description,
                period,
                uncapped,
                product_key=usage.product_key,
                quantity=usage.quantity,
                unit_price=_single_unit_price(tiers, usage.quantity),
                events=usage.events,
                tiers=tiers,
            )
        )
        if capped:
            lines.append(
                rounded_line(
                    contract.invoice_currency,
                    LineKind.DISCOUNT,
                    f"maximum_spend:{key}",
                    f"{description}: above the maximum spend",
                    period,
                    -capped,
                    product_key=usage.product_key,
                )
            )
    return lines


def _breakdown(
    inputs: InvoiceInputs, usage: UsageTotal, period: tuple[datetime, datetime]
) -> tuple[tuple[TierLine, ...], Decimal]:
    """The tiers that explain a usage line, and the part its maximum spend took off the events.

    The line shows the usage before the cap, and the capped part follows as a discount line,
    so the two add up to the events' charges. When prices changed during the period (a new rate
    card version, an override starting), the period's amount is a sum over several prices and
    no single breakdown adds up to it: the line then shows its quantity and amount only.
    """
    try:
        product = inputs.catalog.products.get(usage.product_key)
        # A windowed meter's cell ends with its window's label, after the matrix cell.
        cell = usage.cell[:-1] if product is not None and product.meter.window else usage.cell
        priced = _cell_price(inputs, usage.product_key, cell, period)
        if priced is None:
            return (), ZERO
        cell_model, unit = priced
        if isinstance(cell_model, FlatFee | Percentage):
            return (), ZERO  # a fee is its own line; a percentage prices each event's value
        capped = ZERO
        if isinstance(cell_model, PriceWithTerms):
            if cell_model.prices_each_event:
                return (), ZERO
            # What the events were charged, T(q) − T(0): a fee owed at zero is its own line.
            total = cell_model.incremental_charge(ZERO, usage.quantity)
            capped = -exact_sum(
                line.amount for line in total.lines if line.item is LineItem.MAXIMUM_SPEND
            )
            explaining = [line for line in total.lines if line.item is not LineItem.MAXIMUM_SPEND]
        else:
            total = cell_model.period_total(usage.quantity)
            explaining = list(total.lines)
        tiers = tuple(_tier_line(line, unit) for line in explaining)
    except DomainError:
        return (), ZERO
    if unit.to_invoice_currency(total.amount) != usage.amount:
        return (), ZERO
    return tiers, unit.to_invoice_currency(capped)


def _cell_price(
    inputs: InvoiceInputs,
    product_key: str,
    cell: tuple[str, ...],
    period: tuple[datetime, datetime],
) -> tuple[CellPriceModel, PricingUnit] | None:
    """The price of a product (a matrix's cell) for a period: at its last moment, prorated."""
    priced = _price_at(inputs, product_key, period[1] - _JUST_BEFORE)
    if priced is None:
        return None
    model, unit = priced
    model = price_for_period(model, nominal_billing_period(inputs.contract, period[0]), period)
    if isinstance(model, Matrix):
        return (model.price_of(cell), unit) if cell else None
    if isinstance(model, SeatFee):
        return None  # seats are not usage: the fee is a line of its own
    return model, unit


def _terms_by_cell(
    inputs: InvoiceInputs, period: tuple[datetime, datetime]
) -> list[tuple[str, tuple[str, ...], PriceWithTerms, PricingUnit]]:
    """Every product (matrix cell) whose price has period terms, in product and cell order."""
    found = []
    for key in sorted(inputs.catalog.products):
        try:
            priced = _cell_price(inputs, key, (), period)
            whole = _price_at(inputs, key, period[1] - _JUST_BEFORE)
            if whole is not None and isinstance(whole[0], Matrix):
                for cell in sorted(c.values for c in whole[0].cells):
                    in_cell = _cell_price(inputs, key, cell, period)
                    if in_cell is not None and isinstance(in_cell[0], PriceWithTerms):
                        found.append((key, cell, in_cell[0], in_cell[1]))
            elif priced is not None and isinstance(priced[0], PriceWithTerms):
                found.append((key, (), priced[0], priced[1]))
        except DomainError:
            continue  # a price that no longer fits (an override) bills its usage only
    return found


def _first_tier_fee_lines(
    inputs: InvoiceInputs, period: tuple[datetime, datetime]
) -> list[InvoiceLine]:
    """The first tier's flat fee of each price that owes it at zero usage: once per period."""
    lines = []
    for key, cell, price, unit in _terms_by_cell(inputs, period):
        fee = unit.to_invoice_currency(price.period_fee())
        if not fee:
            continue
        name = _product_name(inputs, key)
        lines.append(
            rounded_line(
                inputs.contract.invoice_currency,
                LineKind.FEE,
                f"first_tier_fee:{key}:{json.dumps(list(cell))}",
                f"{' · '.join((name, *cell))}: first tier fee",
                period,
                fee,
                product_key=key,
                quantity=Decimal(1),
                unit_price=fee,
            )
        )
    return lines


def _minimum_spend_lines(
    inputs: InvoiceInputs, period: tuple[datetime, datetime]
) -> list[InvoiceLine]:
    """A top-up for each price whose period spend (fee at zero + usage) is below its minimum."""
    usage = {(u.product_key, u.cell): u.amount for u in inputs.usage}
    lines = []
    for key, cell, price, unit in _terms_by_cell(inputs, period):
        if price.terms.minimum_spend is None:
            continue
        with localcontext(EXACT_CONTEXT):
            spent = usage.get((key, cell), ZERO) + unit.to_invoice_currency(price.period_fee())
        top_up = minimum_top_up(spent, unit.to_invoice_currency(price.terms.minimum_spend))
        if not top_up:
            continue
        name = _product_name(inputs, key)
        lines.append(
            rounded_line(
                inputs.contract.invoice_currency,
                LineKind.MINIMUM_SPEND,
                f"minimum_spend:{key}:{json.dumps(list(cell))}",
                f"{' · '.join((name, *cell))}: minimum spend top-up",
                period,
                top_up,
                product_key=key,
            )
        )
    return lines


def _product_name(inputs: InvoiceInputs, key: str) -> str:
    product = inputs.catalog.products.get(key)
    return (product.name or product.key) if product is not None else key


def _single_unit_price(tiers: tuple[TierLine, ...], quantity: Decimal) -> Decimal | None:
    """The unit price that explains the whole line (quantity × it = amount), if one does.

    A package's block price or a tier with a flat fee is a single breakdown line, yet no price
    per unit of the line's quantity.
    """
    if len(tiers) != 1:
        return None
    only = tiers[0]
    with localcontext(EXACT_CONTEXT):
        explains = only.quantity == quantity and quantity * only.unit_price == only.amount
    return only.unit_price if explains else None


def _tier_line(line: PriceLine, unit: PricingUnit) -> TierLine:
    if line.item is LineItem.TIER and line.tier is not None:
        description = f"Tier {line.tier + 1}"
    else:
        description = line.item.replace("_", " ").capitalize()
    amount = unit.to_invoice_currency(line.amount)
    return TierLine(description, line.quantity, unit.to_invoice_currency(line.unit_price), amount)


def _price_at(
    inputs: InvoiceInputs, product_key: str, at: datetime
) -> tuple[PriceModel, PricingUnit] | None:
    """The price of a product at `at` in the contract version then in force, and its unit.

    None if unpriced.
    """
    version = inputs.contract.at(at)
    product = inputs.catalog.products.get(product_key)
    history = inputs.catalog.rate_cards.get(version.rate_card_key)
    if product is None or history is None:
        return None
    try:
        card = history.in_force_at(at)
        base = card.price_of(product_key)
    except DomainError:
        return None
    model = effective_price(base, product_key, product.tags, version.overrides, at)
    return model, card.pricing_unit


def _fee_lines(
    inputs: InvoiceInputs, period: tuple[datetime, datetime], timing: BillingTiming
) -> list[InvoiceLine]:
    """A line per recurring fee and per stretch of the period one fee price was in force.

    Proration divides by the whole billing period (not the one cut to the term), by UTC days,
    or by the microsecond for periods shorter than a day.
    """
    contract = inputs.contract
    nominal = nominal_billing_period(contract, period[0])
    lines = []
    for key in sorted(inputs.catalog.products):
        for (start, end), fee in _fee_stretches(inputs, key, period, timing):
            share = _prorated(fee.amount, nominal, (start, end))
            if not share:
                continue
            partial = (start, end) != nominal
            lines.append(
                rounded_line(
                    contract.invoice_currency,
                    LineKind.FEE,
                    f"fee:{key}:{start.isoformat()}",
                    f"{fee.describe(_product_name(inputs, key))}{' (prorated)' if partial else ''}",
                    (start, end),
                    share,
                    product_key=key,
                    quantity=fee.quantity,
                    unit_price=fee.unit_price,
                )
            )
    return lines


@dataclass(frozen=True, slots=True)
class _Fee:
    """A recurring fee for a whole period: a flat fee, or a seat fee at a number of seats."""

    amount: Decimal
    seats: int | None = None

    @property
    def quantity(self) -> Decimal:
        return Decimal(1 if self.seats is None else self.seats)

    @property
    def unit_price(self) -> Decimal | None:
        if self.seats is None:
            return self.amount
        return None if not self.seats else _single_price(self.amount, self.seats)

    def describe(self, name: str) -> str:
        if self.seats is None:
            return name
        return f"{name} · {self.seats} seat{'' if self.seats == 1 else 's'}"


_NO_FEE = _Fee(ZERO)


def _single_price(amount: Decimal, seats: int) -> Decimal | None:
    """The price per seat when it divides the fee exactly (tiered seats may not)."""
    with localcontext(EXACT_CONTEXT) as context:
        try:
            each = amount / seats
        except ArithmeticError:
            return None
        return each if not context.flags[Inexact] else None


def _fee_stretches(
    inputs: InvoiceInputs,
    product_key: str,
    period: tuple[datetime, datetime],
    timing: BillingTiming,
) -> list[tuple[tuple[datetime, datetime], _Fee]]:
    """The stretches of the period a fee of this timing was in force, and the fee in each.

    Neighbouring stretches with the same fee are one: a price change elsewhere (another
    product's override, a new rate card version keeping this fee) does not split the fee.
    """
    found: list[tuple[tuple[datetime, datetime], _Fee]] = []
    for start, end in _stretches(inputs, period):
        fee = _fee_at(inputs, product_key, start, timing)
        if not fee.amount:
            continue
        if found and found[-1][0][1] == start and found[-1][1] == fee:
            found[-1] = ((found[-1][0][0], end), fee)
        else:
            found.append(((start, end), fee))
    return found


def _advance_fee_changes(
    inputs: InvoiceInputs, period: tuple[datetime, datetime]
) -> list[InvoiceLine]:
    """Settle in-advance fees of the closed period that an amendment changed after billing.

    The invoice opening `period` charged its in-advance fees as the contract was known then.
    For each stretch an amendment recorded since has changed such a fee (its price, or the
    seats it charges for), the unused part of the fee charged is credited and the fee now in
    force is charged for the same days, both prorated like any fee: two lines that explain
    the change. A seat increase is so charged, and a decrease credited, on the next invoice.
    """
    billed = replace(inputs, contract=inputs.contract.as_known_at(period[0]))
    if billed.contract is inputs.contract:
        return []
    contract = inputs.contract
    nominal = nominal_billing_period(contract, period[0])
    lines = []
    for key in sorted(inputs.catalog.products):
        changes: list[tuple[tuple[datetime, datetime], _Fee, _Fee]] = []
        for start, end in _stretches(inputs, period):
            was = _fee_at(billed, key, start, BillingTiming.IN_ADVANCE)
            now = _fee_at(inputs, key, start, BillingTiming.IN_ADVANCE)
            if was == now:
                continue
            if changes and changes[-1][0][1] == start and changes[-1][1:] == (was, now):
                changes[-1] = ((changes[-1][0][0], end), was, now)
            else:
                changes.append(((start, end), was, now))
        name = _product_name(inputs, key)
        for (start, end), was, now in changes:
            since = f"from {start.date().isoformat()}"
            for fee, sign, description, line_key in (
                (was, -1, f"{was.describe(name)}: unused part, changed {since}", "fee_unused"),
                (now, 1, f"{now.describe(name)}: as amended, {since}", "fee_amended"),
            ):
                share = _prorated(sign * fee.amount, nominal, (start, end))
                if share:
                    lines.append(
                        rounded_line(
                            contract.invoice_currency,
                            LineKind.FEE,
                            f"{line_key}:{key}:{start.isoformat()}",
                            description,
                            (start, end),
                            share,
                            product_key=key,
                            quantity=fee.quantity,
                            unit_price=None if fee.unit_price is None else sign * fee.unit_price,
                        )
                    )
    return lines


def _fee_at(inputs: InvoiceInputs, product_key: str, at: datetime, timing: BillingTiming) -> _Fee:
    """The recurring fee of this timing the contract charges for a product at `at`."""
    priced = _price_at(inputs, product_key, at)
    if priced is None:
        return _NO_FEE
    model, unit = priced
    if isinstance(model, FlatFee) and model.timing is timing:
        return _Fee(unit.to_invoice_currency(model.amount))
    if isinstance(model, SeatFee) and model.timing is timing:
        seats = inputs.contract.at(at).seats
        return _Fee(unit.to_invoice_currency(model.period_total(Decimal(seats)).amount), seats)
    return _NO_FEE


def _stretches(
    inputs: InvoiceInputs, period: tuple[datetime, datetime]
) -> list[tuple[datetime, datetime]]:
    """The period cut wherever a price may change: amendments, rate card versions, overrides."""
    contract = inputs.contract
    versions = [version for _, version in contract.versions] or [contract]
    moments: set[datetime] = {amendment.effective_at for amendment in contract.amendments}
    for version in versions:
        history = inputs.catalog.rate_cards.get(version.rate_card_key)
        for card in history.versions if history is not None else ():
            moments.update((card.effective_from, card.effective_until or period[0]))
        for override in version.overrides:
            moments.update((override.effective_from, override.effective_until or period[0]))
    inside = sorted(m for m in moments if period[0] < m < period[1])
    cuts = [period[0], *inside, period[1]]
    return list(pairwise(cuts))


def _prorated(
    amount: Decimal, nominal: tuple[datetime, datetime], part: tuple[datetime, datetime]
) -> Decimal:
    if part == nominal:
        return amount
    if nominal[1] - nominal[0] >= _ONE_DAY:
        return prorate(amount, nominal[0], nominal[1], part[0], part[1])
    return share_of(
        amount, (part[1] - part[0]) // _MICROSECOND, (nominal[1] - nominal[0]) // _MICROSECOND
    )


def _commit_lines(inputs: InvoiceInputs) -> list[InvoiceLine]:
    """Prepaid commits that have started and are not on a live invoice yet: their paid part."""
    lines = []
    for pool in sorted(inputs.pools, key=lambda p: p.created_seq):
        if pool.kind is not CommitmentKind.PREPAID_COMMIT:
            continue
        if pool.starts_at > inputs.date.at or pool.pool_id in inputs.billed_commitments:
            continue
        with localcontext(EXACT_CONTEXT):
            price = pool.original_amount * pool.cost_basis
        if not price:
            continue
        end = pool.expires_at or inputs.contract.term_end or pool.starts_at
        lines.append(
            rounded_line(
                inputs.contract.invoice_currency,
                LineKind.COMMIT,
                f"commit:{pool.pool_id}",
                describe_pool(pool),
                (pool.starts_at, end),
                price,
                quantity=pool.original_amount,
                unit_price=pool.cost_basis,
            )
        )
    return lines


def _true_up_lines(inputs: InvoiceInputs) -> list[InvoiceLine]:
    """Each postpaid commit's shortfall: the minimum spend less the term's usage in its scope."""
    contract = inputs.contract
    spend = inputs.term_usage or {}
    term = (contract.term_start, inputs.date.at)
    lines = []
    for pool in sorted(inputs.pools, key=lambda p: p.created_seq):
        if pool.kind is not CommitmentKind.POSTPAID_COMMIT:
            continue
        used = exact_sum(
            amount for key, amount in spend.items() if pool.scope is None or key in pool.scope
        )
        with localcontext(EXACT_CONTEXT):
            shortfall = pool.original_amount - used
        if shortfall <= 0:
            continue
        lines.append(
            rounded_line(
                contract.invoice_currency,
                LineKind.TRUE_UP,
                f"true_up:{pool.pool_id}",
                f"{describe_pool(pool)} true-up",
                term,
                shortfall,
                quantity=pool.original_amount,
            )
        )
    return lines
