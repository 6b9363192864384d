"""The ledger's invariants, checked: balanced totals, totals equal to the journal, no overdraft."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext

from rating_service.core.errors import DomainError
from rating_service.core.ledger.accounts import Account
from rating_service.core.ledger.journal import apply_one
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.money import EXACT_CONTEXT

ZERO = Decimal(0)
TOTALS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
"""The four running totals of an account."""


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """The sums of every account's totals; a sound ledger has debits equal to credits."""

    debits_posted: Decimal
    credits_posted: Decimal
    debits_pending: Decimal
    credits_pending: Decimal

    @property
    def balanced(self) -> bool:
        """Σ debits = Σ credits, for posted and for pending amounts separately."""
        return (
            self.debits_posted == self.credits_posted
            and self.debits_pending == self.credits_pending
        )


def trial_balance(accounts: Iterable[Account]) -> TrialBalance:
    """Sum the totals of every account (all of them: a subset need not balance)."""
    sums = dict.fromkeys(TOTALS, ZERO)
    with localcontext(EXACT_CONTEXT):
        for account in accounts:
            for name in TOTALS:
                sums[name] += getattr(account, name)
    return TrialBalance(**sums)


@dataclass(frozen=True, slots=True)
class Drift:
    """One total of one account that differs from what its transfers add up to."""

    account_id: str
    total: str
    recorded: Decimal
    recomputed: Decimal


@dataclass(frozen=True, slots=True)
class DriftReport:
    """What `recompute` found: totals that drifted, and transfers that could not be replayed."""

    drifts: tuple[Drift, ...]
    unreplayable: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when every account equals the sum of its transfers."""
        return not self.drifts and not self.unreplayable


def recompute(accounts: Mapping[str, Account], transfers: Iterable[Transfer]) -> DriftReport:
    """Replay the journal from zero and report every account whose totals differ from it.

    `transfers` is the full journal in the order it was applied. Balance rules are not
    enforced on the replay: the point is to see drift, not to stop at it. A transfer naming an
    unknown account or an unknown pending transfer is listed as unreplayable (with the reason).
    """
    replayed = {
        account_id: replace(
            account,
            debits_posted=ZERO,
            credits_posted=ZERO,
            debits_pending=ZERO,
            credits_pending=ZERO,
        )
        for account_id, account in accounts.items()
    }
    pending: dict[str, Transfer] = {}
    unreplayable: list[str] = []
    for transfer in transfers:
        try:
            apply_one(replayed, pending, transfer, enforce=False)
        except DomainError as error:
            unreplayable.append(f"{transfer.transfer_id}: {error.message}")
    drifts = [
        Drift(account_id, name, getattr(account, name), getattr(replayed[account_id], name))
        for account_id, account in accounts.items()
        for name in TOTALS
        if getattr(account, name) != getattr(replayed[account_id], name)
    ]
    return DriftReport(tuple(drifts), tuple(unreplayable))


def overdrawn_accounts(accounts: Iterable[Account]) -> tuple[str, ...]:
    """The ids of accounts whose totals break their own balance rules (a pool below zero)."""
    return tuple(account.account_id for account in accounts if account.breaks_its_rules)


def invariant_breaches(
    accounts: Mapping[str, Account], transfers: Iterable[Transfer]
) -> tuple[str, ...]:
    """Every broken ledger invariant, as a sentence; empty when the ledger is sound."""
    breaches: list[str] = []
    balance = trial_balance(accounts.values())
    if balance.debits_posted != balance.credits_posted:
        breaches.append(
            f"posted debits {balance.debits_posted} ≠ posted credits {balance.credits_posted}"
        )
    if balance.debits_pending != balance.credits_pending:
        breaches.append(
            f"pending debits {balance.debits_pending} ≠ pending credits {balance.credits_pending}"
        )
    report = recompute(accounts, transfers)
    breaches.extend(
        f"{drift.account_id}.{drift.total} is {drift.recorded}, its transfers add up to"
        f" {drift.recomputed}"
        for drift in report.drifts
    )
    breaches.extend(f"cannot replay {problem}" for problem in report.unreplayable)
    breaches.extend(
        f"{account_id} breaks its balance rules"
        for account_id in overdrawn_accounts(accounts.values())
    )
    return tuple(breaches)
