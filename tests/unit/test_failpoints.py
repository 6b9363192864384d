"""Failpoints: armed by name and count, silent otherwise, and refused when misspelt."""

from __future__ import annotations

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.failpoints import (
    AFTER_NUMBER_ASSIGNED,
    AFTER_PAYMENT_TAKEN,
    Failpoints,
    InjectedFailure,
)
from rating_service.settings import Settings


def fired(failpoints: Failpoints, name: str, hits: int) -> int:
    """How many of `hits` hits of `name` raised InjectedFailure (with the name in the message)."""
    count = 0
    for _ in range(hits):
        try:
            failpoints.hit(name)
        except InjectedFailure as failure:
            assert str(failure) == f"failpoint {name} fired"
            assert failure.reason == "INJECTED_FAILURE"
            count += 1
    return count


@pytest.mark.parametrize(
    "failpoints",
    [
        Failpoints(),
        Failpoints.parse(""),
        Failpoints.parse(" , ,"),  # empty items are skipped, not refused
        Failpoints.parse(f"{AFTER_PAYMENT_TAKEN}=0"),  # armed for zero times: never fires
        Failpoints.parse(AFTER_NUMBER_ASSIGNED),  # another name armed
    ],
    ids=["no-arguments", "empty-text", "empty-items", "zero-times", "another-armed"],
)
def test_an_unarmed_failpoint_stays_silent_however_often_it_is_hit(failpoints: Failpoints) -> None:
    assert fired(failpoints, AFTER_PAYMENT_TAKEN, 3) == 0


def test_hitting_one_failpoint_leaves_another_armed() -> None:
    failpoints = Failpoints.parse(AFTER_NUMBER_ASSIGNED)
    # Not armed: hitting it must not spend the other one.
    assert fired(failpoints, AFTER_PAYMENT_TAKEN, 3) == 0
    assert fired(failpoints, AFTER_NUMBER_ASSIGNED, 3) == 1  # a bare name fires once


def test_failpoints_keep_their_own_counts_and_leave_the_caller_s_alone() -> None:
    armed = {AFTER_PAYMENT_TAKEN: 1}
    first, second = Failpoints(armed), Failpoints(armed)
    assert fired(first, AFTER_PAYMENT_TAKEN, 2) == 1
    assert fired(second, AFTER_PAYMENT_TAKEN, 2) == 1  # the first one's count is its own
    assert armed == {AFTER_PAYMENT_TAKEN: 1}


@pytest.mark.parametrize("times", [1, 2, 5])
def test_an_armed_failpoint_fires_as_many_times_as_armed_then_stops(times: int) -> None:
    failpoints = Failpoints.parse(f" {AFTER_PAYMENT_TAKEN}={times} , {AFTER_NUMBER_ASSIGNED}")
    # The first `times` hits fire, every later one passes.
    expected = [1] * times + [0] * 3
    assert [fired(failpoints, AFTER_PAYMENT_TAKEN, 1) for _ in range(times + 3)] == expected
    assert fired(failpoints, AFTER_NUMBER_ASSIGNED, 3) == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("invoice.after_nothing", "unknown failpoint 'invoice.after_nothing'"),
        (f"{AFTER_NUMBER_ASSIGNED},invoice.after_nothing=2", "unknown failpoint"),
        (AFTER_PAYMENT_TAKEN.upper(), "unknown failpoint"),  # names are exact
        (f"{AFTER_PAYMENT_TAKEN}=twice", "times must be a number"),
        (f"{AFTER_PAYMENT_TAKEN}=-1", "times must be a number"),
        (f"{AFTER_PAYMENT_TAKEN}=1.5", "times must be a number"),
    ],
)
def test_a_misspelt_failpoint_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says) as refused:
        Failpoints.parse(text)
    assert [v.field for v in refused.value.violations] == ["failpoints"]


def test_settings_refuse_a_misspelt_failpoint_at_start() -> None:
    with pytest.raises(InvalidArgument, match="unknown failpoint"):
        Settings.from_env({"RATING_FAILPOINTS": "invoice.after_lunch"})


def test_settings_carry_the_armed_failpoints_to_the_worker() -> None:
    settings = Settings.from_env({"RATING_FAILPOINTS": f"{AFTER_PAYMENT_TAKEN}=1"})
    failpoints = Failpoints.parse(settings.failpoints)  # as the worker's registry reads them
    assert fired(failpoints, AFTER_PAYMENT_TAKEN, 3) == 1
