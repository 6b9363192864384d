"""Billing periods: anchor day clamped to short months, quarterly and annual cycles, leap years."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from rating_service.core.contracts import BillingAnchor, BillingFrequency, billing_period_containing
from rating_service.core.errors import InvalidArgument
from tests.unit.core.contracts.builders import a_contract

MONTHLY = BillingFrequency.MONTHLY
QUARTERLY = BillingFrequency.QUARTERLY
ANNUAL = BillingFrequency.ANNUAL


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("term_start", "day", "frequency", "moment", "start", "end"),
    [
        # Anchor 31, monthly: Jan 31 → Feb 28 (clamped) → Mar 31 → Apr 30 (clamped) → May 31.
        ("2025-01-31", 31, MONTHLY, "2025-02-15", "2025-01-31", "2025-02-28"),
        ("2025-01-31", 31, MONTHLY, "2025-02-27T23:59:59", "2025-01-31", "2025-02-28"),
        ("2025-01-31", 31, MONTHLY, "2025-02-28", "2025-02-28", "2025-03-31"),  # start inclusive
        ("2025-01-31", 31, MONTHLY, "2025-03-30", "2025-02-28", "2025-03-31"),
        ("2025-01-31", 31, MONTHLY, "2025-04-29", "2025-03-31", "2025-04-30"),
        ("2025-01-31", 31, MONTHLY, "2025-04-30", "2025-04-30", "2025-05-31"),
        # Leap year: February has 29 days, so anchor 31 (and 30, 29) land on Feb 29.
        ("2024-01-31", 31, MONTHLY, "2024-02-28", "2024-01-31", "2024-02-29"),
        ("2024-01-31", 31, MONTHLY, "2024-03-01", "2024-02-29", "2024-03-31"),
        ("2024-01-29", 29, MONTHLY, "2024-02-29", "2024-02-29", "2024-03-29"),
        ("2025-01-29", 29, MONTHLY, "2025-02-28", "2025-02-28", "2025-03-29"),  # not leap: 28
        # Anchor 1 with a mid-month start: the first period is cut to the term.
        ("2025-01-15", 1, MONTHLY, "2025-01-20", "2025-01-15", "2025-02-01"),
        ("2025-01-15", 1, MONTHLY, "2025-02-01", "2025-02-01", "2025-03-01"),
        # Year end.
        ("2025-01-01", 1, MONTHLY, "2025-12-31T23:59:59", "2025-12-01", "2026-01-01"),
        # Quarterly, counted from the term's month: Jan 31 → Apr 30 → Jul 31 → Oct 31 → Jan 31.
        ("2025-01-31", 31, QUARTERLY, "2025-04-29", "2025-01-31", "2025-04-30"),
        ("2025-01-31", 31, QUARTERLY, "2025-05-15", "2025-04-30", "2025-07-31"),
        ("2025-01-31", 31, QUARTERLY, "2025-12-25", "2025-10-31", "2026-01-31"),
        ("2023-11-30", 30, QUARTERLY, "2024-02-29", "2024-02-29", "2024-05-30"),  # leap Feb 29
        # Annual: Feb 29 anchor in a leap year clamps to Feb 28 in the next.
        ("2024-02-29", 29, ANNUAL, "2024-12-31", "2024-02-29", "2025-02-28"),
        ("2024-02-29", 29, ANNUAL, "2025-03-01", "2025-02-28", "2026-02-28"),
        ("2024-02-29", 29, ANNUAL, "2028-02-29", "2028-02-29", "2029-02-28"),
        ("2025-01-01", 1, ANNUAL, "2026-06-30", "2026-01-01", "2027-01-01"),
    ],
)
def test_periods(
    term_start: str,
    day: int,
    frequency: BillingFrequency,
    moment: str,
    start: str,
    end: str,
) -> None:
    contract = a_contract(
        term_start=utc(term_start), anchor=BillingAnchor(day), frequency=frequency
    )
    assert billing_period_containing(contract, utc(moment)) == (utc(start), utc(end))


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        # Anchor 31 at 06:00 UTC: the boundary is the 28th at 06:00, not midnight.
        ("2025-02-28T05:59:59", "2025-01-31T06:00", "2025-02-28T06:00"),
        ("2025-02-28T06:00", "2025-02-28T06:00", "2025-03-31T06:00"),
    ],
)
def test_the_anchor_time_moves_the_boundary(moment: str, start: str, end: str) -> None:
    contract = a_contract(term_start=utc("2025-01-01"), anchor=BillingAnchor(31, time(6, 0)))
    found = billing_period_containing(contract, utc(moment))
    # The first period starts at the term start (Jan 1), later ones at the anchor.
    assert found[1] == utc(end)
    assert found[0] == max(utc(start), utc("2025-01-01"))


def test_a_moment_given_in_another_offset_is_read_in_utc() -> None:
    contract = a_contract(term_start=utc("2025-01-01"), anchor=BillingAnchor(1))
    # 2025-02-01T00:30+01:00 is Jan 31 23:30 UTC: still January's period.
    moment = datetime.fromisoformat("2025-02-01T00:30:00+01:00")
    assert billing_period_containing(contract, moment) == (utc("2025-01-01"), utc("2025-02-01"))


def test_the_last_period_ends_with_the_term() -> None:
    contract = a_contract(term_start=utc("2025-01-01"), term_end=utc("2025-06-15"))
    assert billing_period_containing(contract, utc("2025-06-10")) == (
        utc("2025-06-01"),
        utc("2025-06-15"),
    )


@pytest.mark.parametrize("moment", ["2024-12-31T23:59:59", "2025-06-15"])
def test_moments_outside_the_term_have_no_period(moment: str) -> None:
    contract = a_contract(term_start=utc("2025-01-01"), term_end=utc("2025-06-15"))
    with pytest.raises(InvalidArgument):
        billing_period_containing(contract, utc(moment))


@pytest.mark.parametrize("day", [0, 32, -1])
def test_the_anchor_day_is_a_day_of_the_month(day: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        BillingAnchor(day)
    assert refused.value.violations[0].field == "day"
