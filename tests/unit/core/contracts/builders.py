"""Builders for the contract tests: pools and contracts with defaults for what a test ignores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rating_service.core.contracts import (
    AlertThreshold,
    BillingAnchor,
    BillingFrequency,
    CommitmentKind,
    Contract,
    ContractStatus,
    OveragePolicy,
    Override,
    Pool,
)
from rating_service.core.money import currency_of

D = Decimal
T0 = datetime(2025, 1, 1, tzinfo=UTC)
"""The start of every test contract's term."""


ANCHOR_ON_THE_FIRST = BillingAnchor(1)
"""Billing periods start on the 1st at midnight UTC."""


def at(days: float = 0) -> datetime:
    """A moment `days` after T0."""
    return T0 + timedelta(days=days)


def a_pool(
    pool_id: str,
    amount: str = "100",
    *,
    kind: CommitmentKind = CommitmentKind.CREDIT,
    priority: int = 0,
    cost_basis: str = "0",
    scope: frozenset[str] | None = None,
    starts_at: datetime = T0,
    expires_at: datetime | None = None,
    created_seq: int = 0,
    balance: str | None = None,
    pending: str = "0",
) -> Pool:
    """A pool of `amount` (its balance unless given), free, every product, no expiry."""
    postpaid = kind is CommitmentKind.POSTPAID_COMMIT
    return Pool(
        pool_id,
        "ctr_1",
        kind,
        priority,
        D(cost_basis),
        scope,
        starts_at,
        expires_at,
        created_seq,
        D(amount),
        D(0) if postpaid else D(balance if balance is not None else amount),
        D(pending),
    )


def a_contract(
    *,
    policy: OveragePolicy = OveragePolicy.ARREARS,
    spend_cap: str | None = None,
    thresholds: tuple[AlertThreshold, ...] = (),
    overrides: tuple[Override, ...] = (),
    status: ContractStatus = ContractStatus.ACTIVE,
    term_start: datetime = T0,
    term_end: datetime | None = None,
    anchor: BillingAnchor = ANCHOR_ON_THE_FIRST,
    frequency: BillingFrequency = BillingFrequency.MONTHLY,
) -> Contract:
    """An active USD contract `ctr_1` starting at T0, evergreen, billed monthly on the 1st."""
    return Contract(
        "ctr_1",
        "cus_1",
        "tnt_1",
        term_start,
        term_end,
        anchor,
        frequency,
        currency_of("USD"),
        "standard",
        policy,
        overrides,
        None if spend_cap is None else D(spend_cap),
        thresholds,
        status,
    )
