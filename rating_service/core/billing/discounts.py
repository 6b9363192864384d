"""Coupons and the discounts they make on a contract's invoices: terms, windows and the math.

A **coupon** is a tenant's definition: percent off or an amount off (in one currency), for
one billing period (`once`), N periods (`repeating`) or `forever`, on some products (by key
or by tag) or on everything, redeemable until `redeem_by` and at most `max_redemptions` times.

Applying a coupon to a contract makes a **discount**: a copy of the coupon's terms (a coupon
changed or archived later does not change discounts already made), and a window of billing
periods. The window starts at the start of the billing period in force when the coupon is
applied (that period is discounted in full, as Stripe does for a coupon applied mid-cycle),
and lasts the coupon's duration counted in the contract's billing periods. Removing a
discount closes its window at the start of the period in force then: invoices already made
keep their line, the open period and later ones are not discounted.

On an invoice, each discount is its own negative line (`LineKind.COUPON`, key
`coupon:<discount_id>`), after every other line of the periods it covers. The order:

1. the in-scope lines are the usage, fee, minimum-spend and maximum-spend lines of products in
   the coupon's scope whose service starts inside the discount's window (an advance fee for the
   period after the window is not discounted);
2. their base is the sum of their rounded amounts, less what credit pools and commits paid of
   those products' usage (the period's draws per product), less what a trial waived, less the
   discounts applied before this one on the same products (discounts stack in the order they
   were applied, each on what the earlier ones left);
3. percent off is that base × percent / 100; amount off is the coupon's amount, at most the
   base; the amount is rounded once, half up, to the currency's minor unit;
4. a discount never takes the invoice below zero: the line is at most the invoice's total so far.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Any

from rating_service.core.billing.invoice import InvoiceLine, LineKind, rounded_line
from rating_service.core.dict_form import DictReader, utc_timestamp
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.money import (
    EXACT_CONTEXT,
    Currency,
    currency_of,
    exact_sum,
    format_decimal,
    round_to_minor_unit,
)
from rating_service.core.pricing.catalog import Catalog
from rating_service.core.pricing.constraints import under_prefix

ZERO = Decimal(0)
HUNDRED = Decimal(100)

MAX_COUPON_ID_LENGTH = 100
MAX_DURATION_PERIODS = 1200
"""A hundred years of monthly periods: longer is `forever`."""

COUPON_EXPIRED = "COUPON_EXPIRED"
"""FailedPrecondition reason: the coupon's redeem-by moment has passed."""
COUPON_EXHAUSTED = "COUPON_EXHAUSTED"
"""FailedPrecondition reason: the coupon was redeemed its maximum number of times."""
COUPON_ARCHIVED = "COUPON_ARCHIVED"
"""FailedPrecondition reason: the coupon is archived: it makes no new discounts."""
COUPON_CURRENCY_MISMATCH = "COUPON_CURRENCY_MISMATCH"
"""FailedPrecondition reason: an amount-off coupon in another currency than the contract's."""

DISCOUNTED_KINDS = frozenset(
    {LineKind.USAGE, LineKind.FEE, LineKind.MINIMUM_SPEND, LineKind.DISCOUNT}
)
"""The lines a coupon may discount (a DISCOUNT line is a maximum-spend cap, taken off its
usage)."""


class CouponDuration(StrEnum):
    """How many billing periods a discount lasts."""

    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


