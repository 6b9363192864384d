"""Dunning: when to retry a failed invoice payment.

Attempt 1 is the invoice workflow's; the contract's dunning schedule gives the wait after each
failed attempt before the next one (`schedule[n - 1]` after attempt n), so a schedule of k
delays allows k + 1 attempts. After the last one the invoice is uncollectible and the contract
suspended; a later payment reinstates it. Attempt numbers are counted from the attempts the
invoice has recorded, so a new workflow run resumes the schedule where the old one stopped.
What a failure announces is an outbox topic's (`PaymentFailure`, `StatusChange` in
`rating_service.outbox.topics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

GATEWAY_TIMEOUT_CODE = "gateway_timeout"
"""Decline code recorded for an attempt the gateway never answered."""


def next_retry_at(
    schedule: Sequence[timedelta], failed_attempt: int, failed_at: datetime
) -> datetime | None:
    """When to try again after attempt `failed_attempt` failed at `failed_at`; None: no more."""
    if failed_attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {failed_attempt}")
    if failed_attempt > len(schedule):
        return None
    return failed_at + schedule[failed_attempt - 1]
