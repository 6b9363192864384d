"""Checks shared by the price models: prices are finite non-negative Decimals, maths is exact."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, DivisionImpossible, Inexact, Overflow, localcontext
from typing import TypeVar

from rating_service.core.dict_form import join_path
from rating_service.core.errors import FieldViolation, InvalidArgument, ViolationCollector
from rating_service.core.money import EXACT_CONTEXT, PRECISION

T = TypeVar("T")


def check_price(
    violations: ViolationCollector, path: str, value: object, *, positive: bool = False
) -> bool:
    """Record a violation unless `value` is a finite Decimal ≥ 0 (> 0 if `positive`)."""
    if not isinstance(value, Decimal):
        violations.add(path, f"must be a Decimal, got {type(value).__name__}")
        return False
    if not value.is_finite():
        violations.add(path, f"{value} is not a finite number")
        return False
    if positive and value <= 0:
        violations.add(path, f"must be greater than 0, got {value}")
        return False
    if value < 0:
        violations.add(path, f"must not be negative, got {value}")
        return False
    return True


def require_quantity(value: object, field: str) -> None:
    """Raise InvalidArgument unless `value` is a finite, non-negative Decimal quantity."""
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise InvalidArgument.of_field(
            field, f"must be a finite, non-negative Decimal, got {value!r}"
        )


def priced_exactly(compute: Callable[[], T], field: str = "quantity") -> T:
    """Run a pricing computation in the exact context; a result that would round is refused."""
    try:
        with localcontext(EXACT_CONTEXT):
            return compute()
    except (Inexact, Overflow, DivisionImpossible):
        # Only absurd magnitudes get here (a value on the wire has at most 48 digits); refusing
        # is better than an amount silently rounded at the 50th digit.
        raise InvalidArgument.of_field(
            field, f"cannot be priced exactly within {PRECISION} significant digits"
        ) from None


def under_prefix(error: InvalidArgument, prefix: str) -> InvalidArgument:
    """The same error with every field path placed under `prefix` (e.g. `prices.tokens`)."""
    if not prefix:
        return error
    violations = [
        FieldViolation(join_path(prefix, violation.field), violation.description)
        for violation in error.violations
    ] or [FieldViolation(prefix, error.message)]
    details = "; ".join(f"{violation.field}: {violation.description}" for violation in violations)
    return InvalidArgument(f"invalid {prefix}: {details}", violations, reason=error.reason)
