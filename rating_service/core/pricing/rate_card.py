"""Rate cards: versioned, effective-dated prices per product, and the version in force at a time.

A version is in force from `effective_from` (inclusive) until `effective_until` (exclusive;
None = open-ended). An event is priced by the version in force at the event's timestamp, not
at its arrival, so versions of one rate card must never overlap.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from types import MappingProxyType

from rating_service.core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ViolationCollector,
)
from rating_service.core.money import (
    CURRENCIES,
    PricingUnit,
    format_decimal,
    parse_decimal,
)
from rating_service.core.pricing.aggregation import Aggregation
from rating_service.core.pricing.factory import build_price_model, price_model_to_dict
from rating_service.core.pricing.features import (
    Feature,
    FeatureKind,
    features_from_dict,
    features_to_dict,
)
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.meter import Product
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_model import PRICE_TYPES, PriceModel
from rating_service.core.pricing.price_terms import PriceWithTerms

NO_RATE_CARD_IN_FORCE = "NO_RATE_CARD_IN_FORCE"
"""FailedPrecondition reason: no version of the rate card covers the event's timestamp."""

PRODUCT_NOT_PRICED = "PRODUCT_NOT_PRICED"
"""NotFound reason: the rate card in force has no price for the event's product."""


def _no_features() -> Mapping[str, Feature]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RateCard:
    """One version of a rate card: a price model per product key, in one pricing unit."""

    key: str
    version: int
    effective_from: datetime
    effective_until: datetime | None
    pricing_unit: PricingUnit
    prices: Mapping[str, PriceModel] = field(hash=False)
    features: Mapping[str, Feature] = field(default_factory=_no_features, hash=False)
    """The features the card grants, by key (see `rating_service.core.pricing.features`)."""

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        if not isinstance(self.key, str) or not self.key.strip():
            violations.add("key", "must be a non-empty string")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            violations.add("version", f"must be an integer ≥ 1, got {self.version!r}")
        start = _utc(self.effective_from, "effective_from", violations)
        end = (
            None
            if self.effective_until is None
            else _utc(self.effective_until, "effective_until", violations)
        )
        if start is not None and end is not None and end <= start:
            violations.add("effective_until", f"must be after effective_from ({start.isoformat()})")
        if not isinstance(self.pricing_unit, PricingUnit):
            violations.add("pricing_unit", "must be a PricingUnit")
        if not isinstance(self.prices, Mapping) or not self.prices:
            violations.add("prices", "must price at least one product")
        else:
            for product_key, model in self.prices.items():
                if not isinstance(product_key, str) or not product_key:
                    violations.add(
                        f"prices.{product_key}", "product keys must be non-empty strings"
                    )
                elif not isinstance(model, PRICE_TYPES):
                    violations.add(
                        f"prices.{product_key}",
                        f"must be a price model, got {type(model).__name__}",
                    )
        if not isinstance(self.features, Mapping) or not all(
            isinstance(feature, Feature) for feature in self.features.values()
        ):
            violations.add("features", "must map feature keys to features")
        violations.raise_if_any("invalid rate card")
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))
        object.__setattr__(self, "effective_from", start)
        object.__setattr__(self, "effective_until", end)
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))

    def is_in_force_at(self, at: datetime) -> bool:
        """True when `at` is in [effective_from, effective_until)."""
        return self.effective_from <= at and (
            self.effective_until is None or at < self.effective_until
        )

    def price_of(self, product_key: str) -> PriceModel:
        """The price model of a product on this card, or NotFound."""
        model = self.prices.get(product_key)
        if model is None:
            raise NotFound(
                f"rate card {self.key!r} version {self.version} has no price for product"
                f" {product_key!r}",
                reason=PRODUCT_NOT_PRICED,
                metadata={
                    "rate_card": self.key,
                    "version": str(self.version),
                    "product": product_key,
                },
            )
        return model


def validate_rate_card(card: RateCard, products: Mapping[str, Product]) -> None:
    """Refuse a card that prices unknown products or uses matrix dimensions a meter lacks."""
    violations = ViolationCollector()
    for product_key, model in card.prices.items():
        path = f"prices.{product_key}"
        product = products.get(product_key)
        if product is None:
            violations.add(path, f"{product_key!r} is not a product of the catalog")
            continue
        meter = product.meter
        cells = [c.price for c in model.cells] if isinstance(model, Matrix) else [model]
        summed = meter.aggregated_by is Aggregation.SUM and not meter.corrections
        per_event = [
            isinstance(cell, Percentage)
            or (isinstance(cell, PriceWithTerms) and cell.prices_each_event)
            for cell in cells
        ]
        if not summed and any(per_event):
            violations.add(
                path,
                "a percentage prices each event's own value: its meter must sum,"
                f" without corrections (it aggregates by {meter.aggregated_by})",
            )
        if isinstance(model, Matrix):
            measured = product.meter.dimensions
            for index, name in enumerate(model.dimensions):
                if name not in measured:
                    violations.add(
                        f"{path}.dimensions[{index}]",
                        f"{name!r} is not a dimension of product {product_key!r}"
                        f" (its meter reads {', '.join(measured) or 'none'})",
                    )
    for feature_key, feature in card.features.items():
        if feature.kind is FeatureKind.METERED and feature.product_key not in products:
            violations.add(
                f"features.{feature_key}.product_key",
                f"{feature.product_key!r} is not a product of the catalog",
            )
    violations.raise_if_any(
        f"rate card {card.key!r} version {card.version} does not fit the catalog"
    )


