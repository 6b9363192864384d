"""Credit expiry and renewal rules: which invoice an expiry waits for, next terms, rollover."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.core.contracts import CommitmentKind, ContractStatus, Pool, contract_from_dict
from rating_service.core.contracts.expiry import (
    PoolExpiry,
    ends_with_term,
    pool_expiry,
    settling_billing_date,
    waits_for_renewal,
)
from rating_service.core.contracts.lifecycle import Renewal
from rating_service.core.contracts.renewal import (
    is_prepaid,
    next_contract,
    next_term,
    renewed_contract_id,
    rollover,
)
from rating_service.core.errors import InvalidArgument
from rating_service.core.ledger.accounts import AccountKind, open_account
from rating_service.core.ledger.posting_rules import rollover_transfers
from tests.unit.core.contracts.builders import T0, a_contract, a_pool, at
from tests.unit.core.contracts.test_dict_forms import CONTRACT

D = Decimal
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
"""The end of the test contracts' term: monthly periods on the 1st from T0 (2025-01-01)."""


@pytest.mark.parametrize(
    ("expires_at", "billing_date"),
    [
        # Mid-February: the February period's invoice, on March 1st.
        (datetime(2025, 2, 14, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),
        # On a period boundary: last usable in February, so February's invoice, not March's.
        (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),
        # One microsecond into March: usable in March, so March's invoice.
        (datetime(2025, 3, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),
        # Outliving the term: the final invoice, at term end.
        (datetime(2027, 6, 1, tzinfo=UTC), YEAR_END),
        # At the term start (or before): never usable, nothing to wait for.
        (T0, None),
    ],
)
def test_an_expiry_waits_for_the_invoice_of_the_period_the_pool_was_last_usable_in(
    expires_at: datetime, billing_date: datetime | None
) -> None:
    contract = a_contract(term_end=YEAR_END)
    assert settling_billing_date(contract, expires_at) == billing_date


def test_an_evergreen_contract_waits_for_the_period_holding_the_expiry() -> None:
    contract = a_contract()
    assert settling_billing_date(contract, datetime(2031, 7, 9, tzinfo=UTC)) == datetime(
        2031, 8, 1, tzinfo=UTC
    )


def test_only_a_renewing_contract_holds_back_the_expiry_of_pools_that_end_with_its_term() -> None:
    renewing = replace(a_contract(term_end=YEAR_END), renewal=Renewal())
    at_term_end = a_pool("p", expires_at=YEAR_END)
    before = a_pool("q", expires_at=YEAR_END - timedelta(seconds=1))
    assert ends_with_term(at_term_end, renewing) and not ends_with_term(before, renewing)
    assert waits_for_renewal(at_term_end, renewing)
    assert not waits_for_renewal(before, renewing)  # expires on its own, in its own period
    # Settled (the renewal ended the contract): the expiry goes on, and finds nothing left.
    assert not waits_for_renewal(at_term_end, replace(renewing, status=ContractStatus.ENDED))
    not_renewing = replace(renewing, renewal=Renewal(auto_renew=False))
    assert not waits_for_renewal(at_term_end, not_renewing)
    assert not ends_with_term(at_term_end, a_contract())  # evergreen: no term end


@pytest.mark.parametrize(
    ("credited", "debited", "held", "expected"),
    [
        ("100", "0", "0", PoolExpiry(D(100))),  # untouched: all of it goes
        ("100", "37.25", "0", PoolExpiry(D("62.75"))),  # 100 − 37.25 drawn = 62.75 left
        ("100", "100", "0", PoolExpiry(D(0))),  # used up: nothing moves
        ("0.000001", "0", "0", PoolExpiry(D("0.000001"))),  # a fraction of a cent still goes
        # A reservation holds part of it: nothing moves until it is captured or released.
        ("100", "20", "30", PoolExpiry(D(0), holds_pending=True)),
        ("100", "0", "0.01", PoolExpiry(D(0), holds_pending=True)),
    ],
)
def test_an_expiry_moves_the_whole_balance_once_no_hold_is_pending(
    credited: str, debited: str, held: str, expected: PoolExpiry
) -> None:
    account = replace(
        open_account("pool:p", AccountKind.POOL, "USD"),
        credits_posted=D(credited),
        debits_posted=D(debited),
        debits_pending=D(held),
    )
    assert pool_expiry(account) == expected


def test_an_evergreen_contract_cannot_have_renewal_terms() -> None:
    with pytest.raises(InvalidArgument) as refused:
        contract_from_dict({**CONTRACT, "term_end": None, "renewal": {"auto_renew": True}})
    assert "renewal" in {v.field for v in refused.value.violations}


@pytest.mark.parametrize(
    ("contract_id", "renewed"),
    [
        ("ctr_01abc", "ctr_01abc.2"),
        ("ctr_01abc.2", "ctr_01abc.3"),
        ("ctr_01abc.19", "ctr_01abc.20"),
    ],
)
def test_a_renewed_contract_id_is_derived_from_the_old_one(contract_id: str, renewed: str) -> None:
    assert renewed_contract_id(contract_id) == renewed


@pytest.mark.parametrize(
    ("term_start", "term_end", "next_end"),
    [
        # A calendar year renews for a calendar year, leap day included (366 days).
        ("2027-03-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00", "2029-03-01T00:00:00+00:00"),
        ("2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00", "2029-01-01T00:00:00+00:00"),
        # Three months from the 31st: the next term ends on the last day of a shorter month.
        ("2025-01-31T00:00:00+00:00", "2025-04-30T00:00:00+00:00", "2025-07-30T00:00:00+00:00"),
        # Not whole months: the same length exactly (12 seconds).
        ("2025-01-01T00:00:00+00:00", "2025-01-01T00:00:12+00:00", "2025-01-01T00:00:24+00:00"),
    ],
)
def test_the_next_term_starts_at_the_end_and_lasts_as_long(
    term_start: str, term_end: str, next_end: str
) -> None:
    contract = a_contract(
        term_start=datetime.fromisoformat(term_start), term_end=datetime.fromisoformat(term_end)
    )
    assert next_term(contract) == (
        datetime.fromisoformat(term_end),
        datetime.fromisoformat(next_end),
    )


def test_the_next_contract_keeps_the_terms_and_is_active() -> None:
    old = replace(
        a_contract(term_end=YEAR_END, status=ContractStatus.SUSPENDED),
        renewal=Renewal(rollover_percent=D(50)),
    )
    renewed = next_contract(old)
    assert (renewed.contract_id, renewed.status) == ("ctr_1.2", ContractStatus.ACTIVE)
    assert (renewed.term_start, renewed.term_end) == (YEAR_END, datetime(2027, 1, 1, tzinfo=UTC))
    assert replace(renewed, contract_id="ctr_1", term_start=T0, term_end=YEAR_END) == replace(
        old, status=ContractStatus.ACTIVE
    )
    with pytest.raises(InvalidArgument):
        next_term(a_contract())


def test_prepaid_balance_is_prepaid_commits_and_bought_credit() -> None:
    assert is_prepaid(a_pool("commit", kind=CommitmentKind.PREPAID_COMMIT, cost_basis="1"))
    assert is_prepaid(a_pool("bought", cost_basis="0.8"))
    assert not is_prepaid(a_pool("free"))
    assert not is_prepaid(a_pool("minimum", kind=CommitmentKind.POSTPAID_COMMIT, cost_basis="1"))


def _term_pools() -> list[Pool]:
    return [
        # Paid in full, 300 left: carried first.
        a_pool(
            "commit",
            "1000",
            kind=CommitmentKind.PREPAID_COMMIT,
            cost_basis="1",
            balance="300",
            created_seq=2,
            expires_at=YEAR_END,
            priority=2,
        ),
        # Bought at 0.8, 100 left, created first but paid less per unit: carried second.
        a_pool(
            "bought",
            "100",
            cost_basis="0.8",
            created_seq=1,
            scope=frozenset({"tokens"}),
            priority=1,
        ),
        # Free credit never rolls over; nor does a pool that expires before the term ends.
        a_pool("free", "50", created_seq=3),
        a_pool("early", "40", cost_basis="1", created_seq=4, expires_at=at(200)),
    ]


@pytest.mark.parametrize(
    ("percent", "cap", "parts"),
    [
        # Unused prepaid at term end: 300 + 100 = 400.
        ("100", None, [("commit", "300"), ("bought", "100")]),  # all 400
        ("50", None, [("commit", "200")]),  # 400 × 50% = 200, from the dearest pool first
        ("80", None, [("commit", "300"), ("bought", "20")]),  # 320 = 300 + 20
        ("50", "120", [("commit", "120")]),  # 200 capped at 120
        ("0", None, []),
        ("100", "0", []),
    ],
)
def test_rollover_carries_the_unused_prepaid_balance_up_to_the_percent_and_cap(
    percent: str, cap: str | None, parts: list[tuple[str, str]]
) -> None:
    terms = Renewal(rollover_percent=D(percent), rollover_cap=None if cap is None else D(cap))
    carried = rollover(terms, _term_pools(), a_contract(term_end=YEAR_END))
    assert [(pool_id, str(amount)) for pool_id, amount in carried.parts] == parts
    assert carried.amount == sum((D(amount) for _, amount in parts), D(0))


def test_the_rolled_over_credit_never_claims_more_was_paid_than_was() -> None:
    carried = rollover(Renewal(), _term_pools(), a_contract(term_end=YEAR_END))
    # From a commit at 1 and bought credit at 0.8: cost basis 0.8, priority 1, every product
    # (the commit had no scope).
    assert (carried.cost_basis, carried.priority, carried.scope) == (D("0.8"), 1, None)
    only_bought = rollover(Renewal(), _term_pools()[1:], a_contract(term_end=YEAR_END))
    assert only_bought.scope == frozenset({"tokens"})


def test_rollover_moves_money_pool_to_pool_under_one_reference() -> None:
    transfers = rollover_transfers(
        reference="rollover:ctr_1", parts=[("a", D(3)), ("b", D("0.5"))], to_pool_id="n"
    )
    assert [
        (t.transfer_id, str(t.code), t.debit_account_id, t.credit_account_id, t.amount)
        for t in transfers
    ] == [
        ("rollover:rollover:ctr_1:0", "rollover", "pool:a", "pool:n", D(3)),
        ("rollover:rollover:ctr_1:1", "rollover", "pool:b", "pool:n", D("0.5")),
    ]
    with pytest.raises(InvalidArgument):
        rollover_transfers(reference="r", parts=[("a", D(0))], to_pool_id="n")
