"""Usage prices prorated to the part of a billing period a contract is active.

A price marked `prorated` gives a contract active for part of a period (it starts or ends
mid-period) that share of everything the price counts per period: tier bounds, free units,
free amount, and minimum and maximum spend, so a contract starting on the 21st of a 30-day
month gets a third of each tier. Unit prices, block sizes and flat fees are not prorated.

The share is by whole UTC days, as for flat fees (`rating_service.core.pricing.proration`),
or by the microsecond for periods shorter than a day; a share that does not terminate is kept
to PRORATION_PLACES decimal places.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from rating_service.core.pricing.proration import prorated_days, share_of

_ONE_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)


def active_share(
    nominal: tuple[datetime, datetime], active: tuple[datetime, datetime]
) -> tuple[int, int]:
    """(active part, whole) of a billing period, in UTC days or, under a day, microseconds."""
    if nominal[1] - nominal[0] >= _ONE_DAY:
        return prorated_days(nominal[0], nominal[1], active[0], active[1])
    start, end = max(nominal[0], active[0]), min(nominal[1], active[1])
    return max((end - start) // _MICROSECOND, 0), (nominal[1] - nominal[0]) // _MICROSECOND


def prorated_quantity(value: Decimal, part: int, whole: int) -> Decimal:
    """A per-period quantity or amount cut to the active share of the period."""
    return share_of(value, part, whole)
