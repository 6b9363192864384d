"""One rated event against a contract: the checks, the allocation, the transfers and the alerts.

The hot path of RateAndDebit, pure: the adapter prices the event (rate card in force →
`effective_price` → `incremental_charge`), converts the charge with `invoice_currency_charge`,
calls `plan_debit` with the contract's pools as locked in the transaction, then writes the
plan's transfers, pool balances and alerts (to the outbox) in one commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from types import MappingProxyType

from rating_service.core.contracts.alerts import Alert, AlertState, AlertThreshold, crossed_alerts
from rating_service.core.contracts.allocation import Allocation, allocate, check_spend_cap
from rating_service.core.contracts.contract import Contract, check_contract_accepts_usage
from rating_service.core.contracts.lifecycle import AUTO_RECHARGE_THRESHOLD_ID
from rating_service.core.contracts.pools import (
    CommitmentKind,
    Pool,
    PoolMovement,
    apply_movements,
    draw_down_order,
)
from rating_service.core.errors import FailedPrecondition, InvalidArgument, PreconditionViolation
from rating_service.core.ledger.posting_rules import usage_transfers
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.money import PricingUnit
from rating_service.core.pricing.constraints import priced_exactly

CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
"""FailedPrecondition reason: the rate card's prices convert to another currency than the
contract invoices in (there are no exchange rates)."""

ZERO = Decimal(0)
_NOTHING: Mapping[str, Decimal] = MappingProxyType({})


def invoice_currency_charge(
    amount: Decimal, pricing_unit: PricingUnit, contract: Contract
) -> Decimal:
    """A rated amount in the rate card's pricing unit, converted exactly to the invoice currency."""
    if pricing_unit.invoice_currency != contract.invoice_currency:
        description = (
            f"the rate card prices in {pricing_unit.code} ({pricing_unit.invoice_currency.code}),"
            f" the contract invoices in {contract.invoice_currency.code}"
        )
        raise FailedPrecondition(
            description,
            reason=CURRENCY_MISMATCH,
            violations=[
                PreconditionViolation("CURRENCY", f"contracts/{contract.contract_id}", description)
            ],
        )
    return pricing_unit.to_invoice_currency(amount)


@dataclass(frozen=True, slots=True)
class DebitPlan:
    """Everything one event changes: how it was covered, and what to write.

    `movements` applied to the pools give `pools_after`; `transfers` are the same changes in
    the ledger; `alerts` are those the event made cross (to write to the outbox);
    `recharge_due` says the prepaid balance crossed below the auto-recharge threshold.
    """

    charge: Decimal
    allocation: Allocation
    movements: tuple[PoolMovement, ...]
    transfers: tuple[Transfer, ...]
    pools_after: tuple[Pool, ...]
    period_spend_after: Decimal
    alerts: tuple[Alert, ...]
    recharge_due: bool = False


def plan_debit(
    *,
    contract: Contract,
    pools: Sequence[Pool],
    product_key: str,
    charge: Decimal,
    at: datetime,
    reference: str,
    period_spend: Decimal = ZERO,
    period_draws: Mapping[str, Decimal] = _NOTHING,
    period_overage: Decimal = ZERO,
    commitment_spend: Mapping[str, Decimal] = _NOTHING,
) -> DebitPlan:
    """Check, allocate and post one event's charge (invoice currency) at the event's time `at`.

    In order: the contract accepts usage at `at` (CONTRACT_SUSPENDED / CONTRACT_ENDED /
    CONTRACT_NOT_STARTED); the spend cap (SPEND_CAP_EXCEEDED); the draw-down order of `pools`
    (all the contract's pools, any kind) for the product; the allocation with the contract's
    overage policy (INSUFFICIENT_CREDIT under block). A refused event raises and changes
    nothing.

    Inputs kept by the caller, per contract: `period_spend`, the billing period's rated spend
    (all charges, whatever paid them, plus open reservation holds); `period_draws` and
    `period_overage`, this product's net draws per pool and overage in the period (used only to
    credit back a negative charge); `commitment_spend`, the term's spend counted against each
    postpaid commit (for alerts). `reference` names the event (`event:<event_id>`); the
    transfer ids derive from it, so a retried event builds the same transfers.
    """
    if not isinstance(charge, Decimal) or not charge.is_finite():
        raise InvalidArgument.of_field("charge", f"must be a finite Decimal, got {charge!r}")
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidArgument.of_field("at", "must be a timezone-aware datetime")
    check_contract_accepts_usage(contract, at)
    check_spend_cap(period_spend, charge, contract.spend_cap, contract_id=contract.contract_id)
    allocation = allocate(
        charge,
        draw_down_order(pools, product_key, at),
        contract.overage_policy,
        contract_id=contract.contract_id,
        period_draws=period_draws,
        period_overage=period_overage,
    )
    movements = allocation.movements()
    moved = apply_movements({pool.pool_id: pool for pool in pools}, movements)
    pools_after = tuple(moved[pool.pool_id] for pool in pools)
    transfers = usage_transfers(
        reference=reference,
        contract_id=contract.contract_id,
        product_key=product_key,
        draws=allocation.parts,
        overage=allocation.overage,
    )
    spend_after = priced_exactly(lambda: period_spend + charge, "charge")
    committed_after = priced_exactly(
        partial(_commitment_spend_after, pools, commitment_spend, product_key, at, charge),
        "charge",
    )
    alerts = crossed_alerts(
        AlertState(
            contract.contract_id,
            at,
            tuple(pools),
            period_spend,
            contract.spend_cap,
            commitment_spend,
        ),
        AlertState(
            contract.contract_id, at, pools_after, spend_after, contract.spend_cap, committed_after
        ),
        _watched_thresholds(contract),
    )
    # Auto-recharge watches the balance like an alert, and fires once per crossing as one.
    recharge_due = any(a.threshold_id == AUTO_RECHARGE_THRESHOLD_ID for a in alerts)
    alerts = [a for a in alerts if a.threshold_id != AUTO_RECHARGE_THRESHOLD_ID]
    return DebitPlan(
        charge,
        allocation,
        movements,
        transfers,
        pools_after,
        spend_after,
        tuple(alerts),
        recharge_due,
    )


def _watched_thresholds(contract: Contract) -> tuple[AlertThreshold, ...]:
    """The contract's alert thresholds, and the auto-recharge threshold while it is on."""
    recharge = contract.auto_recharge
    if recharge is None or not recharge.enabled:
        return contract.alert_thresholds
    return (*contract.alert_thresholds, recharge.threshold_alert)


def _commitment_spend_after(
    pools: Sequence[Pool],
    commitment_spend: Mapping[str, Decimal],
    product_key: str,
    at: datetime,
    charge: Decimal,
) -> dict[str, Decimal]:
    # Runs under the exact context. A postpaid commit counts the spend on the products in its
    # scope, while it runs.
    after = dict(commitment_spend)
    for pool in pools:
        if pool.kind is CommitmentKind.POSTPAID_COMMIT and pool.applies_to(product_key, at):
            after[pool.pool_id] = after.get(pool.pool_id, ZERO) + charge
    return after
