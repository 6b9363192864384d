"""Invariant checks: the trial balance, recomputation from the journal, overdrawn accounts."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from rating_service.core.ledger import (
    AccountKind,
    Ledger,
    Transfer,
    TransferCode,
    TransferFlags,
    invariant_breaches,
    open_account,
    overdrawn_accounts,
    recompute,
    trial_balance,
)

D = Decimal


def a_ledger() -> Ledger:
    ledger = Ledger.empty().open(
        [
            open_account("pool:p", AccountKind.POOL, "USD"),
            open_account("revenue:c:gpt", AccountKind.REVENUE, "USD"),
            open_account("promotions:c", AccountKind.PROMOTIONS, "USD"),
        ]
    )
    return ledger.apply(
        [
            Transfer("g", "promotions:c", "pool:p", D(10), TransferCode.GRANT, "grant:g"),
            Transfer("u", "pool:p", "revenue:c:gpt", D(3), TransferCode.USAGE, "event:e"),
            Transfer(
                "h",
                "pool:p",
                "revenue:c:gpt",
                D(2),
                TransferCode.RESERVATION_HOLD,
                "reservation:r",
                TransferFlags.PENDING,
            ),
        ]
    )


def test_a_sound_ledger() -> None:
    ledger = a_ledger()
    balance = trial_balance(ledger.accounts.values())
    # Posted: debits 10 (promotions) + 3 (pool) = 13 = credits 10 (pool) + 3 (revenue).
    assert (balance.debits_posted, balance.credits_posted) == (D(13), D(13))
    assert (balance.debits_pending, balance.credits_pending) == (D(2), D(2))
    assert balance.balanced
    assert recompute(ledger.accounts, ledger.transfers).clean
    assert invariant_breaches(ledger.accounts, ledger.transfers) == ()


def test_drift_is_reported_per_account_and_total() -> None:
    ledger = a_ledger()
    tampered = dict(ledger.accounts)
    tampered["pool:p"] = replace(tampered["pool:p"], debits_posted=D(4))
    report = recompute(tampered, ledger.transfers)
    assert [(d.account_id, d.total, d.recorded, d.recomputed) for d in report.drifts] == [
        ("pool:p", "debits_posted", D(4), D(3))
    ]
    breaches = invariant_breaches(tampered, ledger.transfers)
    assert any("posted debits 14" in breach for breach in breaches)


def test_an_overdrawn_pool_is_named() -> None:
    ledger = a_ledger()
    tampered = dict(ledger.accounts)
    tampered["pool:p"] = replace(tampered["pool:p"], debits_posted=D(9))  # 9 + 2 pending > 10
    assert overdrawn_accounts(tampered.values()) == ("pool:p",)


def test_a_transfer_naming_an_unknown_account_cannot_be_replayed() -> None:
    ledger = a_ledger()
    stray = Transfer("s", "pool:ghost", "revenue:c:gpt", D(1), TransferCode.USAGE, "event:x")
    report = recompute(ledger.accounts, (*ledger.transfers, stray))
    assert not report.clean
    assert report.unreplayable[0].startswith("s:")
