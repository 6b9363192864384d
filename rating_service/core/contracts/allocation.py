"""Splitting one event's charge across a contract's pools, the overage policy and the spend cap.

Amounts here are in the contract's invoice currency: convert the rated charge with the rate
card's `PricingUnit.to_invoice_currency` first (pools hold invoice-currency amounts). Charges keep
full precision; nothing is rounded.

A positive charge is drawn from the pools in draw-down order, each pool giving at most what it
has available (balance − pending); the remainder is overage under `arrears`, or the whole event
is refused under `block`.

A negative charge (a volume tier crossed into a cheaper price) is a credit back, undoing the
period's most recent spend first (last in, first out), never giving a pool more than this
product took from it this period:
1. it first reduces the product's overage accrued this period (overage is drawn last, so it is
   given back first);
2. then it returns to the pools in reverse draw-down order, each up to its net draws for this
   product this period (`period_draws`);
3. anything left (its pool has since expired or left the order) becomes negative overage: a
   credit to the customer on the next invoice, never money put back into an expired pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType

from rating_service.core.contracts.pools import MovementAction, Pool, PoolMovement
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ResourceExhausted,
)
from rating_service.core.ledger.journal import INSUFFICIENT_CREDIT
from rating_service.core.money import exact_sum, format_decimal
from rating_service.core.pricing.constraints import priced_exactly

SPEND_CAP_EXCEEDED = "SPEND_CAP_EXCEEDED"
"""ResourceExhausted reason: the event would take the period's spend beyond the spend cap."""

ZERO = Decimal(0)
_NOTHING: Mapping[str, Decimal] = MappingProxyType({})


class OveragePolicy(StrEnum):
    """What happens when the applicable pools cannot cover a charge."""

    BLOCK = "block"
    """Refuse the event; nothing changes."""
    ARREARS = "arrears"
    """Accrue the remainder as overage, invoiced at the end of the billing cycle."""


@dataclass(frozen=True, slots=True)
class PoolDraw:
    """One part of a charge taken from one pool (a negative amount is given back to it)."""

    pool_id: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Allocation:
    """How one charge was covered: a part per pool in draw-down order, and the overage.

    `Σ draws + overage == charge`, always. Each draw is its own ledger movement.
    """

    charge: Decimal
    draws: tuple[PoolDraw, ...]
    overage: Decimal

    @property
    def drawn(self) -> Decimal:
        """What the pools gave in total (negative when they were credited back)."""
        return exact_sum(draw.amount for draw in self.draws)

    @property
    def parts(self) -> tuple[tuple[str, Decimal], ...]:
        """The draws as (pool_id, amount) pairs, the shape the ledger's posting rules take."""
        return tuple((draw.pool_id, draw.amount) for draw in self.draws)

    def movements(self) -> tuple[PoolMovement, ...]:
        """The pool movements that apply this allocation to the pools."""
        return tuple(
            PoolMovement(draw.pool_id, MovementAction.DRAW, draw.amount) for draw in self.draws
        )


