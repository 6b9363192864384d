"""Features a rate card grants (a contract may override them), and what a customer is entitled to.

Three kinds, as OpenMeter and Metronome name them:

- `boolean`: the feature is on or off (`{"kind": "boolean", "enabled": true}`);
- `limit`: a number the customer may have, e.g. 20 seats (`{"kind": "limit", "limit": "20"}`);
- `metered`: a quantity of a product per billing period, e.g. 1,000 images a month
  (`{"kind": "metered", "product_key": "image-generation", "limit": "1000"}`), counted by the
  same period counters rating keeps.

A feature the contract's rate card does not name, and no override grants, is not entitled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from rating_service.core.dict_form import DictReader
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import format_decimal


class FeatureKind(StrEnum):
    """How a feature is granted."""

    BOOLEAN = "boolean"
    LIMIT = "limit"
    METERED = "metered"


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature's grant: on/off, a number, or a quantity of a product per period."""

    kind: FeatureKind
    enabled: bool = True
    limit: Decimal | None = None
    product_key: str | None = None

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.kind, FeatureKind):
            violations.add("kind", f"must be one of {', '.join(FeatureKind)}")
        if not isinstance(self.enabled, bool):
            violations.add("enabled", "must be true or false")
        counted = self.kind in (FeatureKind.LIMIT, FeatureKind.METERED)
        if counted and (
            not isinstance(self.limit, Decimal) or not self.limit.is_finite() or self.limit < 0
        ):
            violations.add("limit", f"must be a finite decimal ≥ 0, got {self.limit!r}")
        if not counted and self.limit is not None:
            violations.add("limit", "a boolean feature has no limit")
        if self.kind is FeatureKind.METERED and not self.product_key:
            violations.add("product_key", "a metered feature counts a product's usage")
        if self.kind is not FeatureKind.METERED and self.product_key is not None:
            violations.add("product_key", "only a metered feature counts a product")
        violations.raise_if_any("invalid feature")


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What a customer may use of a feature now: allowed, and for counted kinds how much."""

    feature_key: str
    allowed: bool
    kind: FeatureKind | None = None
    limit: Decimal | None = None
    used: Decimal | None = None
    period: tuple[datetime, datetime] | None = None

    @property
    def remaining(self) -> Decimal | None:
        """What is left of a metered feature this period (never below 0); the limit of a limit."""
        if self.limit is None:
            return None
        if self.used is None:
            return self.limit
        return max(self.limit - self.used, Decimal(0))


def entitlement(
    feature_key: str,
    feature: Feature | None,
    used: Decimal | None = None,
    period: tuple[datetime, datetime] | None = None,
) -> Entitlement:
    """The entitlement a feature grants given the period's usage (metered features only).

    Boolean: allowed when enabled. Limit: allowed when the limit is above 0. Metered: allowed
    while the period's usage is below the limit.
    """
    if feature is None:
        return Entitlement(feature_key, False)
    if feature.kind is FeatureKind.BOOLEAN:
        return Entitlement(feature_key, feature.enabled, feature.kind)
    assert feature.limit is not None  # a counted feature has one
    if feature.kind is FeatureKind.LIMIT:
        return Entitlement(feature_key, feature.limit > 0, feature.kind, feature.limit)
    spent = used if used is not None else Decimal(0)
    return Entitlement(
        feature_key, spent < feature.limit, feature.kind, feature.limit, spent, period
    )


def feature_from_dict(data: object, field_path: str = "") -> Feature:
    """Build a feature from `{"kind", "enabled"?, "limit"?, "product_key"?}`, or raise."""
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "a feature")
    kind = fields.choice("kind", FeatureKind)
    enabled = fields.raw("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        violations.add(fields.at("enabled"), "must be true or false")
    limit = fields.optional_decimal("limit")
    product_key = fields.optional_text("product_key")
    fields.reject_unknown()
    violations.raise_if_any("invalid feature")
    assert kind is not None
    try:
        return Feature(kind, enabled if isinstance(enabled, bool) else True, limit, product_key)
    except InvalidArgument as error:
        for violation in error.violations:
            violations.add(fields.at(violation.field), violation.description)
        violations.raise_if_any("invalid feature")
        raise


def features_from_dict(data: object, field_path: str) -> dict[str, Feature]:
    """Features by key from their dict form (`{key: feature}`), every bad one named."""
    if data is None:
        return {}
    violations = ViolationCollector()
    if not isinstance(data, Mapping):
        raise InvalidArgument.of_field(field_path, "must map feature keys to features")
    found: dict[str, Feature] = {}
    for key, raw in data.items():
        path = f"{field_path}.{key}"
        if not isinstance(key, str) or not key.strip():
            violations.add(path, "a feature key must be a non-empty string")
            continue
        try:
            found[key] = feature_from_dict(raw, path)
        except InvalidArgument as error:
            violations.violations.extend(error.violations)
    violations.raise_if_any("invalid features")
    return found


def feature_to_dict(feature: Feature) -> dict[str, object]:
    """The plain-dict form of a feature."""
    data: dict[str, object] = {"kind": str(feature.kind)}
    if feature.kind is FeatureKind.BOOLEAN:
        data["enabled"] = feature.enabled
    if feature.limit is not None:
        data["limit"] = format_decimal(feature.limit)
    if feature.product_key is not None:
        data["product_key"] = feature.product_key
    return data


def features_to_dict(features: Mapping[str, Feature]) -> dict[str, object]:
    """The plain-dict form of features by key, in key order."""
    return {key: feature_to_dict(features[key]) for key in sorted(features)}
