"""Daily proration of a recurring fee for the part of a billing period a contract was active.

Days are whole UTC calendar days. Every moment is reduced to the UTC date it falls on, and
ranges are half-open: the day a change happens belongs to the range that starts on it. So a
plan changed at 10:00 on the 5th bills the old plan up to the 4th and the new plan from the
5th, and the parts of a period always add up to the whole period.

The active fraction (active days / period days) often does not terminate (1/3, 10/31): the
prorated amount is then kept to PRORATION_PLACES decimal places, rounded half up, far beyond
the 12 places billing needs. It is not rounded to the currency's minor unit here; that happens
once per invoice line.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, Inexact, localcontext

from rating_service.core.errors import InvalidArgument
from rating_service.core.money import EXACT_CONTEXT, ROUNDING_CONTEXT

PRORATION_PLACES = 20
"""Decimal places kept when a prorated amount does not terminate."""

_QUANTUM = Decimal(1).scaleb(-PRORATION_PLACES)


def prorated_days(
    period_start: date,
    period_end: date,
    active_start: date,
    active_end: date | None = None,
) -> tuple[int, int]:
    """(active days within the period, days in the period); `active_end` None = still active."""
    first = _utc_day(period_start, "period_start")
    end = _utc_day(period_end, "period_end")
    if end <= first:
        raise InvalidArgument.of_field(
            "period_end", "must be at least one UTC day after period_start"
        )
    active_first = _utc_day(active_start, "active_start")
    active_stop = end if active_end is None else _utc_day(active_end, "active_end")
    if active_stop < active_first:
        raise InvalidArgument.of_field("active_end", "must not be before active_start")
    overlap = (min(end, active_stop) - max(first, active_first)).days
    return max(overlap, 0), (end - first).days


def prorate(
    amount: Decimal,
    period_start: date,
    period_end: date,
    active_start: date,
    active_end: date | None = None,
) -> Decimal:
    """The part of a per-period amount for the UTC days the contract was active in the period.

    Ranges are half-open ([start, end)); datetimes must be timezone-aware and dates are read
    as UTC dates. Exact when the fraction terminates, else kept to PRORATION_PLACES places.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidArgument.of_field("amount", f"must be a finite Decimal, got {amount!r}")
    active, total = prorated_days(period_start, period_end, active_start, active_end)
    return share_of(amount, active, total)


def share_of(amount: Decimal, part: int, whole: int) -> Decimal:
    """amount × part / whole: exact when it terminates, else kept to PRORATION_PLACES places."""
    if part == whole:
        return amount
    if part == 0:
        return Decimal(0)
    with localcontext(EXACT_CONTEXT):
        scaled = amount * part
    with localcontext(ROUNDING_CONTEXT) as context:
        context.clear_flags()  # the copied context may carry a flag from an earlier rounding
        share = scaled / whole
        # A terminating fraction stays exact; only a non-terminating one is cut to the quantum.
        if context.flags[Inexact]:
            share = share.quantize(_QUANTUM)
    return share


def _utc_day(moment: date, field: str) -> date:
    if isinstance(moment, datetime):
        if moment.utcoffset() is None:
            raise InvalidArgument.of_field(field, "must be timezone-aware (UTC)")
        return moment.astimezone(UTC).date()
    if isinstance(moment, date):
        return moment
    raise InvalidArgument.of_field(
        field, f"must be a date or datetime, got {type(moment).__name__}"
    )
