"""Renewal: the next term's contract, and how much unused prepaid balance rolls over into it.

The next term has the same terms, starts when this one ends and lasts as long; its contract id
is derived from this one's, so a retried renewal finds the contract it made. At term end the
unused *prepaid* balance (prepaid commits and bought credit, not free credit) of the pools
that live until the term end is carried into one credit of the next term, up to the renewal's
percent and cap (`Renewal.rollover`); everything else left in the contract's pools expires.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from rating_service.core.contracts.contract import Contract, ContractStatus
from rating_service.core.contracts.expiry import ends_with_term
from rating_service.core.contracts.lifecycle import Renewal
from rating_service.core.contracts.pools import CommitmentKind, Pool
from rating_service.core.errors import InvalidArgument
from rating_service.core.money import EXACT_CONTEXT

ZERO = Decimal(0)
ONE = Decimal(1)


def renewed_contract_id(contract_id: str) -> str:
    """The next term's contract id: `ctr_x` → `ctr_x.2` → `ctr_x.3` (contract ids hold no dot)."""
    base, dot, term = contract_id.rpartition(".")
    if dot and term.isdigit():
        return f"{base}.{int(term) + 1}"
    return f"{contract_id}.2"


def next_term(contract: Contract) -> tuple[datetime, datetime]:
    """The term after this one: from its end, as many calendar months long when it is whole
    months (an annual contract renews for a year, leap day or not), else as long exactly."""
    start, end = contract.term_start, contract.term_end
    if end is None:
        raise InvalidArgument.of_field("term_end", "an evergreen contract has no next term")
    months = _whole_months(start, end)
    if months is not None:
        return end, _add_months(end, months)
    return end, end + (end - start)


def next_contract(contract: Contract) -> Contract:
    """The next term's contract: the same customer, active, under the derived id.

    Its terms are those in force as the old term ends (amendments made during the term are
    part of them); amendments scheduled to take effect in the next term carry over.
    """
    start, end = next_term(contract)
    in_force = contract.at(start - _JUST_BEFORE)
    return replace(
        in_force,
        contract_id=renewed_contract_id(contract.contract_id),
        term_start=start,
        term_end=end,
        status=ContractStatus.ACTIVE,
        trial=None,  # a trial is the first term's: the next one is charged from its start
        amendments=tuple(a for a in contract.amendments if a.effective_at >= start),
    )


_JUST_BEFORE = timedelta(microseconds=1)


def is_prepaid(pool: Pool) -> bool:
    """Prepaid balance: a prepaid commit, or bought credit (cost basis above 0)."""
    if pool.kind is CommitmentKind.PREPAID_COMMIT:
        return True
    return pool.kind is CommitmentKind.CREDIT and pool.cost_basis > 0


@dataclass(frozen=True, slots=True)
class Rollover:
    """What a renewal carries into the next term, as one credit: `parts` (pool id, amount)
    say which pools it comes from; the credit's cost basis, priority and scope follow them."""

    parts: tuple[tuple[str, Decimal], ...]
    cost_basis: Decimal = ONE
    priority: int = 0
    scope: frozenset[str] | None = None

    @property
    def amount(self) -> Decimal:
        """The credit carried over."""
        with localcontext(EXACT_CONTEXT):
            return sum((amount for _, amount in self.parts), ZERO)


def rollover(terms: Renewal, pools: Iterable[Pool], contract: Contract) -> Rollover:
    """The unused prepaid balance of the pools that live until term end, carried up to the cap.

    It is taken from the pools the customer paid the most for first (highest cost basis), then
    in creation order, so what expires is what cost them least. The credit gets the lowest cost
    basis and priority of those pools (it never claims more was paid than was), and the union
    of their scopes (every product when one of them had no scope).
    """
    candidates = sorted(
        (
            pool
            for pool in pools
            if pool.is_drawable
            and is_prepaid(pool)
            and ends_with_term(pool, contract)
            and pool.available > 0
        ),
        key=lambda pool: (-pool.cost_basis, pool.created_seq, pool.pool_id),
    )
    with localcontext(EXACT_CONTEXT):
        left = terms.rollover(sum((pool.available for pool in candidates), ZERO))
        parts: list[tuple[str, Decimal]] = []
        sources: list[Pool] = []
        for pool in candidates:
            if not left:
                break
            part = min(left, pool.available)
            parts.append((pool.pool_id, part))
            sources.append(pool)
            left -= part
    if not sources:
        return Rollover(())
    scopes = [pool.scope for pool in sources]
    scope = None if None in scopes else frozenset(key for s in scopes if s for key in s)
    return Rollover(
        tuple(parts),
        min(pool.cost_basis for pool in sources),
        min(pool.priority for pool in sources),
        scope,
    )


def _whole_months(start: datetime, end: datetime) -> int | None:
    months = (end.year - start.year) * 12 + end.month - start.month
    if months > 0 and _add_months(start, months) == end:
        return months
    return None


def _add_months(moment: datetime, months: int) -> datetime:
    """`months` calendar months later, on the same day (the month's last day when shorter)."""
    year, month0 = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    day = min(moment.day, calendar.monthrange(year, month0 + 1)[1])
    return moment.replace(year=year, month=month0 + 1, day=day)