class RateCardHistory:
    """Every version of one rate card, checked not to overlap, answering which is in force when."""

    __slots__ = ("_starts", "versions")

    def __init__(self, versions: Iterable[RateCard]) -> None:
        given = tuple(versions)
        _check_history(given)
        self.versions: tuple[RateCard, ...] = tuple(
            sorted(given, key=lambda card: card.effective_from)
        )
        """The versions, earliest first."""
        self._starts = tuple(card.effective_from for card in self.versions)

    def __repr__(self) -> str:
        return f"RateCardHistory({list(self.versions)!r})"

    def in_force_at(self, at: datetime) -> RateCard:
        """The version in force at `at` (an aware datetime), or FailedPrecondition if none is."""
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise InvalidArgument.of_field("timestamp", "must be a timezone-aware datetime")
        index = bisect_right(self._starts, at) - 1
        if index >= 0 and self.versions[index].is_in_force_at(at):
            return self.versions[index]
        key = self.versions[0].key if self.versions else ""
        raise FailedPrecondition(
            f"no version of rate card {key!r} is in force at {at.isoformat()}",
            reason=NO_RATE_CARD_IN_FORCE,
            metadata={"rate_card": key, "timestamp": at.isoformat()},
        )


def rate_card_in_force(versions: Iterable[RateCard], at: datetime) -> RateCard:
    """The version of a rate card in force at `at`; see RateCardHistory to reuse the check."""
    return RateCardHistory(versions).in_force_at(at)


def _check_history(versions: Sequence[RateCard]) -> None:
    violations = ViolationCollector()
    if not versions:
        violations.add("versions", "at least one version is required")
    key = versions[0].key if versions else ""
    numbers: dict[int, int] = {}
    for index, card in enumerate(versions):
        if card.key != key:
            violations.add(f"versions[{index}].key", f"must be {key!r} like versions[0]")
        if card.version in numbers:
            violations.add(
                f"versions[{index}].version",
                f"version {card.version} is also versions[{numbers[card.version]}]",
            )
        numbers.setdefault(card.version, index)
    order = sorted(range(len(versions)), key=lambda index: versions[index].effective_from)
    for earlier, later in pairwise(order):
        first, second = versions[earlier], versions[later]
        if first.effective_until is None or first.effective_until > second.effective_from:
            violations.add(
                f"versions[{later}].effective_from",
                f"version {second.version} from {second.effective_from.isoformat()} overlaps"
                f" version {first.version} ({_describe_range(first)})",
            )
    violations.raise_if_any("rate card versions overlap or disagree")


def _describe_range(card: RateCard) -> str:
    until = "open" if card.effective_until is None else card.effective_until.isoformat()
    return f"[{card.effective_from.isoformat()}, {until})"


def _utc(value: object, path: str, violations: ViolationCollector) -> datetime | None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        violations.add(path, "must be a timezone-aware datetime")
        return None
    return value.astimezone(UTC)


