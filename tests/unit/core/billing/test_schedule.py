"""Billing dates: opening at term start, one per period end, final at term end (pure)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_service.core.billing.schedule import BillingDate, billing_date, next_billing_date
from rating_service.core.contracts import BillingAnchor, BillingFrequency, Contract
from tests.unit.core.billing.builders import T0, a_contract, utc, walk

QUARTERLY = BillingFrequency.QUARTERLY
ANNUAL = BillingFrequency.ANNUAL


@pytest.mark.parametrize(
    ("contract", "expected"),
    [
        pytest.param(
            # Starts on the 15th, anchor day 1, ends on 10 March: a stub first and last period.
            a_contract(term_start=utc(2025, 1, 15), term_end=utc(2025, 3, 10)),
            [utc(2025, 1, 15), utc(2025, 2, 1), utc(2025, 3, 1), utc(2025, 3, 10)],
            id="mid-month start, anchor 1, stub end",
        ),
        pytest.param(
            # Anchor 31 clamps to each month's last day: 28 Feb 2025, 30 Apr, 30 Jun.
            a_contract(
                term_start=utc(2025, 1, 31), term_end=utc(2025, 7, 31), anchor=BillingAnchor(31)
            ),
            [
                utc(2025, 1, 31),
                utc(2025, 2, 28),
                utc(2025, 3, 31),
                utc(2025, 4, 30),
                utc(2025, 5, 31),
                utc(2025, 6, 30),
                utc(2025, 7, 31),
            ],
            id="anchor 31 clamps to month end",
        ),
        pytest.param(
            # 2024 is a leap year: the February boundary is the 29th.
            a_contract(
                term_start=utc(2024, 1, 31), term_end=utc(2024, 4, 30), anchor=BillingAnchor(31)
            ),
            [utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30)],
            id="anchor 31 in a leap February",
        ),
        pytest.param(
            # Anchor on the 15th, the term starting on it: no stub, whole months.
            a_contract(
                term_start=utc(2025, 1, 15), term_end=utc(2025, 4, 15), anchor=BillingAnchor(15)
            ),
            [utc(2025, 1, 15), utc(2025, 2, 15), utc(2025, 3, 15), utc(2025, 4, 15)],
            id="anchor on the start day",
        ),
        pytest.param(
            # Anchor on the 20th, starting on the 10th: a 10-day stub, then the 20ths.
            a_contract(
                term_start=utc(2025, 1, 10), term_end=utc(2025, 3, 20), anchor=BillingAnchor(20)
            ),
            [utc(2025, 1, 10), utc(2025, 1, 20), utc(2025, 2, 20), utc(2025, 3, 20)],
            id="anchor after the start day",
        ),
        pytest.param(
            # Anchor time 06:30 UTC: boundaries fall at that time of day.
            a_contract(
                term_start=utc(2025, 1, 1),
                term_end=utc(2025, 3, 1, 6, 30),
                anchor=BillingAnchor(1, time(6, 30)),
            ),
            [
                utc(2025, 1, 1),
                utc(2025, 1, 1, 6, 30),
                utc(2025, 2, 1, 6, 30),
                utc(2025, 3, 1, 6, 30),
            ],
            id="anchor time of day",
        ),
        pytest.param(
            # Quarters counted from the month the term starts in (Feb): 1 May, 1 Aug.
            a_contract(term_start=utc(2025, 2, 10), term_end=utc(2025, 9, 1), frequency=QUARTERLY),
            [utc(2025, 2, 10), utc(2025, 5, 1), utc(2025, 8, 1), utc(2025, 9, 1)],
            id="quarterly",
        ),
        pytest.param(
            a_contract(term_start=utc(2025, 3, 1), term_end=utc(2027, 3, 1), frequency=ANNUAL),
            [utc(2025, 3, 1), utc(2026, 3, 1), utc(2027, 3, 1)],
            id="annual",
        ),
        pytest.param(
            # Fixed 10-second periods from term start; the last one cut at 25 s.
            a_contract(term_end=T0 + timedelta(seconds=25), interval=timedelta(seconds=10)),
            [
                T0,
                T0 + timedelta(seconds=10),
                T0 + timedelta(seconds=20),
                T0 + timedelta(seconds=25),
            ],
            id="10-second interval",
        ),
        pytest.param(
            # A fixed interval ignores the anchor: 7-day periods from a Wednesday at 09:00.
            a_contract(
                term_start=utc(2025, 1, 1, 9),
                term_end=utc(2025, 1, 22, 9),
                interval=timedelta(days=7),
                anchor=BillingAnchor(15),
            ),
            [utc(2025, 1, 1, 9), utc(2025, 1, 8, 9), utc(2025, 1, 15, 9), utc(2025, 1, 22, 9)],
            id="weekly interval, anchor ignored",
        ),
    ],
)
def test_billing_dates_in_order(contract: Contract, expected: list[datetime]) -> None:
    dates = walk(contract)
    assert [d.at for d in dates] == expected
    # Opening: nothing in arrears; final: nothing in advance; in between, both.
    assert dates[0].is_opening and not dates[0].is_final
    assert dates[-1].is_final and not dates[-1].is_opening
    assert all(not d.is_opening and not d.is_final for d in dates[1:-1])
    # The period billed in advance on one date is the one billed in arrears on the next.
    for earlier, later in pairwise(dates):
        assert earlier.advance == later.arrears == (earlier.at, later.at)


def test_opening_date_bills_the_first_period_in_advance_only() -> None:
    contract = a_contract(term_start=utc(2025, 1, 15))
    opening = billing_date(contract, utc(2025, 1, 15))
    assert opening == BillingDate(utc(2025, 1, 15), None, (utc(2025, 1, 15), utc(2025, 2, 1)))


def test_period_end_bills_the_closed_period_in_arrears_and_the_next_in_advance() -> None:
    contract = a_contract(term_start=utc(2025, 1, 15))
    on_the_first = billing_date(contract, utc(2025, 2, 1))
    assert on_the_first.arrears == (utc(2025, 1, 15), utc(2025, 2, 1))
    assert on_the_first.advance == (utc(2025, 2, 1), utc(2025, 3, 1))


def test_final_date_bills_the_last_period_in_arrears_only() -> None:
    contract = a_contract(term_end=utc(2025, 3, 10))
    final = billing_date(contract, utc(2025, 3, 10))
    assert final == BillingDate(utc(2025, 3, 10), (utc(2025, 3, 1), utc(2025, 3, 10)), None)
    assert final.is_final


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (None, utc(2025, 1, 15)),  # nothing billed yet: the opening date
        (utc(2024, 12, 1), utc(2025, 1, 15)),  # before the term: the opening date
        (utc(2025, 1, 15), utc(2025, 2, 1)),  # on the opening date: the first period's end
        (utc(2025, 1, 20), utc(2025, 2, 1)),  # mid-period: that period's end
        (utc(2025, 2, 1), utc(2025, 3, 1)),  # on a boundary: strictly after it
        (utc(2025, 3, 1) - timedelta(microseconds=1), utc(2025, 3, 1)),
        (utc(2025, 3, 5), utc(2025, 3, 10)),  # in the last period: the term end
        (utc(2025, 3, 10), None),  # on the final date: nothing follows
        (utc(2025, 6, 1), None),  # after the term
    ],
)
def test_next_billing_date_after(after: datetime | None, expected: datetime | None) -> None:
    contract = a_contract(term_start=utc(2025, 1, 15), term_end=utc(2025, 3, 10))
    found = next_billing_date(contract, after)
    assert (found.at if found is not None else None) == expected


def test_an_evergreen_contract_never_has_a_final_date() -> None:
    dates = walk(a_contract(anchor=BillingAnchor(31)), limit=30)
    assert len(dates) == 30
    assert not any(d.is_final for d in dates)
    # 31 Dec 2024 anchor, from 1 Jan 2025: stub to 31 Jan, then each month's last day.
    assert [d.at for d in dates[:4]] == [T0, utc(2025, 1, 31), utc(2025, 2, 28), utc(2025, 3, 31)]


def test_an_evergreen_interval_contract_never_has_a_final_date() -> None:
    dates = walk(a_contract(interval=timedelta(seconds=10)), limit=100)
    assert [d.at for d in dates] == [T0 + timedelta(seconds=10 * n) for n in range(100)]
    assert not any(d.is_final for d in dates)


anchors = st.builds(
    BillingAnchor,
    st.integers(1, 31),
    st.sampled_from([time(0, 0), time(6, 30), time(23, 59, 59)]),
)
starts = st.integers(0, 4 * 365 * 24 * 3600).map(lambda s: utc(2023, 1, 1) + timedelta(seconds=s))


@settings(max_examples=150, deadline=None)
@given(
    start=starts,
    length=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=800)),
    anchor=anchors,
    frequency=st.sampled_from(list(BillingFrequency)),
    interval=st.one_of(
        st.none(),
        st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=40)),
    ),
)
def test_billing_dates_tile_the_term(
    start: datetime,
    length: timedelta,
    anchor: BillingAnchor,
    frequency: BillingFrequency,
    interval: timedelta | None,
) -> None:
    """Whatever the cycle, the periods billed in arrears cover the term once, without gaps."""
    if interval is not None and length / interval > 300:
        interval = length / 300  # keep each example short
        interval = max(interval, timedelta(seconds=1))
    contract = a_contract(
        term_start=start,
        term_end=start + length,
        anchor=anchor,
        frequency=frequency,
        interval=interval,
    )
    dates = walk(contract, limit=10_000)
    assert dates[0].at == start and dates[0].is_opening
    assert dates[-1].at == start + length and dates[-1].is_final
    arrears = [d.arrears for d in dates[1:]]
    assert [p for p in arrears if p is not None] == arrears
    assert [d.at for d in dates[1:]] == [p[1] for p in arrears if p is not None]
    assert [p[0] for p in arrears if p is not None] == [d.at for d in dates[:-1]]
    for earlier, later in pairwise(dates):
        assert earlier.at < later.at
        assert earlier.advance == later.arrears
