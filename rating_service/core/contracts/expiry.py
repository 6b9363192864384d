"""Credit expiry rules: when a pool's remaining balance may go to breakage, and who moves it.

A pool's balance expires only after the invoice of the billing period it ends in is finalized,
so late usage of that period can still draw from it and the invoice sees the pool as it was.
A pool that lives until its contract's term end is settled with the term: when the contract
auto-renews, the renewal rolls its prepaid balance over first, and its own expiry waits for
that (`waits_for_renewal`). Whoever moves a pool's balance to breakage moves all of it, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from rating_service.core.contracts.contract import (
    Contract,
    ContractStatus,
    billing_period_containing,
)
from rating_service.core.contracts.pools import Pool
from rating_service.core.ledger.accounts import Account

ZERO = Decimal(0)

JUST_BEFORE = timedelta(microseconds=1)
"""ε: a pool that expires at t was last usable at t − ε."""


@dataclass(frozen=True, slots=True)
class PoolExpiry:
    """What expiring a pool did: the amount now in breakage (0: nothing was left).

    `replay` says an earlier attempt moved it; `holds_pending` that reservations still hold
    part of the balance, so nothing moved yet.
    """

    amount: Decimal
    replay: bool = False
    holds_pending: bool = False


def pool_expiry(pool_account: Account) -> PoolExpiry:
    """What expiring a pool moves to breakage: all of its balance, read under its lock.

    Nothing while reservations hold part of it: a capture may still draw the held amount.
    """
    if pool_account.debits_pending:
        return PoolExpiry(ZERO, holds_pending=True)
    return PoolExpiry(pool_account.credit_balance)


def settling_billing_date(contract: Contract, moment: datetime) -> datetime | None:
    """The billing date whose invoice must be finalized before balance held at `moment` goes.

    That is the end of the billing period holding the last instant before `moment` (the term's
    last period when the term ends first). None when `moment` is at or before the term start:
    no period of the contract could have drawn from the pool.
    """
    last_usable = moment - JUST_BEFORE
    if last_usable < contract.term_start:
        return None
    if contract.term_end is not None and last_usable >= contract.term_end:
        last_usable = contract.term_end - JUST_BEFORE
    return billing_period_containing(contract, last_usable)[1]


def ends_with_term(pool: Pool, contract: Contract) -> bool:
    """True when the pool lives until the contract's term end (or beyond): the term settles it."""
    if contract.term_end is None:
        return False
    return pool.expires_at is None or pool.expires_at >= contract.term_end


def waits_for_renewal(pool: Pool, contract: Contract) -> bool:
    """True while the pool's expiry must wait for the renewal to roll its balance over.

    The renewal settles a renewing contract's term-end pools and then ends the contract, so the
    wait is over once the contract's status is `ended`.
    """
    renews = contract.renewal is not None and contract.renewal.auto_renew
    return renews and ends_with_term(pool, contract) and contract.status is not ContractStatus.ENDED
