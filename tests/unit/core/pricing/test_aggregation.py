"""Each aggregation's step on a period's quantity Q, at both sides of its boundary.

The table rows say: Q before, the event's value (and mark), the entries already known, and
the Q after by hand. Times are hours after 2026-12-01T00:00Z; the period ends at hour 720.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.core.pricing.aggregation import (
    Aggregation,
    TimeUnit,
    aggregate,
    distinct_key,
    reading_key,
    reading_time,
)
from rating_service.core.pricing.window import Window

D = Decimal
START = datetime(2026, 12, 1, tzinfo=UTC)
END = START + timedelta(hours=720)
PERIOD = (START, END)


def hour(h: float) -> str:
    """The reading key of hour `h` of the period."""
    return reading_key(START + timedelta(hours=h))


@pytest.mark.parametrize(
    ("aggregation", "before", "value", "mark", "known", "after"),
    [
        # sum: adds; a correction lowers, at most down to 0
        (Aggregation.SUM, "10", "2.5", None, {}, "12.5"),
        (Aggregation.SUM, "10", "-3", None, {}, "7"),
        (Aggregation.SUM, "10", "-10", None, {}, "0"),  # exactly to 0
        (Aggregation.SUM, "10", "-10.01", None, {}, "0"),  # just past: limited to the total
        # count: +1 whatever the value
        (Aggregation.COUNT, "4", "1", None, {}, "5"),
        # max: below, equal, just above the peak
        (Aggregation.MAX, "8", "7.99", None, {}, "8"),
        (Aggregation.MAX, "8", "8", None, {}, "8"),
        (Aggregation.MAX, "8", "8.01", None, {}, "8.01"),
        (Aggregation.MAX, "0", "0", None, {}, "0"),
        # unique_count: a repeat counts nothing, a new value 1
        (Aggregation.UNIQUE_COUNT, "2", "1", "u1", {"u1": "1", "u2": "1"}, "2"),
        (Aggregation.UNIQUE_COUNT, "2", "1", "u3", {"u1": "1", "u2": "1"}, "3"),
        # latest: a reading at or after the latest replaces it; an older one changes nothing
        (Aggregation.LATEST, "50", "40", hour(10), {hour(9): "50"}, "40"),
        (Aggregation.LATEST, "50", "40", hour(9), {hour(9): "50"}, "40"),  # same time: last wins
        (Aggregation.LATEST, "50", "40", hour(8.999), {hour(9): "50"}, "50"),  # late
        # time-weighted sum (hours): value × hours until the next reading or the period's end
        (Aggregation.TIME_WEIGHTED_SUM, "0", "2", hour(0), {}, "1440"),  # 2 × 720
        (Aggregation.TIME_WEIGHTED_SUM, "1440", "0", hour(10), {hour(0): "2"}, "20"),  # 2 × 10
        # 1 GPU from hour 5; 3 from hour 2 (late, before it): +3 × (5 − 2) = 9
        (Aggregation.TIME_WEIGHTED_SUM, "715", "3", hour(2), {hour(5): "1"}, "724"),
        # same time as a reading: replaces its value, 1 → 4 over 715 h: +3 × 715
        (Aggregation.TIME_WEIGHTED_SUM, "715", "4", hour(5), {hour(5): "1"}, "2860"),
        # a late reading between two: 1 from 0, 0 from 10; 5 at hour 4: +(5 − 1) × 6 = 24
        (Aggregation.TIME_WEIGHTED_SUM, "10", "5", hour(4), {hour(0): "1", hour(10): "0"}, "34"),
        # a reading from before the period (rolled forward) holds from the period's start
        (Aggregation.TIME_WEIGHTED_SUM, "0", "1", hour(-5), {hour(10): "0"}, "10"),
    ],
)
def test_each_aggregation_moves_the_period_quantity_as_computed_by_hand(
    aggregation: Aggregation,
    before: str,
    value: str,
    mark: str | None,
    known: dict[str, str],
    after: str,
) -> None:
    step = aggregate(
        aggregation, D(before), D(value), mark, {k: D(v) for k, v in known.items()}, PERIOD
    )
    assert step.quantity_after == D(after)


def test_a_time_weighted_sum_counts_in_its_unit_to_twelve_places() -> None:
    # 1 GPU for the last second of the period: 1/3600 h = 0.000277777777777… → 12 places
    last_second = reading_key(END - timedelta(seconds=1))
    hours = aggregate(Aggregation.TIME_WEIGHTED_SUM, D(0), D(1), last_second, {}, PERIOD)
    assert hours.quantity_after == D("0.000277777778")
    seconds = aggregate(
        Aggregation.TIME_WEIGHTED_SUM, D(0), D(1), last_second, {}, PERIOD, TimeUnit.SECOND
    )
    assert seconds.quantity_after == D(1)


def test_what_each_step_remembers_and_says() -> None:
    repeat = aggregate(Aggregation.UNIQUE_COUNT, D(1), D(1), "u1", {"u1": D(1)}, PERIOD)
    assert (repeat.entries, repeat.note) == ((), "value already counted this period")
    new = aggregate(Aggregation.UNIQUE_COUNT, D(1), D(1), "u2", {"u1": D(1)}, PERIOD)
    assert new.entries == (("u2", D(1)),)
    late = aggregate(Aggregation.LATEST, D(5), D(9), hour(1), {hour(2): D(5)}, PERIOD)
    assert late.entries == () and "older than the reading at" in late.note
    assert aggregate(Aggregation.SUM, D(1), D(-2), None, {}, PERIOD).note == (
        "correction of -2 limited to the period's total 1"
    )


def test_keys_order_as_time_and_long_values_are_digested() -> None:
    assert hour(1) < hour(1.5) < hour(10) < hour(100)
    assert reading_time(hour(1.5)) == START + timedelta(hours=1.5)
    assert distinct_key("u" * 200) == "u" * 200
    assert distinct_key("u" * 201).startswith("sha256:") and len(distinct_key("u" * 201)) == 71


@pytest.mark.parametrize(
    ("window", "at", "label"),
    [
        (Window.DAY, START - timedelta(microseconds=1), "2026-11-30"),
        (Window.DAY, START, "2026-12-01"),
        (Window.HOUR, START + timedelta(minutes=59, seconds=59), "2026-12-01T00:00Z"),
        (Window.HOUR, START + timedelta(hours=1), "2026-12-01T01:00Z"),
    ],
)
def test_windows_are_utc_hours_and_days(window: Window, at: datetime, label: str) -> None:
    assert window.label(at) == label


@pytest.mark.parametrize(
    ("aggregation", "before", "quoted", "after"),
    [
        (Aggregation.SUM, "3", "2", "5"),
        (Aggregation.SUM, "3", "-4", "0"),
        (Aggregation.MAX, "3", "2", "3"),
        (Aggregation.MAX, "3", "4", "4"),
        (Aggregation.LATEST, "3", "2", "2"),
        (Aggregation.UNIQUE_COUNT, "3", "2", "5"),
        (Aggregation.TIME_WEIGHTED_SUM, "3", "2", "5"),
    ],
)
def test_a_quote_line_is_an_aggregated_quantity(
    aggregation: Aggregation, before: str, quoted: str, after: str
) -> None:
    assert aggregation.combine(D(before), D(quoted)) == D(after)
