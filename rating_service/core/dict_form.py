"""Reading the plain-dict (wire) form of domain objects, field by field.

Prices, contracts, overrides, pools, alerts and requests are read with one `DictReader`. Every
problem is recorded under its field path (`overrides[2].effective_from`,
`prices.tokens.cells[3].price.unit_price`) so a caller sees them all at once; decimals go
through `parse_decimal` (strings or ints, never floats) and timestamps must carry a UTC offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import parse_decimal

E = TypeVar("E", bound=StrEnum)


def join_path(prefix: str, key: str) -> str:
    """`prefix.key`, or `prefix[3]` for an index, or `key` alone at the top."""
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def utc_timestamp(value: object, path: str, violations: ViolationCollector) -> datetime | None:
    """An aware datetime in UTC, or a recorded violation (naive times are ambiguous)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        violations.add(path, "must be a timezone-aware datetime")
        return None
    return value.astimezone(UTC)


class DictReader:
    """Reads the fields of one mapping, recording each problem under its path.

    `what` names the shape in messages: a field not of it, or the mapping itself when it is
    not one and has no path (at the top of a request).
    """

    def __init__(self, data: object, path: str, violations: ViolationCollector, what: str) -> None:
        self.path = path
        self.violations = violations
        self.what = what
        self.read: set[str] = set()
        if isinstance(data, Mapping):
            self.data: Mapping[object, object] = data
        else:
            violations.add(path or what, f"must be a mapping, got {type(data).__name__}")
            self.data = {}

    def at(self, key: str) -> str:
        """The full path of one field."""
        return join_path(self.path, key)

    def has(self, key: str) -> bool:
        """True when the field is present and not null."""
        return self.data.get(key) is not None

    def raw(self, key: str) -> object:
        """The field's value as given (None when absent)."""
        self.read.add(key)
        return self.data.get(key)

    def text(self, key: str) -> str:
        """A required non-empty string."""
        value = self.raw(key)
        if isinstance(value, str) and value.strip():
            return value
        self.violations.add(
            self.at(key), "is required" if value is None else "must be a non-empty string"
        )
        return ""

    def optional_text(self, key: str) -> str | None:
        """A non-empty string, or None when absent."""
        if self.raw(key) is None:
            return None
        return self.text(key)

    def decimal(self, key: str, default: Decimal | None = None) -> Decimal | None:
        """A decimal; absent means `default`, or a violation when there is none."""
        value = self.raw(key)
        if value is None:
            if default is None:
                self.violations.add(self.at(key), "is required")
            return default
        return self._parse(value, self.at(key))

    def optional_decimal(self, key: str) -> Decimal | None:
        """A decimal, or None when absent."""
        value = self.raw(key)
        return None if value is None else self._parse(value, self.at(key))

    def integer(self, key: str, default: int | None = None) -> int | None:
        """An int (not a bool, not a float); absent means `default` or a violation."""
        value = self.raw(key)
        if value is None:
            if default is None:
                self.violations.add(self.at(key), "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.violations.add(self.at(key), f"must be an integer, got {value!r}")
            return None
        return value

    def optional_integer(self, key: str) -> int | None:
        """An int, or None when absent."""
        if self.raw(key) is None:
            return None
        return self.integer(key)

    def timestamp(self, key: str) -> datetime | None:
        """A required ISO-8601 timestamp with an offset (or an aware datetime)."""
        value = self.raw(key)
        if value is None:
            self.violations.add(self.at(key), "is required")
            return None
        return self._timestamp(value, self.at(key))

    def optional_timestamp(self, key: str) -> datetime | None:
        """A timestamp, or None when absent."""
        value = self.raw(key)
        return None if value is None else self._timestamp(value, self.at(key))

    def choice(self, key: str, kind: type[E], default: E | None = None) -> E | None:
        """One of an enumeration's values; absent means `default` or a violation."""
        value = self.raw(key)
        if value is None:
            if default is None:
                self.violations.add(self.at(key), f"is required: one of {', '.join(kind)}")
            return default
        if isinstance(value, str) and value in kind.__members__.values():
            return kind(value)
        self.violations.add(self.at(key), f"{value!r} is not one of {', '.join(kind)}")
        return None

    def sequence(self, key: str) -> Sequence[object]:
        """A list; absent means empty."""
        if self.raw(key) is None:
            return ()
        return self.required_sequence(key)

    def required_sequence(self, key: str) -> Sequence[object]:
        """A list that must be given (empty or not)."""
        value = self.raw(key)
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return value
        self.violations.add(
            self.at(key),
            "is required" if value is None else f"must be a list, got {type(value).__name__}",
        )
        return ()

    def reject_unknown(self, what: str | None = None) -> None:
        """Record every field that is not one of the shape's (a typo must not pass silently).

        `what` names the shape when it is known only once read (a price, by its model).
        """
        for key in sorted(str(key) for key in self.data if key not in self.read):
            self.violations.add(self.at(key), f"is not a field of {what or self.what}")

    def _parse(self, value: object, path: str) -> Decimal | None:
        try:
            return parse_decimal(value, path)
        except InvalidArgument as error:
            self.violations.violations.extend(error.violations)
            return None

    def _timestamp(self, value: object, path: str) -> datetime | None:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                self.violations.add(path, f"{value!r} is not an ISO-8601 timestamp")
                return None
        if not isinstance(value, datetime) or value.utcoffset() is None:
            self.violations.add(
                path, "must be an ISO-8601 timestamp with a UTC offset (e.g. ...T00:00:00Z)"
            )
            return None
        return value.astimezone(UTC)