def allocate(
    charge: Decimal,
    ordered_pools: Sequence[Pool],
    overage_policy: OveragePolicy,
    *,
    contract_id: str,
    period_draws: Mapping[str, Decimal] = _NOTHING,
    period_overage: Decimal = ZERO,
) -> Allocation:
    """Split one charge (invoice currency) across pools given in draw-down order.

    A positive charge draws each pool up to its available amount; what is left is overage
    under ARREARS, or FailedPrecondition INSUFFICIENT_CREDIT (PreconditionViolation BALANCE on
    the contract) under BLOCK, with nothing allocated. A negative charge is credited back by
    the rule in the module docstring, using `period_draws` (this product's net draws per pool in
    the current billing period) and `period_overage` (its overage accrued in the period).
    """
    if not isinstance(charge, Decimal) or not charge.is_finite():
        raise InvalidArgument.of_field("charge", f"must be a finite Decimal, got {charge!r}")
    if not isinstance(overage_policy, OveragePolicy):
        raise InvalidArgument.of_field(
            "overage_policy", f"must be one of {', '.join(OveragePolicy)}"
        )
    seen: set[str] = set()
    for index, pool in enumerate(ordered_pools):
        if not pool.is_drawable:
            raise InvalidArgument.of_field(
                f"ordered_pools[{index}]", f"{pool.pool_id!r} is a postpaid commit, not drawable"
            )
        if pool.pool_id in seen:
            raise InvalidArgument.of_field(
                f"ordered_pools[{index}]", f"{pool.pool_id!r} is listed twice"
            )
        seen.add(pool.pool_id)
    if charge > 0:
        return priced_exactly(
            lambda: _draw(charge, ordered_pools, overage_policy, contract_id), "charge"
        )
    if charge < 0:
        return priced_exactly(
            lambda: _credit_back(charge, ordered_pools, period_draws, period_overage), "charge"
        )
    return Allocation(charge, (), ZERO)


def _draw(
    charge: Decimal, pools: Sequence[Pool], policy: OveragePolicy, contract_id: str
) -> Allocation:
    remaining = charge
    draws: list[PoolDraw] = []
    for pool in pools:
        if not remaining:
            break
        take = min(remaining, pool.available)
        if take > 0:
            draws.append(PoolDraw(pool.pool_id, take))
            remaining -= take
    if remaining and policy is OveragePolicy.BLOCK:
        available = charge - remaining
        raise FailedPrecondition(
            f"contract {contract_id!r} has {format_decimal(available)} available for this"
            f" product, the charge is {format_decimal(charge)}",
            reason=INSUFFICIENT_CREDIT,
            violations=[
                PreconditionViolation(
                    "BALANCE",
                    f"contracts/{contract_id}",
                    f"available {format_decimal(available)} across {len(pools)} applicable"
                    f" pool(s), needed {format_decimal(charge)}; the overage policy is block",
                )
            ],
            metadata={
                "contract_id": contract_id,
                "available": format_decimal(available),
                "charge": format_decimal(charge),
            },
        )
    return Allocation(charge, tuple(draws), remaining)


def _credit_back(
    charge: Decimal,
    pools: Sequence[Pool],
    period_draws: Mapping[str, Decimal],
    period_overage: Decimal,
) -> Allocation:
    credit = -charge
    from_overage = min(credit, max(period_overage, ZERO))
    credit -= from_overage
    overage = -from_overage
    draws: list[PoolDraw] = []
    for pool in reversed(pools):
        if not credit:
            break
        back = min(credit, max(period_draws.get(pool.pool_id, ZERO), ZERO))
        if back > 0:
            draws.append(PoolDraw(pool.pool_id, -back))
            credit -= back
    # What no pool can take back is owed to the customer on the next invoice.
    return Allocation(charge, tuple(draws), overage - credit)


def check_spend_cap(
    period_spend: Decimal, charge: Decimal, cap: Decimal | None, *, contract_id: str = ""
) -> None:
    """Refuse the whole event (ResourceExhausted SPEND_CAP_EXCEEDED) if spend + charge > cap.

    Reaching the cap exactly is allowed; a contract without a cap (None) is never refused, nor
    is a charge ≤ 0 (a credit back only lowers spend).
    """
    if cap is None or charge <= 0:
        return
    after = priced_exactly(lambda: period_spend + charge, "charge")
    if after <= cap:
        return
    raise ResourceExhausted(
        f"the charge of {format_decimal(charge)} would take this billing period's spend to"
        f" {format_decimal(after)}, beyond the spend cap of {format_decimal(cap)}",
        reason=SPEND_CAP_EXCEEDED,
        metadata={
            "contract_id": contract_id,
            "spend_cap": format_decimal(cap),
            "period_spend": format_decimal(period_spend),
            "charge": format_decimal(charge),
        },
    )
