"""Dunning's retry times (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rating_service.core.billing.dunning import (
    ContractStanding,
    StandingChange,
    next_retry_at,
    reinstatement_on_payment,
    suspension_on_write_off,
)
from rating_service.core.billing.invoice import Invoice, InvoiceState
from rating_service.core.contracts.contract import ContractStatus
from rating_service.core.contracts.lifecycle import DEFAULT_DUNNING
from rating_service.core.money import currency_of

DAY = timedelta(days=1)
FAILED_AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
ACTIVE, SUSPENDED, ENDED = ContractStatus.ACTIVE, ContractStatus.SUSPENDED, ContractStatus.ENDED


@pytest.mark.parametrize(
    ("schedule", "failed_attempt", "expected"),
    [
        # The default 1, 3, 5, 7 days: each is the wait after the attempt before it failed.
        (DEFAULT_DUNNING, 1, FAILED_AT + 1 * DAY),
        (DEFAULT_DUNNING, 2, FAILED_AT + 3 * DAY),
        (DEFAULT_DUNNING, 3, FAILED_AT + 5 * DAY),
        (DEFAULT_DUNNING, 4, FAILED_AT + 7 * DAY),
        (DEFAULT_DUNNING, 5, None),  # four delays, five attempts: the fifth was the last
        (DEFAULT_DUNNING, 9, None),  # tried again after suspension (a new payment method)
        ((timedelta(seconds=1), timedelta(seconds=1)), 2, FAILED_AT + timedelta(seconds=1)),
        ((timedelta(seconds=1), timedelta(seconds=1)), 3, None),
        ((), 1, None),  # no schedule: the first failure is the last
    ],
)
def test_the_next_retry_follows_the_failed_attempt_by_its_delay(
    schedule: tuple[timedelta, ...], failed_attempt: int, expected: datetime | None
) -> None:
    assert next_retry_at(schedule, failed_attempt, FAILED_AT) == expected


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        next_retry_at(DEFAULT_DUNNING, 0, FAILED_AT)


def an_invoice(state: InvoiceState, invoice_id: str = "inv_1") -> Invoice:
    """Contract `ctr_1`'s invoice, numbered, in `state` (before the change being decided)."""
    return Invoice(
        invoice_id,
        "t1",
        "ctr_1",
        "cus_1",
        currency_of("USD"),
        FAILED_AT,
        FAILED_AT - 30 * DAY,
        FAILED_AT,
        (),
        state=state,
        number="INV-000001",
    )


def standing(status: ContractStatus, *uncollectible: str) -> ContractStanding:
    return ContractStanding(status, frozenset(uncollectible))


@pytest.mark.parametrize(
    ("contract", "suspends"),
    [
        (standing(ACTIVE), True),
        # Another invoice written off suspended it already: one suspension, by the first.
        (standing(SUSPENDED, "inv_0"), False),
        (standing(ENDED), False),  # an ended contract takes no usage anyway
    ],
)
def test_writing_an_invoice_off_suspends_an_active_contract(
    contract: ContractStanding, suspends: bool
) -> None:
    change = suspension_on_write_off(an_invoice(InvoiceState.FINALIZED), contract, FAILED_AT)
    if not suspends:
        assert change is None
        return
    assert change == StandingChange("t1", "ctr_1", "inv_1", ACTIVE, SUSPENDED, FAILED_AT)


@pytest.mark.parametrize(
    ("paid_was", "contract", "reinstates"),
    [
        # The invoice that suspended it, the only one owed: paid before or after the read.
        (InvoiceState.UNCOLLECTIBLE, standing(SUSPENDED, "inv_1"), True),
        (InvoiceState.UNCOLLECTIBLE, standing(SUSPENDED), True),
        # Another invoice is still written off: the contract stays suspended until it is paid.
        (InvoiceState.UNCOLLECTIBLE, standing(SUSPENDED, "inv_1", "inv_2"), False),
        (InvoiceState.UNCOLLECTIBLE, standing(SUSPENDED, "inv_2"), False),
        # Not suspended (an ended contract stays ended; an active one has nothing to undo).
        (InvoiceState.UNCOLLECTIBLE, standing(ACTIVE, "inv_1"), False),
        (InvoiceState.UNCOLLECTIBLE, standing(ENDED, "inv_1"), False),
        # A payment in the course of collection was never written off: it reinstates nothing.
        (InvoiceState.FINALIZED, standing(SUSPENDED), False),
        (InvoiceState.FINALIZED, standing(ACTIVE), False),
    ],
)
def test_paying_the_last_invoice_written_off_reinstates_a_suspended_contract(
    paid_was: InvoiceState, contract: ContractStanding, reinstates: bool
) -> None:
    change = reinstatement_on_payment(an_invoice(paid_was), contract, FAILED_AT)
    if not reinstates:
        assert change is None
        return
    assert change == StandingChange("t1", "ctr_1", "inv_1", SUSPENDED, ACTIVE, FAILED_AT)
