"""Daily proration by whole UTC days, exact or to PRORATION_PLACES decimal places."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import pairwise

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import prorate, prorated_days

D = Decimal
JAN = (date(2025, 1, 1), date(2025, 2, 1))  # 31 days
APRIL = (date(2025, 4, 1), date(2025, 5, 1))  # 30 days


@pytest.mark.parametrize(
    ("amount", "period", "active_start", "active_end", "expected"),
    [
        ("30", APRIL, date(2025, 4, 1), None, "30"),  # whole period: 30 × 30/30
        ("30", APRIL, date(2025, 4, 16), None, "15"),  # 16th–30th: 30 × 15/30
        ("30", APRIL, date(2025, 4, 1), date(2025, 4, 11), "10"),  # 1st–10th: 30 × 10/30
        ("30", APRIL, date(2025, 3, 1), date(2025, 6, 1), "30"),  # covers more than the period
        ("30", APRIL, date(2025, 5, 1), None, "0"),  # starts when the period ends
        ("30", APRIL, date(2025, 3, 1), date(2025, 4, 1), "0"),  # ends when the period starts
        ("30", APRIL, date(2025, 4, 10), date(2025, 4, 10), "0"),  # empty range
        ("100", JAN, date(2025, 1, 11), None, "67.74193548387096774194"),  # 100 × 21/31
        ("100", JAN, date(2025, 1, 1), date(2025, 1, 2), "3.22580645161290322581"),  # 100 × 1/31
        ("10", APRIL, date(2025, 4, 21), None, "3.33333333333333333333"),  # 10 × 10/30
        ("20", APRIL, date(2025, 4, 21), None, "6.66666666666666666667"),  # 20 × 10/30, half up
        ("49.99", APRIL, date(2025, 4, 16), None, "24.995"),  # 49.99 × 15/30, exact
        ("-30", APRIL, date(2025, 4, 16), None, "-15"),  # a credit prorates the same way
    ],
)
def test_prorate_by_day(
    amount: str,
    period: tuple[date, date],
    active_start: date,
    active_end: date | None,
    expected: str,
) -> None:
    assert prorate(D(amount), *period, active_start, active_end) == D(expected)


def test_non_terminating_fractions_keep_twenty_places() -> None:
    third = prorate(D(1), date(2025, 1, 1), date(2025, 1, 4), date(2025, 1, 3))  # 1 × 1/3
    assert third.as_tuple().exponent == -20
    assert third == D("0.33333333333333333333")


def test_moments_count_by_their_utc_day() -> None:
    period = (
        datetime(2025, 4, 1, tzinfo=UTC),
        datetime(2025, 5, 1, tzinfo=UTC),
    )
    # Changed at 10:00 UTC on the 16th: the 16th belongs to the range starting then.
    change = datetime(2025, 4, 16, 10, 0, tzinfo=UTC)
    assert prorated_days(*period, period[0], change) == (15, 30)
    assert prorated_days(*period, change, None) == (15, 30)
    # 23:30 on the 15th in UTC−2 is 01:30 on the 16th in UTC
    late_evening = datetime(2025, 4, 15, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert prorated_days(*period, late_evening, None) == (15, 30)


def test_parts_of_a_period_add_up_to_the_whole() -> None:
    amount = D("99.99")
    cuts = [date(2025, 1, 1), date(2025, 1, 8), date(2025, 1, 19), date(2025, 2, 1)]
    days = [prorated_days(*JAN, start, end)[0] for start, end in pairwise(cuts)]
    assert days == [7, 11, 13]  # 7 + 11 + 13 = 31
    parts = [prorate(amount, *JAN, start, end) for start, end in pairwise(cuts)]
    # each part is exact to 20 places, so the sum is within 3 × 0.5e-20 of the whole
    assert abs(sum(parts, D(0)) - amount) <= D("1.5e-20")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ((date(2025, 4, 1), date(2025, 4, 1), date(2025, 4, 1), None), "period_end"),
        ((date(2025, 4, 2), date(2025, 4, 1), date(2025, 4, 1), None), "period_end"),
        ((*APRIL, date(2025, 4, 10), date(2025, 4, 9)), "active_end"),
        ((*APRIL, datetime(2025, 4, 10), None), "active_start"),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_invalid_ranges_name_the_field(arguments: tuple[date, ...], field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        prorate(D(30), *arguments)
    assert [v.field for v in error.value.violations] == [field]