@dataclass(frozen=True, slots=True)
class Coupon:
    """A tenant's coupon: what it takes off, on what, for how long, and who may still redeem it.

    Exactly one of `percent_off` (0 < p ≤ 100) and `amount_off` (> 0, with `currency`) is set.
    `duration_periods` is set for (and only for) `repeating`. Empty `product_keys` and
    `product_tags` mean every product; otherwise a product is in scope by key or by any tag.
    """

    coupon_id: str
    name: str
    duration: CouponDuration
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    currency: Currency | None = None
    duration_periods: int | None = None
    product_keys: frozenset[str] = frozenset()
    product_tags: frozenset[str] = frozenset()
    max_redemptions: int | None = None
    redeem_by: datetime | None = None

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.coupon_id, str) or not _is_id(self.coupon_id):
            violations.add(
                "coupon_id",
                f"must be 1 to {MAX_COUPON_ID_LENGTH} letters, digits, '-', '_' or '.'",
            )
        if not isinstance(self.name, str) or len(self.name) > 200:
            violations.add("name", "must be a string of at most 200 characters")
        if (self.percent_off is None) == (self.amount_off is None):
            violations.add("percent_off", "give exactly one of percent_off and amount_off")
        if self.percent_off is not None and not (
            isinstance(self.percent_off, Decimal)
            and self.percent_off.is_finite()
            and ZERO < self.percent_off <= HUNDRED
        ):
            violations.add("percent_off", "must be a decimal more than 0 and at most 100")
        if self.amount_off is not None:
            if not (
                isinstance(self.amount_off, Decimal)
                and self.amount_off.is_finite()
                and self.amount_off > 0
            ):
                violations.add("amount_off", "must be a decimal more than 0")
            if not isinstance(self.currency, Currency):
                violations.add("currency", "is required with amount_off (an ISO 4217 code)")
            elif (
                isinstance(self.amount_off, Decimal)
                and self.amount_off.is_finite()
                and round_to_minor_unit(self.amount_off, self.currency) != self.amount_off
            ):
                violations.add(
                    "amount_off", f"must be in whole minor units of {self.currency.code}"
                )
        elif self.currency is not None:
            violations.add("currency", "is only for amount_off")
        if not isinstance(self.duration, CouponDuration):
            violations.add("duration", f"must be one of {', '.join(CouponDuration)}")
        elif self.duration is CouponDuration.REPEATING:
            periods = self.duration_periods
            if isinstance(periods, bool) or not isinstance(periods, int):
                violations.add("duration_periods", "is required for a repeating coupon")
            elif not 1 <= periods <= MAX_DURATION_PERIODS:
                violations.add("duration_periods", f"must be 1 to {MAX_DURATION_PERIODS}")
        elif self.duration_periods is not None:
            violations.add("duration_periods", "is only for a repeating coupon")
        for name in ("product_keys", "product_tags"):
            values = getattr(self, name)
            if not isinstance(values, frozenset) or not all(
                isinstance(v, str) and v.strip() for v in values
            ):
                violations.add(name, "must be non-empty strings")
        limit = self.max_redemptions
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            violations.add("max_redemptions", "must be an integer")
        elif limit is not None and limit < 1:
            violations.add("max_redemptions", "must be at least 1 (unset: no limit)")
        redeem_by = self.redeem_by
        if redeem_by is not None:
            redeem_by = utc_timestamp(redeem_by, "redeem_by", violations)
        violations.raise_if_any("invalid coupon")
        object.__setattr__(self, "redeem_by", redeem_by)

    @property
    def periods(self) -> int | None:
        """Billing periods a discount of it lasts; None: forever."""
        if self.duration is CouponDuration.ONCE:
            return 1
        return self.duration_periods

    def covers_product(self, key: str, tags: frozenset[str]) -> bool:
        """Whether a product (its key and tags) is in the coupon's scope."""
        if not self.product_keys and not self.product_tags:
            return True
        return key in self.product_keys or bool(tags & self.product_tags)


def _is_id(text: str) -> bool:
    return 0 < len(text) <= MAX_COUPON_ID_LENGTH and all(
        c.isascii() and (c.isalnum() or c in "-_.") for c in text
    )


@dataclass(frozen=True, slots=True)
class Discount:
    """A coupon applied to a contract: the coupon's terms as applied, and the periods it covers.

    It covers every line whose service starts in [starts_at, ends_before); `ends_before` None
    is forever. `removed_at` is when it was removed (its window then ends at that period).
    """

    discount_id: str
    contract_id: str
    coupon: Coupon
    applied_at: datetime
    starts_at: datetime
    ends_before: datetime | None
    removed_at: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        """Whether a line whose service starts at `moment` is in the discount's window."""
        return self.starts_at <= moment and (self.ends_before is None or moment < self.ends_before)


