"""Products and their meters: which events count, how much, and under which dimension values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import parse_decimal

ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """A usage event as a caller reports it: type, when it happened (UTC), string properties."""

    event_type: str
    timestamp: datetime
    properties: Mapping[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.event_type, str) or not self.event_type:
            raise InvalidArgument.of_field("event_type", "must be a non-empty string")
        if not isinstance(self.timestamp, datetime) or self.timestamp.utcoffset() is None:
            raise InvalidArgument.of_field("timestamp", "must be a timezone-aware datetime")
        if self.timestamp.utcoffset():
            object.__setattr__(self, "timestamp", self.timestamp.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class PropertyFilter:
    """Counts only events whose `property` holds one of `one_of` (e.g. outcome = resolved)."""

    property: str
    one_of: tuple[str, ...]

    def __post_init__(self) -> None:
        # A bare string would pass as a sequence of one-letter values: refuse it.
        if isinstance(self.one_of, str):
            raise InvalidArgument.of_field("one_of", "must be a list of values, not one string")
        object.__setattr__(self, "one_of", tuple(self.one_of))

    def matches(self, properties: Mapping[str, str]) -> bool:
        """True when the event carries the property with one of the accepted values."""
        return properties.get(self.property) in self.one_of


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one event adds to a product's usage: a quantity and its dimension values."""

    quantity: Decimal
    dimensions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Meter:
    """How a product reads events: their type, filters, quantity property and dimensions.

    With no `quantity_property` each matching event counts 1. Events of another type, or that
    fail a filter, are not this product's usage and measure to nothing; a matching event that
    lacks a dimension or its quantity is an error naming the property.
    """

    event_type: str
    quantity_property: str | None = None
    filters: tuple[PropertyFilter, ...] = ()
    dimensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        violations = ViolationCollector()
        if not _is_name(self.event_type):
            violations.add("event_type", "must be a non-empty string")
        if self.quantity_property is not None and not _is_name(self.quantity_property):
            violations.add(
                "quantity_property", "must be a non-empty string, or null to count events"
            )
        for index, rule in enumerate(self.filters):
            path = f"filters[{index}]"
            if not isinstance(rule, PropertyFilter):
                violations.add(path, f"must be a PropertyFilter, got {type(rule).__name__}")
                continue
            if not _is_name(rule.property):
                violations.add(f"{path}.property", "must be a non-empty string")
            if not rule.one_of or not all(isinstance(value, str) for value in rule.one_of):
                violations.add(f"{path}.one_of", "must list at least one accepted string value")
        seen: set[str] = set()
        for index, name in enumerate(self.dimensions):
            if not _is_name(name):
                violations.add(f"dimensions[{index}]", "must be a non-empty string")
            elif name in seen:
                violations.add(f"dimensions[{index}]", f"{name!r} is listed twice")
            seen.add(name)
        violations.raise_if_any("invalid meter")

    def measure(self, event: UsageEvent) -> Measurement | None:
        """What the event adds to this product, or None when the meter does not count it."""
        if event.event_type != self.event_type:
            return None
        properties = event.properties
        for rule in self.filters:
            if not rule.matches(properties):
                return None
        dimensions: dict[str, str] = {}
        for name in self.dimensions:
            value = properties.get(name)
            if not value:
                raise InvalidArgument.of_field(
                    f"properties.{name}",
                    f"missing: dimension {name!r} of events {self.event_type!r} prices the event",
                )
            dimensions[name] = value
        return Measurement(self._quantity(properties), dimensions)

    def _quantity(self, properties: Mapping[str, str]) -> Decimal:
        if self.quantity_property is None:
            return ONE
        path = f"properties.{self.quantity_property}"
        raw = properties.get(self.quantity_property)
        if raw is None:
            raise InvalidArgument.of_field(
                path, f"missing: events {self.event_type!r} carry their quantity in it"
            )
        quantity = parse_decimal(raw, path)
        if quantity < 0:
            raise InvalidArgument.of_field(path, f"must not be negative, got {raw}")
        return quantity


@dataclass(frozen=True, slots=True)
class Product:
    """Something sold, keyed for rate cards, with the meter that measures its usage."""

    key: str
    meter: Meter
    name: str = ""
    tags: frozenset[str] = frozenset()
    """Labels contract overrides can target (e.g. `llm` for every model's tokens)."""

    def __post_init__(self) -> None:
        if not _is_name(self.key):
            raise InvalidArgument.of_field("key", "must be a non-empty string")
        if not all(_is_name(tag) for tag in self.tags):
            raise InvalidArgument.of_field("tags", "must be non-empty strings")
        object.__setattr__(self, "tags", frozenset(self.tags))
        if not isinstance(self.meter, Meter):
            raise InvalidArgument.of_field(
                "meter", f"must be a Meter, got {type(self.meter).__name__}"
            )