def rate_card_from_dict(
    data: Mapping[str, object],
    products: Mapping[str, Product] | None = None,
    field_path: str = "",
) -> RateCard:
    """Build a rate card from its plain-dict (catalog) form; with `products`, check it fits them.

    Shape: `{"key", "version", "effective_from", "effective_until", "pricing_unit", "prices"}`,
    timestamps as ISO-8601 strings with an offset (or aware datetimes, as YAML gives them), the
    pricing unit as a currency code or `{"custom_unit", "invoice_currency",
    "rate_to_invoice_currency"}`, and prices mapping product keys to price-model dicts.
    """
    violations = ViolationCollector()

    def at(key: str) -> str:
        return f"{field_path}.{key}" if field_path else key

    for unknown in sorted(str(key) for key in data if key not in _RATE_CARD_FIELDS):
        violations.add(at(unknown), "is not a field of a rate card")
    key = data.get("key")
    if not isinstance(key, str) or not key.strip():
        violations.add(at("key"), "must be a non-empty string")
        key = ""
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        violations.add(at("version"), f"must be an integer ≥ 1, got {version!r}")
        version = 0
    effective_from = _timestamp(data.get("effective_from"), at("effective_from"), violations)
    raw_until = data.get("effective_until")
    effective_until = (
        None if raw_until is None else _timestamp(raw_until, at("effective_until"), violations)
    )
    pricing_unit = _pricing_unit(data.get("pricing_unit"), at("pricing_unit"), violations)
    prices: dict[str, PriceModel] = {}
    raw_prices = data.get("prices")
    if not isinstance(raw_prices, Mapping):
        violations.add(at("prices"), "must map product keys to prices")
        raw_prices = {}
    for product_key, raw_model in raw_prices.items():
        path = at(f"prices.{product_key}")
        if not isinstance(raw_model, Mapping):
            violations.add(path, "must be a price model mapping with a model field")
            continue
        try:
            prices[str(product_key)] = build_price_model(raw_model, path)
        except InvalidArgument as error:
            violations.violations.extend(error.violations)
    features: dict[str, Feature] = {}
    try:
        features = features_from_dict(data.get("features"), at("features"))
    except InvalidArgument as error:
        violations.violations.extend(error.violations)
    violations.raise_if_any("invalid rate card")
    if effective_from is None or pricing_unit is None:  # each recorded a violation already
        raise InvalidArgument.of_field(at("effective_from"), "is required")
    try:
        card = RateCard(
            key, version, effective_from, effective_until, pricing_unit, prices, features
        )
        if products is not None:
            validate_rate_card(card, products)
    except InvalidArgument as error:
        raise InvalidArgument(
            error.message,
            [
                FieldViolation(at(violation.field), violation.description)
                for violation in error.violations
            ],
        ) from None
    return card


def rate_card_to_dict(card: RateCard) -> dict[str, object]:
    """The plain-dict form of a rate card; `rate_card_from_dict` reads it back to an equal card."""
    unit = card.pricing_unit
    data: dict[str, object] = {
        "key": card.key,
        "version": card.version,
        "effective_from": card.effective_from.isoformat(),
        "effective_until": None
        if card.effective_until is None
        else card.effective_until.isoformat(),
        "pricing_unit": unit.code
        if unit.is_currency
        else {
            "custom_unit": unit.code,
            "invoice_currency": unit.invoice_currency.code,
            "rate_to_invoice_currency": format_decimal(unit.rate_to_invoice_currency),
        },
        "prices": {
            product_key: price_model_to_dict(model) for product_key, model in card.prices.items()
        },
    }
    # Written only when the card grants features, so older documents read back unchanged.
    if card.features:
        data["features"] = features_to_dict(card.features)
    return data


_RATE_CARD_FIELDS = {
    "key",
    "version",
    "effective_from",
    "effective_until",
    "pricing_unit",
    "prices",
    "features",
}


def _timestamp(value: object, path: str, violations: ViolationCollector) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            violations.add(path, f"{value!r} is not an ISO-8601 timestamp")
            return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        violations.add(path, "must be an ISO-8601 timestamp with a UTC offset (e.g. ...T00:00:00Z)")
        return None
    return value.astimezone(UTC)


def _pricing_unit(value: object, path: str, violations: ViolationCollector) -> PricingUnit | None:
    if isinstance(value, str):
        if value not in CURRENCIES:
            violations.add(path, f"{value!r} is not a supported currency code")
            return None
        return PricingUnit.of_currency(value)
    if not isinstance(value, Mapping):
        violations.add(path, "must be a currency code (e.g. USD) or a custom unit mapping")
        return None
    for name in sorted(str(key) for key in value if key not in _CUSTOM_UNIT_FIELDS):
        violations.add(f"{path}.{name}", "is not a field of a pricing unit")
    code = value.get("custom_unit")
    currency = value.get("invoice_currency")
    rate_path = f"{path}.rate_to_invoice_currency"
    try:
        rate = parse_decimal(value.get("rate_to_invoice_currency"), rate_path)
    except InvalidArgument as error:
        violations.violations.extend(error.violations)
        return None
    if not isinstance(code, str) or not isinstance(currency, str):
        violations.add(path, "a custom unit needs custom_unit and invoice_currency names")
        return None
    try:
        return PricingUnit.custom(code, currency, rate)
    except InvalidArgument as error:
        # PricingUnit names its own fields; the dict calls the unit's code `custom_unit`.
        for violation in error.violations:
            name = "custom_unit" if violation.field == "code" else violation.field
            violations.add(f"{path}.{name}", violation.description)
        return None


_CUSTOM_UNIT_FIELDS = {"custom_unit", "invoice_currency", "rate_to_invoice_currency"}
