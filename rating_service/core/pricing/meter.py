"""Products and their meters: which events count, how much, and under which dimension values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import parse_decimal
from rating_service.core.pricing.aggregation import (
    Aggregation,
    TimeUnit,
    distinct_key,
    reading_key,
)
from rating_service.core.pricing.unit_costs import (
    UnitCost,
    unit_costs_from_dict,
    unit_costs_to_dict,
)
from rating_service.core.pricing.window import Window

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
    mark: str | None = None
    """The event's entry key for aggregations that remember entries (a distinct value, a time)."""


@dataclass(frozen=True, slots=True)
class Meter:
    """How a product reads events: their type, filters, quantity property and dimensions.

    With no `quantity_property` each matching event counts 1. Events of another type, or that
    fail a filter, are not this product's usage and measure to nothing; a matching event that
    lacks a dimension or its quantity is an error naming the property. `aggregation` (default
    `sum` with a quantity property, `count` without) says how a period's events become the
    quantity the price applies to; `window` prices each UTC hour or day of it apart.
    """

    event_type: str
    quantity_property: str | None = None
    filters: tuple[PropertyFilter, ...] = ()
    dimensions: tuple[str, ...] = ()
    aggregation: Aggregation | None = None
    unique_property: str | None = None
    """The property whose distinct values a `unique_count` meter counts."""
    time_unit: TimeUnit | None = None
    """The time a `time_weighted_sum` counts in (default hour)."""
    window: Window | None = None
    corrections: bool = False
    """A `sum` meter takes negative values as corrections (usage reversed)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        violations = ViolationCollector()
        self._resolve_aggregation(violations)
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

    def _resolve_aggregation(self, violations: ViolationCollector) -> None:
        """Default the aggregation and check the fields each aggregation reads."""
        if self.aggregation is None:
            default = Aggregation.COUNT if self.quantity_property is None else Aggregation.SUM
            object.__setattr__(self, "aggregation", default)
        aggregation = self.aggregation
        if not isinstance(aggregation, Aggregation):
            violations.add("aggregation", f"must be one of {', '.join(Aggregation)}")
            return
        needs_quantity = aggregation not in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)
        if needs_quantity and self.quantity_property is None:
            violations.add("quantity_property", f"is required by aggregation {aggregation}")
        if not needs_quantity and self.quantity_property is not None:
            violations.add("quantity_property", f"is not read by aggregation {aggregation}")
        if aggregation is Aggregation.UNIQUE_COUNT:
            if not _is_name(self.unique_property):
                violations.add("unique_property", "is required by aggregation unique_count")
        elif self.unique_property is not None:
            violations.add("unique_property", "is read only by aggregation unique_count")
        if aggregation is Aggregation.TIME_WEIGHTED_SUM:
            if self.time_unit is None:
                object.__setattr__(self, "time_unit", TimeUnit.HOUR)
        elif self.time_unit is not None:
            violations.add("time_unit", "is read only by aggregation time_weighted_sum")
        if self.window is not None and aggregation.reads_time:
            violations.add("window", f"does not apply to aggregation {aggregation}")
        if self.corrections and aggregation is not Aggregation.SUM:
            violations.add("corrections", "apply only to aggregation sum")

    @property
    def aggregated_by(self) -> Aggregation:
        """The meter's aggregation (resolved from its default when built)."""
        assert self.aggregation is not None
        return self.aggregation

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
        aggregation = self.aggregated_by
        if aggregation is Aggregation.UNIQUE_COUNT:
            assert self.unique_property is not None
            distinct = properties.get(self.unique_property)
            if not distinct:
                raise InvalidArgument.of_field(
                    f"properties.{self.unique_property}",
                    f"missing: events {self.event_type!r} carry the value counted once in it",
                )
            return Measurement(ONE, dimensions, distinct_key(distinct))
        mark = reading_key(event.timestamp) if aggregation.reads_time else None
        return Measurement(self._quantity(properties), dimensions, mark)

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
        if quantity < 0 and not self.corrections:
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
    unit_costs: tuple[UnitCost, ...] = ()
    """What a unit costs us, by version (see `rating_service.core.pricing.unit_costs`)."""

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

    _reject_unknown(
        data, {"key", "name", "tags", "meter", "unit_costs"}, at(""), "a product", violations
    )
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
    aggregation = _choice(
        meter.get("aggregation"), Aggregation, at("meter.aggregation"), violations
    )
    time_unit = _choice(meter.get("time_unit"), TimeUnit, at("meter.time_unit"), violations)
    window = _choice(meter.get("window"), Window, at("meter.window"), violations)
    raw_unique = meter.get("unique_property")
    unique_property = (
        None if raw_unique is None else _text(raw_unique, at("meter.unique_property"), violations)
    )
    corrections = meter.get("corrections", False)
    if not isinstance(corrections, bool):
        violations.add(at("meter.corrections"), "must be true or false")
        corrections = False
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
    unit_costs = unit_costs_from_dict(data.get("unit_costs"), at("unit_costs"), violations)
    violations.raise_if_any("invalid product")
    try:
        return Product(
            key,
            Meter(
                event_type,
                quantity_property,
                tuple(rule for rule in filters if rule is not None),
                tuple(dimensions),
                aggregation,
                unique_property,
                time_unit,
                window,
                corrections,
            ),
            name,
            frozenset(tags),
            tuple(unit_costs),
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
    default = Aggregation.COUNT if meter.quantity_property is None else Aggregation.SUM
    if meter.aggregated_by is not default:
        meter_data["aggregation"] = str(meter.aggregated_by)
    if meter.quantity_property is not None:
        meter_data["quantity_property"] = meter.quantity_property
    if meter.unique_property is not None:
        meter_data["unique_property"] = meter.unique_property
    if meter.time_unit is not None:
        meter_data["time_unit"] = str(meter.time_unit)
    if meter.window is not None:
        meter_data["window"] = str(meter.window)
    if meter.corrections:
        meter_data["corrections"] = True
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
    if product.unit_costs:
        data["unit_costs"] = unit_costs_to_dict(product.unit_costs)
    return data


_METER_FIELDS = {
    "event_type",
    "quantity_property",
    "filters",
    "dimensions",
    "aggregation",
    "unique_property",
    "time_unit",
    "window",
    "corrections",
}


_Choice = TypeVar("_Choice", Aggregation, TimeUnit, Window)


def _choice(
    value: object, kind: type[_Choice], path: str, violations: ViolationCollector
) -> _Choice | None:
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return kind(value)
    except ValueError:
        pass
    violations.add(path, f"must be one of {', '.join(kind)}")
    return None


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