def product_from_dict(data: Mapping[str, object], field_path: str = "") -> Product:
    """Build a product and its meter from their plain-dict (catalog) form, or raise."""
    violations = ViolationCollector()

    def at(key: str) -> str:
        return f"{field_path}.{key}" if field_path else key

    _reject_unknown(data, {"key", "name", "tags", "meter"}, at(""), "a product", violations)
    key = _text(data.get("key"), at("key"), violations)
    name = _text(data.get("name", ""), at("name"), violations, allow_empty=True)
    meter = data.get("meter")
    if not isinstance(meter, Mapping):
        violations.add(at("meter"), "must be a mapping with at least event_type")
        meter = {}
    _reject_unknown(meter, _METER_FIELDS, at("meter"), "a meter", violations)
    event_type = _text(meter.get("event_type"), at("meter.event_type"), violations)
    raw_quantity_property = meter.get("quantity_property")
    quantity_property = (
        None
        if raw_quantity_property is None
        else _text(raw_quantity_property, at("meter.quantity_property"), violations)
    )
    filters = [
        _filter_from_dict(raw, at(f"meter.filters[{index}]"), violations)
        for index, raw in enumerate(_list(meter.get("filters"), at("meter.filters"), violations))
    ]
    dimensions = [
        _text(raw, at(f"meter.dimensions[{index}]"), violations)
        for index, raw in enumerate(
            _list(meter.get("dimensions"), at("meter.dimensions"), violations)
        )
    ]
    tags = [
        _text(raw, at(f"tags[{index}]"), violations)
        for index, raw in enumerate(_list(data.get("tags"), at("tags"), violations))
    ]
    violations.raise_if_any("invalid product")
    try:
        return Product(
            key,
            Meter(
                event_type,
                quantity_property,
                tuple(rule for rule in filters if rule is not None),
                tuple(dimensions),
            ),
            name,
            frozenset(tags),
        )
    except InvalidArgument as error:
        # Meter reports paths relative to itself (e.g. `dimensions[1]`).
        for violation in error.violations:
            violations.add(at(f"meter.{violation.field}"), violation.description)
        violations.raise_if_any("invalid product")
        raise


def product_to_dict(product: Product) -> dict[str, object]:
    """The plain-dict form of a product; `product_from_dict` reads it back to an equal product."""
    meter = product.meter
    meter_data: dict[str, object] = {"event_type": meter.event_type}
    if meter.quantity_property is not None:
        meter_data["quantity_property"] = meter.quantity_property
    if meter.filters:
        meter_data["filters"] = [
            {"property": rule.property, "equals": rule.one_of[0]}
            if len(rule.one_of) == 1
            else {"property": rule.property, "one_of": list(rule.one_of)}
            for rule in meter.filters
        ]
    if meter.dimensions:
        meter_data["dimensions"] = list(meter.dimensions)
    data: dict[str, object] = {"key": product.key}
    if product.name:
        data["name"] = product.name
    if product.tags:
        data["tags"] = sorted(product.tags)
    data["meter"] = meter_data
    return data


_METER_FIELDS = {"event_type", "quantity_property", "filters", "dimensions"}


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _text(
    value: object, path: str, violations: ViolationCollector, *, allow_empty: bool = False
) -> str:
    if isinstance(value, str) and (allow_empty or value.strip()):
        return value
    violations.add(path, "must be a non-empty string" if not allow_empty else "must be a string")
    return ""


def _reject_unknown(
    data: Iterable[object],
    known: set[str],
    path: str,
    what: str,
    violations: ViolationCollector,
) -> None:
    for unknown in sorted(str(key) for key in data if key not in known):
        violations.add(f"{path}.{unknown}" if path else unknown, f"is not a field of {what}")


def _list(value: object, path: str, violations: ViolationCollector) -> Sequence[object]:
    if value is None:
        return ()
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value
    violations.add(path, f"must be a list, got {type(value).__name__}")
    return ()


def _filter_from_dict(
    data: object, path: str, violations: ViolationCollector
) -> PropertyFilter | None:
    # `equals: resolved` is the common case; `one_of: [a, b]` accepts several values.
    if not isinstance(data, Mapping):
        violations.add(path, "must be a mapping with property and equals (or one_of)")
        return None
    _reject_unknown(data, {"property", "equals", "one_of"}, path, "a filter", violations)
    name = _text(data.get("property"), f"{path}.property", violations)
    equals, one_of = data.get("equals"), data.get("one_of")
    if (equals is None) == (one_of is None):
        violations.add(path, "give exactly one of equals or one_of")
        return None
    values = [equals] if one_of is None else _list(one_of, f"{path}.one_of", violations)
    if not values or not all(isinstance(value, str) for value in values):
        violations.add(
            f"{path}.equals" if one_of is None else f"{path}.one_of",
            "must be string values (quote numbers in YAML)",
        )
        return None
    return PropertyFilter(name, tuple(str(value) for value in values))
