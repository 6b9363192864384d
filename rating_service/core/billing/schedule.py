"""Billing dates: when a contract is invoiced, and which periods each invoice covers.

A contract is invoiced on its term start (the opening invoice: fees in advance and prepaid
commits, issued only when something is due), at the end of every billing period, and at term
end (the final invoice, with the postpaid true-up). The invoice on a billing date bills the
period that ends there in arrears and the period that starts there in advance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rating_service.core.contracts.contract import Contract, billing_period_containing

_JUST_BEFORE = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class BillingDate:
    """One billing date of a contract and the periods its invoice covers.

    `arrears` is the period ending on the date (None on the opening date); `advance` is the
    period starting on it (None on the final date, at term end).
    """

    at: datetime
    arrears: tuple[datetime, datetime] | None
    advance: tuple[datetime, datetime] | None

    @property
    def is_opening(self) -> bool:
        """True on the term start, where nothing is billed in arrears yet."""
        return self.arrears is None

    @property
    def is_final(self) -> bool:
        """True at term end: no period follows, and postpaid commits are trued up."""
        return self.advance is None


def billing_date(contract: Contract, at: datetime) -> BillingDate:
    """The billing date `at` (a term start, a period boundary or the term end) and its periods."""
    arrears = (
        None
        if at <= contract.term_start
        else billing_period_containing(contract, at - _JUST_BEFORE)
    )
    advance = billing_period_containing(contract, at) if contract.covers(at) else None
    return BillingDate(at, arrears, advance)


def next_billing_date(contract: Contract, after: datetime | None) -> BillingDate | None:
    """The first billing date after `after` (None: the opening date), or None past the term."""
    if after is None or after < contract.term_start:
        return billing_date(contract, contract.term_start)
    if not contract.covers(after):
        return None
    return billing_date(contract, billing_period_containing(contract, after)[1])
