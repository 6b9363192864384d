"""Allocation: a charge split across pools in draw-down order, overage, credit backs, spend cap."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from rating_service.core.contracts import (
    CONTRACT_ENDED,
    CONTRACT_NOT_STARTED,
    CONTRACT_SUSPENDED,
    INSUFFICIENT_CREDIT,
    SPEND_CAP_EXCEEDED,
    ContractStatus,
    OveragePolicy,
    PoolDraw,
    allocate,
    check_contract_accepts_usage,
    check_spend_cap,
)
from rating_service.core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from tests.unit.core.contracts.builders import a_contract, a_pool, at

D = Decimal
ARREARS = OveragePolicy.ARREARS
BLOCK = OveragePolicy.BLOCK

# Three pools already in draw-down order: 10, 5 (with 2 held by a reservation), 20.
POOLS = (
    a_pool("a", "10"),
    a_pool("b", "5", pending="2"),
    a_pool("c", "20"),
)


def draws(*parts: tuple[str, str]) -> tuple[PoolDraw, ...]:
    return tuple(PoolDraw(pool_id, D(amount)) for pool_id, amount in parts)


@pytest.mark.parametrize(
    ("charge", "expected", "overage"),
    [
        ("0", (), "0"),
        ("4", (("a", "4"),), "0"),  # a covers it
        ("10", (("a", "10"),), "0"),  # exactly a
        ("12", (("a", "10"), ("b", "2")), "0"),  # 10 + 2
        ("13", (("a", "10"), ("b", "3")), "0"),  # b has 5 − 2 held = 3 available
        ("14.5", (("a", "10"), ("b", "3"), ("c", "1.5")), "0"),  # 10 + 3 + 1.5
        ("33", (("a", "10"), ("b", "3"), ("c", "20")), "0"),  # everything available: 33
        ("40.25", (("a", "10"), ("b", "3"), ("c", "20")), "7.25"),  # 40.25 − 33 = 7.25 overage
        ("0.000000001", (("a", "0.000000001"),), "0"),  # full precision, never rounded
    ],
)
def test_arrears_spans_pools_then_accrues_overage(
    charge: str, expected: tuple[tuple[str, str], ...], overage: str
) -> None:
    allocation = allocate(D(charge), POOLS, ARREARS, contract_id="ctr_1")
    assert allocation.draws == draws(*expected)
    assert allocation.overage == D(overage)
    assert allocation.drawn + allocation.overage == D(charge)


def test_block_covers_what_the_pools_can() -> None:
    allocation = allocate(D(33), POOLS, BLOCK, contract_id="ctr_1")
    assert allocation.draws == draws(("a", "10"), ("b", "3"), ("c", "20"))
    assert allocation.overage == 0


def test_block_refuses_the_whole_event_one_unit_short() -> None:
    # 33 available; 33.01 is refused whole, nothing allocated.
    with pytest.raises(FailedPrecondition) as refused:
        allocate(D("33.01"), POOLS, BLOCK, contract_id="ctr_1")
    assert refused.value.reason == INSUFFICIENT_CREDIT
    (violation,) = refused.value.violations
    assert violation.type == "BALANCE"
    assert violation.subject == "contracts/ctr_1"


def test_block_with_no_applicable_pool_refuses_any_charge() -> None:
    with pytest.raises(FailedPrecondition):
        allocate(D("0.01"), (), BLOCK, contract_id="ctr_1")


def test_empty_pools_are_passed_over() -> None:
    pools = (a_pool("empty", balance="0"), a_pool("held", "5", pending="5"), a_pool("full", "5"))
    assert allocate(D(2), pools, BLOCK, contract_id="ctr_1").draws == draws(("full", "2"))


# Credit backs: a = 10, b = 5 (2 held), c = 20, in draw-down order.
@pytest.mark.parametrize(
    ("charge", "period_draws", "period_overage", "expected", "overage"),
    [
        # Overage is given back first: −3 against 7 of overage → overage −3.
        ("-3", {"a": "10"}, "7", (), "-3"),
        # −9: 7 from overage, then 2 back to the last pool drawn (c, reverse order).
        ("-9", {"a": "10", "c": "5"}, "7", (("c", "-2"),), "-7"),
        # −12 with no overage: c gave 5 → 5 back, then a gave 10 → 7 back (b gave nothing).
        ("-12", {"a": "10", "c": "5"}, "0", (("c", "-5"), ("a", "-7")), "0"),
        # −20 but pools gave only 15 and no overage: the 5 left is owed to the customer.
        ("-20", {"a": "10", "c": "5"}, "0", (("c", "-5"), ("a", "-10")), "-5"),
        # A pool that left the order (expired) gets nothing back: its 4 becomes invoice credit.
        ("-4", {"gone": "4"}, "0", (), "-4"),
    ],
)
def test_a_negative_charge_is_credited_back_last_in_first_out(
    charge: str,
    period_draws: dict[str, str],
    period_overage: str,
    expected: tuple[tuple[str, str], ...],
    overage: str,
) -> None:
    allocation = allocate(
        D(charge),
        POOLS,
        BLOCK,  # a credit back is never refused, whatever the policy
        contract_id="ctr_1",
        period_draws={key: D(value) for key, value in period_draws.items()},
        period_overage=D(period_overage),
    )
    assert allocation.draws == draws(*expected)
    assert allocation.overage == D(overage)
    assert allocation.drawn + allocation.overage == D(charge)


def test_postpaid_commits_cannot_be_allocated() -> None:
    from rating_service.core.contracts import CommitmentKind

    commit = a_pool("commit", kind=CommitmentKind.POSTPAID_COMMIT)
    with pytest.raises(InvalidArgument):
        allocate(D(1), (commit,), ARREARS, contract_id="ctr_1")


@pytest.mark.parametrize(
    ("period_spend", "charge", "cap", "refused"),
    [
        ("90", "10", "100", False),  # 90 + 10 = 100: exactly the cap is allowed
        ("90", "10.000000001", "100", True),  # 100.000000001 > 100
        ("100", "0.01", "100", True),  # already at the cap
        ("100", "0", "100", False),  # a zero charge never exceeds
        ("150", "-5", "100", False),  # a credit back only lowers spend
        ("0", "1000000", None, False),  # no cap
        ("0", "0.01", "0", True),  # a cap of 0 allows nothing
    ],
)
def test_spend_cap(period_spend: str, charge: str, cap: str | None, refused: bool) -> None:
    def check() -> None:
        check_spend_cap(D(period_spend), D(charge), None if cap is None else D(cap))

    if refused:
        with pytest.raises(ResourceExhausted) as error:
            check()
        assert error.value.reason == SPEND_CAP_EXCEEDED
    else:
        check()


@pytest.mark.parametrize(
    ("status", "term_end", "moment", "reason"),
    [
        (ContractStatus.ACTIVE, None, at(1), None),
        (ContractStatus.SUSPENDED, None, at(1), CONTRACT_SUSPENDED),
        (ContractStatus.ENDED, None, at(1), CONTRACT_ENDED),
        (ContractStatus.ACTIVE, at(30), at(29.99), None),
        (ContractStatus.ACTIVE, at(30), at(30), CONTRACT_ENDED),  # term_end is exclusive
        (ContractStatus.ACTIVE, None, at(-0.001), CONTRACT_NOT_STARTED),
    ],
)
def test_only_active_contracts_within_their_term_accept_usage(
    status: ContractStatus, term_end: datetime | None, moment: datetime, reason: str | None
) -> None:
    contract = a_contract(status=status, term_end=term_end)
    if reason is None:
        check_contract_accepts_usage(contract, moment)
        return
    with pytest.raises(FailedPrecondition) as refused:
        check_contract_accepts_usage(contract, moment)
    assert refused.value.reason == reason
