"""Cancelling a contract: its term ends at the cancellation, never earlier than it already did."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rating_service.core.contracts.contract import CONTRACT_NOT_STARTED, cancelled
from rating_service.core.errors import FailedPrecondition
from tests.unit.core.contracts.builders import a_contract, at

MICROSECOND = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("term_end", "cancelled_at", "ends_at"),
    [
        (None, at(10), at(10)),  # an evergreen contract ends when it is cancelled
        (at(30), at(10), at(10)),  # a fixed term is cut short
        (at(30), at(30) - MICROSECOND, at(30) - MICROSECOND),  # just before the term's end
        (at(30), at(30), None),  # cancelled on the day its term ends: it ends then anyway
        (at(30), at(45), None),  # after its term ended: the earlier end stands
        (None, at(0) + MICROSECOND, at(0) + MICROSECOND),  # the earliest end a term can have
    ],
)
def test_a_cancellation_ends_the_term_unless_it_ends_by_then(
    term_end: datetime | None, cancelled_at: datetime, ends_at: datetime | None
) -> None:
    contract = a_contract(term_end=term_end)
    ended = cancelled(contract, cancelled_at)
    if ends_at is None:
        assert ended is None
        return
    assert ended is not None
    assert ended.term_end == ends_at
    assert ended.term_start == contract.term_start


@pytest.mark.parametrize("cancelled_at", [at(0), at(-1)])
def test_a_contract_cannot_end_on_or_before_its_term_starts(cancelled_at: datetime) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        cancelled(a_contract(), cancelled_at)
    assert refused.value.reason == CONTRACT_NOT_STARTED
    assert refused.value.violations[0].subject == "contracts/ctr_1"
