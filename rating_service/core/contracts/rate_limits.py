"""Rate limits on a contract: requests or units per second, minute or hour, as token buckets.

A limit is declared on the contract (and changed by amendments like any term): on the whole
contract, or on one product or a product tag; counting requests (each event it covers) or
units (the event's quantity of the products it covers); `limit` per `per`, with a bucket of
`burst` (default: `limit`) so a quiet caller may spend a burst at once. An event passes when
every limit covering it has the tokens; then it takes them from each, all or none.

Buckets hold whole micro-tokens (int), so refills and takes are exact integer arithmetic:
the bucket refills at `limit` per `per`, continuously, up to `burst`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from rating_service.core.dict_form import DictReader
from rating_service.core.errors import (
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
    ViolationCollector,
)
from rating_service.core.money import format_decimal

RATE_LIMITED = "RATE_LIMITED"
"""ResourceExhausted reason: a rate limit of the contract has no tokens left for the event."""

MICRO = 1_000_000
"""Micro-tokens per token: buckets count in whole micro-tokens."""


class LimitUnit(StrEnum):
    """What a limit counts."""

    REQUESTS = "requests"
    UNITS = "units"


class LimitWindow(StrEnum):
    """The time a limit's amount is for."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"

    @property
    def length(self) -> timedelta:
        """The window as a duration."""
        return {"second": timedelta(seconds=1), "minute": timedelta(minutes=1)}.get(
            self.value, timedelta(hours=1)
        )


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` requests or units per `per`, bursting to `burst`, on a scope.

    The scope is the whole contract, or the product `product_key`, or the products tagged
    `tag` (at most one of the two).
    """

    limit_id: str
    limit: Decimal
    per: LimitWindow = LimitWindow.SECOND
    unit: LimitUnit = LimitUnit.REQUESTS
    burst: Decimal | None = None
    product_key: str | None = None
    tag: str | None = None
    capacity: int = field(init=False, repr=False, compare=False)
    """The bucket's size in micro-tokens."""
    refill: int = field(init=False, repr=False, compare=False)
    """Micro-tokens added per window."""
    window_ns: int = field(init=False, repr=False, compare=False)
    """The window in nanoseconds."""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.limit_id, str) or not self.limit_id.strip():
            violations.add("limit_id", "must be a non-empty string")
        for name in ("limit", "burst"):
            value = getattr(self, name)
            if value is None and name == "burst":
                continue
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                violations.add(name, f"must be a finite Decimal > 0, got {value!r}")
            elif value * MICRO < 1:
                violations.add(name, "must be at least 0.000001")
        if not isinstance(self.per, LimitWindow):
            violations.add("per", f"must be one of {', '.join(LimitWindow)}")
        if not isinstance(self.unit, LimitUnit):
            violations.add("unit", f"must be one of {', '.join(LimitUnit)}")
        if self.product_key is not None and self.tag is not None:
            violations.add("product_key", "name at most one of product_key or tag")
        violations.raise_if_any("invalid rate limit")
        # Integers, worked out once: the hot path refills and takes in integer arithmetic.
        bucket = self.burst if self.burst is not None else self.limit
        object.__setattr__(self, "capacity", _micro(bucket, ROUND_FLOOR))
        object.__setattr__(self, "refill", _micro(self.limit, ROUND_FLOOR))
        object.__setattr__(self, "window_ns", self.per.length // timedelta(microseconds=1) * 1000)

    def covers(self, product_key: str, tags: frozenset[str]) -> bool:
        """True when the limit's scope holds this product."""
        if self.product_key is not None:
            return product_key == self.product_key
        if self.tag is not None:
            return self.tag in tags
        return True

    def cost(self, quantities: Mapping[str, tuple[Decimal, frozenset[str]]]) -> int:
        """Micro-tokens an event takes: 1 request, or its units of the covered products.

        `quantities` maps each product the event counts for to (quantity, product tags).
        0 when the limit covers none of them.
        """
        covered = [q for key, (q, tags) in quantities.items() if self.covers(key, tags)]
        if not covered:
            return 0
        if self.unit is LimitUnit.REQUESTS:
            return MICRO
        return _micro(sum(covered, Decimal(0)), ROUND_CEILING)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket's state: micro-tokens held, as of a monotonic time in nanoseconds."""

    tokens: int
    at_ns: int


def refilled(limit: RateLimit, bucket: Bucket | None, now_ns: int) -> Bucket:
    """The bucket at `now_ns`: full when new, else refilled for the time passed, to capacity."""
    if bucket is None:
        return Bucket(limit.capacity, now_ns)
    if bucket.tokens >= limit.capacity:
        return Bucket(limit.capacity, now_ns)
    elapsed = max(now_ns - bucket.at_ns, 0)
    # Integer division floors, never over-refills; the remainder's time is kept for later.
    added = elapsed * limit.refill // limit.window_ns
    if not added:
        return bucket
    if bucket.tokens + added >= limit.capacity:
        return Bucket(limit.capacity, now_ns)
    used_ns = -(-added * limit.window_ns // limit.refill)
    return Bucket(bucket.tokens + added, bucket.at_ns + used_ns)


def wait_for(limit: RateLimit, bucket: Bucket, cost: int) -> timedelta:
    """How long until the bucket holds `cost` micro-tokens (forever-ish when it never can)."""
    missing = cost - bucket.tokens
    if missing <= 0:
        return timedelta(0)
    nanoseconds = -(-missing * limit.window_ns // limit.refill)
    return timedelta(milliseconds=-(-nanoseconds // 1_000_000))


def rate_limited(
    holder: str, refused: list[tuple[str, RateLimit, timedelta]], metadata: Mapping[str, str]
) -> ResourceExhausted:
    """The refusal of an event over limits of `holder` (a contract, an API key).

    `refused` holds each limit without the tokens: its subject (where it is declared), the
    limit, and how long until it would hold them; the refusal asks to wait the longest.
    """
    retry_after = max(wait for *_, wait in refused)
    return ResourceExhausted(
        f"{holder} is over its rate limit ({', '.join(limit.limit_id for _, limit, _ in refused)});"
        f" retry in {retry_after.total_seconds():.3f} s",
        reason=RATE_LIMITED,
        metadata=metadata,
        quota_violations=[
            QuotaViolation(
                subject,
                f"at most {format_decimal(limit.limit)} {limit.unit} per {limit.per}"
                f" (burst {format_decimal(limit.burst or limit.limit)})",
            )
            for subject, limit, _ in refused
        ],
        retry_after=retry_after,
    )


def _micro(amount: Decimal, rounding: str) -> int:
    return int((amount * MICRO).to_integral_value(rounding))


def rate_limit_from_dict(data: Mapping[str, object], field_path: str = "") -> RateLimit:
    """Build a rate limit from `{limit_id, limit, per?, unit?, burst?, product_key? | tag?}`."""
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "a rate limit")
    limit_id = fields.text("limit_id")
    limit = fields.decimal("limit")
    per = fields.choice("per", LimitWindow, LimitWindow.SECOND)
    unit = fields.choice("unit", LimitUnit, LimitUnit.REQUESTS)
    burst = fields.optional_decimal("burst")
    product_key = fields.optional_text("product_key")
    tag = fields.optional_text("tag")
    fields.reject_unknown()
    violations.raise_if_any("invalid rate limit")
    assert limit is not None and per is not None and unit is not None
    try:
        return RateLimit(limit_id, limit, per, unit, burst, product_key, tag)
    except InvalidArgument as error:
        for violation in error.violations:
            violations.add(fields.at(violation.field), violation.description)
        violations.raise_if_any("invalid rate limit")
        raise


def rate_limit_to_dict(limit: RateLimit) -> dict[str, object]:
    """The plain-dict form of a rate limit; `rate_limit_from_dict` reads it back."""
    data: dict[str, object] = {
        "limit_id": limit.limit_id,
        "limit": format_decimal(limit.limit),
        "per": str(limit.per),
        "unit": str(limit.unit),
    }
    if limit.burst is not None:
        data["burst"] = format_decimal(limit.burst)
    if limit.product_key is not None:
        data["product_key"] = limit.product_key
    if limit.tag is not None:
        data["tag"] = limit.tag
    return data
