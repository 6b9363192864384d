"""How a meter turns a period's events into the quantity its price is applied to.

Rating stays incremental: each event moves the period's aggregated quantity from Q to Q′ and is
charged P(Q′) − P(Q). What an aggregation must remember besides Q (distinct values seen,
readings by time) are its *entries*, kept beside the usage counter in the same transaction.

| aggregation | Q of the period | entries |
|---|---|---|
| `sum` | Σ values (a correction, a negative value, lowers it, never below 0) | none |
| `count` | number of events | none |
| `max` | the largest value | none |
| `unique_count` | number of distinct values of a property | one per distinct value |
| `latest` | the value with the latest timestamp (a late one changes nothing) | one per reading |
| `time_weighted_sum` | ∫ value dt to the period's end, in `time_unit`s | one per reading |

A time-weighted reading is charged forward: the value is taken to hold until the next reading
by time, or the period's end, so the period's charges always add up to the integral. A reading
that arrives late (older than readings already seen) changes only its own stretch, up to the
next reading by time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum
from hashlib import sha256

from rating_service.core.money import EXACT_CONTEXT, ROUNDING_CONTEXT

ZERO = Decimal(0)
ONE = Decimal(1)

AREA_PLACES = Decimal("1e-12")
"""A time-weighted area (value × time / unit) is kept to 12 decimal places of the unit."""

MAX_ENTRY_KEY = 200
"""Longer distinct values are remembered by their SHA-256 (an index key must stay small)."""

_MICROSECOND = timedelta(microseconds=1)


class Aggregation(StrEnum):
    """How a meter aggregates a period's events into one quantity."""

    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"
    TIME_WEIGHTED_SUM = "time_weighted_sum"

    @property
    def keeps_entries(self) -> bool:
        """Whether rating needs remembered entries besides the period's quantity."""
        return self in _WITH_ENTRIES

    @property
    def reads_time(self) -> bool:
        """Whether an event's timestamp orders its reading (gauges)."""
        return self in (Aggregation.LATEST, Aggregation.TIME_WEIGHTED_SUM)

    def combine(self, before: Decimal, quantity: Decimal) -> Decimal:
        """Q after adding an already aggregated quantity (a Quote line) to Q = `before`."""
        if self is Aggregation.MAX:
            return max(before, quantity)
        if self is Aggregation.LATEST:
            return quantity
        with localcontext(EXACT_CONTEXT):
            return max(before + quantity, ZERO)


_WITH_ENTRIES = frozenset(
    {Aggregation.UNIQUE_COUNT, Aggregation.LATEST, Aggregation.TIME_WEIGHTED_SUM}
)


class TimeUnit(StrEnum):
    """The time a time-weighted sum is counted in (value × hours = e.g. GPU-hours)."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> Decimal:
        """Seconds in one unit."""
        return _SECONDS[self]


_SECONDS = {
    TimeUnit.SECOND: Decimal(1),
    TimeUnit.MINUTE: Decimal(60),
    TimeUnit.HOUR: Decimal(3600),
    TimeUnit.DAY: Decimal(86400),
}


def reading_key(at: datetime) -> str:
    """The entry key of a reading at `at`: fixed-width UTC text, so text order is time order."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reading_time(key: str) -> datetime:
    """The time a reading key stands for."""
    return datetime.fromisoformat(key)  # reads the trailing Z as UTC (strptime is 5× slower)


def distinct_key(value: str) -> str:
    """The entry key of a distinct value: the value itself, or its digest when it is long."""
    if len(value) <= MAX_ENTRY_KEY:
        return value
    return "sha256:" + sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MeterStep:
    """What one event does to a period's aggregated quantity, and why."""

    quantity_after: Decimal
    entries: tuple[tuple[str, Decimal], ...] = ()
    """Entries to remember (new, or replacing one with the same key)."""
    note: str = ""
    """Why the quantity moved as it did, when it is not plain (a repeat, a late reading, …)."""


def aggregate(
    aggregation: Aggregation,
    before: Decimal,
    value: Decimal,
    mark: str | None,
    known: Mapping[str, Decimal],
    period: tuple[datetime, datetime],
    time_unit: TimeUnit = TimeUnit.HOUR,
) -> MeterStep:
    """Q after one event of `value`, given Q = `before` and the known entries of its counter.

    `mark` is the event's entry key (`distinct_key` or `reading_key`); `known` holds every entry
    the store found around it (at least the entries just before and just after the mark).
    A reading from before the period (a late one rolled forward) holds from its start.
    """
    with localcontext(EXACT_CONTEXT):
        if aggregation is Aggregation.SUM:
            if before + value >= 0:
                return MeterStep(before + value)
            return MeterStep(
                ZERO, note=f"correction of {value} limited to the period's total {before}"
            )
        if aggregation is Aggregation.COUNT:
            return MeterStep(before + ONE)
        if aggregation is Aggregation.MAX:
            if value > before:
                return MeterStep(value, note=f"new maximum (was {before})")
            return MeterStep(before, note=f"not above the period's maximum {before}")
        assert mark is not None, "entry aggregations need the event's mark"
        if aggregation is Aggregation.UNIQUE_COUNT:
            if mark in known:
                return MeterStep(before, note="value already counted this period")
            return MeterStep(before + ONE, ((mark, ONE),), note="new distinct value")
        later = [key for key in known if key > mark]
        if aggregation is Aggregation.LATEST:
            if later:
                return MeterStep(
                    before,
                    note=f"older than the reading at {min(later)}: the latest value stands",
                )
            return MeterStep(value, ((mark, value),))
        return _time_weighted(before, value, mark, known, later, period, time_unit)


def _time_weighted(
    before: Decimal,
    value: Decimal,
    mark: str,
    known: Mapping[str, Decimal],
    later: list[str],
    period: tuple[datetime, datetime],
    time_unit: TimeUnit,
) -> MeterStep:
    earlier = [key for key in known if key <= mark]
    in_force = known[max(earlier)] if earlier else ZERO
    until = reading_time(min(later)) if later else period[1]
    since = max(reading_time(mark), period[0])
    seconds = Decimal(max(until - since, timedelta(0)) // _MICROSECOND) / Decimal(1_000_000)
    with localcontext(ROUNDING_CONTEXT):
        area = ((value - in_force) * seconds / time_unit.seconds).quantize(AREA_PLACES)
    with localcontext(EXACT_CONTEXT):
        after = max(before + area, ZERO)
    holds = f"until the reading at {min(later)}" if later else "until the period ends"
    return MeterStep(after, ((mark, value),), note=f"{value} (was {in_force}) {holds}")