def check_redeemable(
    coupon: Coupon,
    *,
    archived: bool,
    redemptions: int,
    invoice_currency: Currency,
    at: datetime,
) -> None:
    """Refuse to apply a coupon that is archived, past redeem-by, used up, or in another currency.

    FailedPrecondition with reason COUPON_ARCHIVED, COUPON_EXPIRED, COUPON_EXHAUSTED or
    COUPON_CURRENCY_MISMATCH.
    """
    subject = f"coupons/{coupon.coupon_id}"
    if archived:
        reason, kind, description = COUPON_ARCHIVED, "COUPON_STATE", "the coupon is archived"
    elif coupon.redeem_by is not None and at >= coupon.redeem_by:
        reason, kind = COUPON_EXPIRED, "COUPON_REDEEM_BY"
        description = f"the coupon could be redeemed until {coupon.redeem_by.isoformat()}"
    elif coupon.max_redemptions is not None and redemptions >= coupon.max_redemptions:
        reason, kind = COUPON_EXHAUSTED, "COUPON_REDEMPTIONS"
        description = f"the coupon was redeemed its maximum {coupon.max_redemptions} times"
    elif coupon.currency is not None and coupon.currency != invoice_currency:
        reason, kind = COUPON_CURRENCY_MISMATCH, "COUPON_CURRENCY"
        description = (
            f"the coupon takes {coupon.currency.code} off; the contract invoices in"
            f" {invoice_currency.code}"
        )
    else:
        return
    raise FailedPrecondition(
        f"coupon {coupon.coupon_id!r} cannot be applied: {description}",
        reason=reason,
        violations=[PreconditionViolation(kind, subject, description)],
        metadata={"coupon_id": coupon.coupon_id},
    )


def discount_window(
    coupon: Coupon,
    period_in_force: tuple[datetime, datetime],
    next_period: Callable[[datetime], datetime],
) -> tuple[datetime, datetime | None]:
    """Where a discount of `coupon` applied during `period_in_force` starts and ends.

    `next_period(start)` is the start of the billing period after the one starting at `start`
    (the contract's period arithmetic), so the window is counted in the contract's periods.
    """
    start, end = period_in_force
    periods = coupon.periods
    if periods is None:
        return start, None
    for _ in range(periods - 1):
        end = next_period(end)
    return start, end


def discount_lines(
    discounts: Sequence[Discount],
    lines: Sequence[InvoiceLine],
    *,
    catalog: Catalog,
    currency: Currency,
    drawn_by_product: Mapping[str, Decimal],
    drawn_period: datetime | None,
    waived_by_product: Mapping[str, Decimal] | None = None,
    service: tuple[datetime, datetime],
) -> list[InvoiceLine]:
    """Each discount's negative line on an invoice of `lines` (see the module's order).

    `drawn_by_product` is what credit pools and commits paid of each product's usage in the
    invoice's closed period (starting at `drawn_period`); `waived_by_product` what a trial
    took off each product.
    """
    discounted = [line for line in lines if line.kind in DISCOUNTED_KINDS and line.product_key]
    waived = waived_by_product or {}
    running_total = exact_sum(line.amount for line in lines)
    taken: dict[str, Decimal] = {}
    made: list[InvoiceLine] = []
    for discount in sorted(discounts, key=lambda d: (d.applied_at, d.discount_id)):
        coupon = discount.coupon
        remaining: dict[str, Decimal] = {}
        for line in discounted:
            if not discount.covers(line.service_start):
                continue
            product = catalog.products.get(line.product_key)
            tags = product.tags if product is not None else frozenset()
            if coupon.covers_product(line.product_key, frozenset(tags)):
                with localcontext(EXACT_CONTEXT):
                    remaining[line.product_key] = (
                        remaining.get(line.product_key, ZERO) + line.amount
                    )
        paid_by_pools = drawn_period is not None and discount.covers(drawn_period)
        with localcontext(EXACT_CONTEXT):
            for key in remaining:
                if paid_by_pools:
                    remaining[key] -= drawn_by_product.get(key, ZERO)
                remaining[key] -= waived.get(key, ZERO) + taken.get(key, ZERO)
            base = exact_sum(max(amount, ZERO) for amount in remaining.values())
            if base <= 0:
                continue
            if coupon.percent_off is not None:
                exact = base * coupon.percent_off / HUNDRED
            else:
                assert coupon.amount_off is not None
                exact = min(coupon.amount_off, base)
            amount = min(round_to_minor_unit(exact, currency), max(running_total, ZERO))
        if amount <= 0:
            continue
        _take(remaining, taken, exact)
        with localcontext(EXACT_CONTEXT):
            running_total -= amount
        made.append(
            rounded_line(
                currency,
                LineKind.COUPON,
                f"coupon:{discount.discount_id}",
                f"Discount: {coupon.name or coupon.coupon_id} ({describe_coupon(coupon)})",
                service,
                -amount,
                quantity=None,
            )
        )
    return made


def _take(remaining: dict[str, Decimal], taken: dict[str, Decimal], amount: Decimal) -> None:
    """Record `amount` as taken off the products, in key order, so later discounts see less."""
    with localcontext(EXACT_CONTEXT):
        for key in sorted(remaining):
            if amount <= 0:
                return
            part = min(max(remaining[key], ZERO), amount)
            taken[key] = taken.get(key, ZERO) + part
            amount -= part


