"""Dunning's retry times (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rating_service.core.billing.dunning import next_retry_at
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
