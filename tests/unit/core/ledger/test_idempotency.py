"""Idempotency keys: a replay returns the original result, another payload is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from rating_service.core.errors import AlreadyExists, InvalidArgument
from rating_service.core.ledger import (
    IDEMPOTENCY_KEY_MISMATCH,
    IdempotentOutcome,
    payload_fingerprint,
    recall,
)

D = Decimal


def test_equal_payloads_spelled_differently_have_one_fingerprint() -> None:
    utc = datetime(2025, 1, 1, 12, tzinfo=UTC)
    plus_one = utc.astimezone(timezone(timedelta(hours=1)))
    a = {"quantity": D("1.50"), "at": utc, "tags": frozenset({"b", "a"})}
    b = {"tags": frozenset({"a", "b"}), "at": plus_one, "quantity": D("1.5")}
    assert payload_fingerprint(a) == payload_fingerprint(b)
    assert payload_fingerprint(a) != payload_fingerprint({**a, "quantity": D("1.51")})


def test_floats_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        payload_fingerprint({"quantity": 1.5})


def test_recall() -> None:
    fingerprint = payload_fingerprint({"quantity": D(3)})
    stored = IdempotentOutcome("evt_1", fingerprint, "charged 3")
    assert recall(None, "evt_1", fingerprint) is None  # new: run it
    assert recall(stored, "evt_1", fingerprint) == "charged 3"  # replay
    with pytest.raises(AlreadyExists) as refused:
        recall(stored, "evt_1", payload_fingerprint({"quantity": D(4)}))
    assert refused.value.reason == IDEMPOTENCY_KEY_MISMATCH
