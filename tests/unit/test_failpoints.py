"""Failpoints: armed by name and count, silent otherwise, and refused when misspelt."""

from __future__ import annotations

import pytest

from rating_service.domain.errors import InvalidArgument
from rating_service.failpoints import (
    AFTER_NUMBER_ASSIGNED,
    AFTER_PAYMENT_TAKEN,
    Failpoints,
    InjectedFailure,
)
from rating_service.settings import Settings


def test_an_unarmed_failpoint_does_nothing() -> None:
    Failpoints().hit(AFTER_NUMBER_ASSIGNED)
    Failpoints.parse("").hit(AFTER_PAYMENT_TAKEN)


def test_an_armed_failpoint_fires_as_many_times_as_armed() -> None:
    failpoints = Failpoints.parse(f"{AFTER_PAYMENT_TAKEN}=2, {AFTER_NUMBER_ASSIGNED}")
    for _ in range(2):
        with pytest.raises(InjectedFailure, match=AFTER_PAYMENT_TAKEN):
            failpoints.hit(AFTER_PAYMENT_TAKEN)
    failpoints.hit(AFTER_PAYMENT_TAKEN)  # spent
    with pytest.raises(InjectedFailure):
        failpoints.hit(AFTER_NUMBER_ASSIGNED)
    failpoints.hit(AFTER_NUMBER_ASSIGNED)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("invoice.after_nothing", "unknown failpoint"),
        (f"{AFTER_PAYMENT_TAKEN}=twice", "must be a number"),
    ],
)
def test_a_misspelt_failpoint_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        Failpoints.parse(text)


def test_settings_refuse_a_misspelt_failpoint_at_start() -> None:
    with pytest.raises(InvalidArgument, match="unknown failpoint"):
        Settings.from_env({"RATING_FAILPOINTS": "invoice.after_lunch"})