def describe_coupon(coupon: Coupon) -> str:
    """What a coupon takes off, as an invoice line says it: "20% off", "10.00 USD off"."""
    if coupon.percent_off is not None:
        return f"{format_decimal(coupon.percent_off)}% off"
    assert coupon.amount_off is not None and coupon.currency is not None
    return f"{format_decimal(coupon.amount_off)} {coupon.currency.code} off"


def coupon_from_dict(data: Mapping[str, object], field_path: str = "") -> Coupon:
    """A coupon from its dict form (the CreateCoupon request's `coupon`), every bad field named."""
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "a coupon")
    coupon_id = fields.text("coupon_id")
    name = fields.optional_text("name") or ""
    percent_off = fields.optional_decimal("percent_off")
    amount_off = fields.optional_decimal("amount_off")
    code = fields.optional_text("currency")
    currency = None
    if code:
        try:
            currency = currency_of(code, fields.at("currency"))
        except InvalidArgument as error:
            violations.violations.extend(error.violations)
    duration = fields.choice("duration", CouponDuration)
    periods = fields.optional_integer("duration_periods")
    keys = _texts(fields, "product_keys")
    tags = _texts(fields, "product_tags")
    max_redemptions = fields.optional_integer("max_redemptions")
    redeem_by = fields.optional_timestamp("redeem_by")
    fields.reject_unknown()
    violations.raise_if_any("invalid coupon")
    assert duration is not None, "a missing duration is a violation"
    try:
        return Coupon(
            coupon_id,
            name,
            duration,
            percent_off,
            amount_off,
            currency,
            periods or None,
            keys,
            tags,
            max_redemptions or None,
            redeem_by,
        )
    except InvalidArgument as error:
        raise under_prefix(error, field_path) from None


def _texts(fields: DictReader, key: str) -> frozenset[str]:
    found: set[str] = set()
    for index, value in enumerate(fields.sequence(key)):
        if isinstance(value, str) and value.strip():
            found.add(value)
        else:
            fields.violations.add(fields.at(f"{key}[{index}]"), "must be a non-empty string")
    return frozenset(found)


def coupon_to_dict(coupon: Coupon) -> dict[str, object]:
    """The dict form of a coupon; unset terms are left out."""
    data: dict[str, object] = {
        "coupon_id": coupon.coupon_id,
        "name": coupon.name,
        "duration": str(coupon.duration),
    }
    if coupon.percent_off is not None:
        data["percent_off"] = format_decimal(coupon.percent_off)
    if coupon.amount_off is not None and coupon.currency is not None:
        data["amount_off"] = format_decimal(coupon.amount_off)
        data["currency"] = coupon.currency.code
    if coupon.duration_periods is not None:
        data["duration_periods"] = coupon.duration_periods
    if coupon.product_keys:
        data["product_keys"] = sorted(coupon.product_keys)
    if coupon.product_tags:
        data["product_tags"] = sorted(coupon.product_tags)
    if coupon.max_redemptions is not None:
        data["max_redemptions"] = coupon.max_redemptions
    if coupon.redeem_by is not None:
        data["redeem_by"] = coupon.redeem_by.isoformat()
    return data


def discount_to_dict(discount: Discount) -> dict[str, object]:
    """The dict form a discount is stored in; `discount_from_dict` reads it back."""
    return {
        "discount_id": discount.discount_id,
        "contract_id": discount.contract_id,
        "coupon": coupon_to_dict(discount.coupon),
        "applied_at": discount.applied_at.isoformat(),
        "starts_at": discount.starts_at.isoformat(),
        "ends_before": None if discount.ends_before is None else discount.ends_before.isoformat(),
        "removed_at": None if discount.removed_at is None else discount.removed_at.isoformat(),
    }


def discount_from_dict(data: Mapping[str, Any]) -> Discount:
    """A discount from its stored dict form."""
    return Discount(
        data["discount_id"],
        data["contract_id"],
        coupon_from_dict(data["coupon"], "coupon"),
        datetime.fromisoformat(data["applied_at"]),
        datetime.fromisoformat(data["starts_at"]),
        None if data["ends_before"] is None else datetime.fromisoformat(data["ends_before"]),
        None if data["removed_at"] is None else datetime.fromisoformat(data["removed_at"]),
    )
