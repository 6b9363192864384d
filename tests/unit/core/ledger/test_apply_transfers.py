"""Applying transfers: posted and two-phase, all or nothing, pools never below zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from rating_service.core.ledger import (
    ACCOUNT_NOT_FOUND,
    IDEMPOTENCY_KEY_MISMATCH,
    INSUFFICIENT_CREDIT,
    PENDING_TRANSFER_NOT_OPEN,
    Account,
    AccountKind,
    Ledger,
    Transfer,
    TransferCode,
    TransferFlags,
    apply_transfers,
    open_account,
    open_pending_after,
)

D = Decimal
POOL = "pool:p"
REVENUE = "revenue:ctr_1:gpt"
PROMO = "promotions:ctr_1"


def accounts() -> dict[str, Account]:
    return {
        POOL: open_account(POOL, AccountKind.POOL, "USD"),
        REVENUE: open_account(REVENUE, AccountKind.REVENUE, "USD"),
        PROMO: open_account(PROMO, AccountKind.PROMOTIONS, "USD"),
    }


def move(
    transfer_id: str,
    debit: str,
    credit: str,
    amount: str,
    flags: TransferFlags = TransferFlags.NONE,
    pending_id: str | None = None,
) -> Transfer:
    return Transfer(
        transfer_id, debit, credit, D(amount), TransferCode.USAGE, "event:e", flags, pending_id
    )


GRANT_10 = move("g", PROMO, POOL, "10")


def totals(account: Account) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (
        account.debits_posted,
        account.credits_posted,
        account.debits_pending,
        account.credits_pending,
    )


def test_posted_transfers_move_both_sides() -> None:
    after = apply_transfers(accounts(), [GRANT_10, move("u", POOL, REVENUE, "4")])
    # Pool: credited 10, debited 4 → balance 6; revenue credited 4; promotions debited 10.
    assert totals(after[POOL]) == (D(4), D(10), D(0), D(0))
    assert after[POOL].credit_balance == D(6)
    assert after[REVENUE].credit_balance == D(4)
    assert after[PROMO].debit_balance == D(10)


def test_a_pool_can_be_drawn_to_exactly_zero_and_no_further() -> None:
    assert apply_transfers(accounts(), [GRANT_10, move("u", POOL, REVENUE, "10")])[
        POOL
    ].credit_balance == D(0)
    with pytest.raises(FailedPrecondition) as refused:
        apply_transfers(accounts(), [GRANT_10, move("u", POOL, REVENUE, "10.000000001")])
    assert refused.value.reason == INSUFFICIENT_CREDIT
    assert refused.value.metadata["account_id"] == POOL


def test_a_refused_batch_changes_nothing() -> None:
    before = apply_transfers(accounts(), [GRANT_10])
    snapshot = dict(before)
    # The first two transfers fit; the third overdraws: the whole batch is refused.
    batch = [
        move("a", POOL, REVENUE, "3"),
        move("b", POOL, REVENUE, "3"),
        move("c", POOL, REVENUE, "5"),
    ]
    with pytest.raises(FailedPrecondition):
        apply_transfers(before, batch)
    assert before == snapshot


def test_pending_counts_against_the_balance() -> None:
    held = apply_transfers(
        accounts(), [GRANT_10, move("h", POOL, REVENUE, "7", TransferFlags.PENDING)]
    )
    assert totals(held[POOL]) == (D(0), D(10), D(7), D(0))
    assert held[POOL].available_credit == D(3)
    with pytest.raises(FailedPrecondition):
        apply_transfers(held, [move("u", POOL, REVENUE, "3.01")])


@pytest.mark.parametrize(
    ("resolution", "posted_pool_debits", "revenue"),
    [
        (move("x", POOL, REVENUE, "7", TransferFlags.POST_PENDING, "h"), "7", "7"),  # in full
        (
            move("x", POOL, REVENUE, "5", TransferFlags.POST_PENDING, "h"),
            "5",
            "5",
        ),  # less: 2 released
        (move("x", POOL, REVENUE, "7", TransferFlags.VOID_PENDING, "h"), "0", "0"),  # void
    ],
)
def test_two_phase_resolution(resolution: Transfer, posted_pool_debits: str, revenue: str) -> None:
    hold = move("h", POOL, REVENUE, "7", TransferFlags.PENDING)
    pending = {"h": hold}
    held = apply_transfers(accounts(), [GRANT_10, hold])
    after = apply_transfers(held, [resolution], pending)
    assert totals(after[POOL]) == (D(posted_pool_debits), D(10), D(0), D(0))
    assert after[REVENUE].credit_balance == D(revenue)
    assert open_pending_after(pending, [resolution]) == {}


@pytest.mark.parametrize(
    ("resolution", "error"),
    [
        (move("x", POOL, REVENUE, "7.01", TransferFlags.POST_PENDING, "h"), InvalidArgument),
        (move("x", POOL, REVENUE, "6", TransferFlags.VOID_PENDING, "h"), InvalidArgument),
        (move("x", POOL, PROMO, "7", TransferFlags.POST_PENDING, "h"), InvalidArgument),
        (move("x", POOL, REVENUE, "7", TransferFlags.POST_PENDING, "nope"), FailedPrecondition),
    ],
)
def test_bad_resolutions_are_refused(resolution: Transfer, error: type[Exception]) -> None:
    hold = move("h", POOL, REVENUE, "7", TransferFlags.PENDING)
    held = apply_transfers(accounts(), [GRANT_10, hold])
    with pytest.raises(error):
        apply_transfers(held, [resolution], {"h": hold})


def test_a_pending_transfer_resolves_once() -> None:
    hold = move("h", POOL, REVENUE, "7", TransferFlags.PENDING)
    post = move("x", POOL, REVENUE, "7", TransferFlags.POST_PENDING, "h")
    void = move("y", POOL, REVENUE, "7", TransferFlags.VOID_PENDING, "h")
    with pytest.raises(FailedPrecondition) as refused:
        apply_transfers(accounts(), [GRANT_10, hold, post, void])  # in one batch
    assert refused.value.reason == PENDING_TRANSFER_NOT_OPEN


def test_unknown_accounts_duplicate_ids_and_other_currencies() -> None:
    with pytest.raises(NotFound) as missing:
        apply_transfers(accounts(), [move("u", "pool:ghost", REVENUE, "1")])
    assert missing.value.reason == ACCOUNT_NOT_FOUND
    with pytest.raises(InvalidArgument):
        apply_transfers(accounts(), [GRANT_10, GRANT_10])
    euros = {**accounts(), "pool:eur": open_account("pool:eur", AccountKind.POOL, "EUR")}
    with pytest.raises(InvalidArgument):
        apply_transfers(euros, [move("x", PROMO, "pool:eur", "1")])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": D(0)},
        {"amount": D(-1)},
        {"credit_account_id": POOL, "debit_account_id": POOL},
        {"flags": TransferFlags.POST_PENDING},  # no pending_id
        {"pending_id": "h"},  # a pending_id on a plain transfer
        {"flags": TransferFlags.PENDING | TransferFlags.VOID_PENDING, "pending_id": "h"},
        {"reference": ""},  # every transfer is traceable
    ],
)
def test_transfers_are_validated(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "transfer_id": "t",
        "debit_account_id": POOL,
        "credit_account_id": REVENUE,
        "amount": D(1),
        "code": TransferCode.USAGE,
        "reference": "event:e",
    }
    with pytest.raises(InvalidArgument):
        Transfer(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_the_ledger_skips_a_replayed_transfer_and_refuses_a_different_one() -> None:
    ledger = Ledger.empty().open(accounts().values()).apply([GRANT_10])
    assert ledger.apply([GRANT_10]) is ledger  # same id, same content: nothing changes
    with pytest.raises(AlreadyExists) as refused:
        ledger.apply([move("g", PROMO, POOL, "11")])
    assert refused.value.reason == IDEMPOTENCY_KEY_MISMATCH


def test_accounts_are_opened_once() -> None:
    ledger = Ledger.empty().open(accounts().values())
    assert ledger.open([open_account(POOL, AccountKind.POOL, "USD")]) == ledger
    with pytest.raises(AlreadyExists):
        ledger.open([open_account(POOL, AccountKind.REVENUE, "USD")])
