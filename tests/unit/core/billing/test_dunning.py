"""Dunning's retry times and the notifications a failure writes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rating_service.core.billing.dunning import PaymentFailure, StatusChange, next_retry_at
from rating_service.core.contracts.lifecycle import DEFAULT_DUNNING

DAY = timedelta(days=1)
FAILED_AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


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


def test_a_failure_is_announced_once_per_invoice_and_attempt() -> None:
    failure = PaymentFailure(
        "t1", "inv_1", "ctr_1", 2, "card_declined", "declined", FAILED_AT, FAILED_AT + 3 * DAY
    )
    assert failure.dedupe_key == "payment.failed:t1:inv_1:2"
    assert failure.payload() == {
        "invoice_id": "inv_1",
        "contract_id": "ctr_1",
        "attempt": 2,
        "decline_code": "card_declined",
        "message": "declined",
        "failed_at": "2026-03-01T09:30:00+00:00",
        "next_retry_at": "2026-03-04T09:30:00+00:00",
    }
    last = PaymentFailure("t1", "inv_1", "ctr_1", 5, "card_declined", "", FAILED_AT, None)
    assert last.payload()["next_retry_at"] is None


def test_a_suspension_is_announced_once_per_contract_and_invoice() -> None:
    change = StatusChange("contract.suspended", "t1", "ctr_1", "inv_1", FAILED_AT)
    assert change.dedupe_key == "contract.suspended:t1:ctr_1:inv_1"
    assert change.payload() == {
        "contract_id": "ctr_1",
        "invoice_id": "inv_1",
        "at": "2026-03-01T09:30:00+00:00",
    }
