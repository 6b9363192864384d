"""A tenant's whole catalog, its document form, and the plan that turns one catalog into another.

The document form is what `rating catalog apply` reads and `export` writes:
`{"products": [<product>], "rate_cards": [<rate card version>]}`. Planning is pure: the same
rules guard the CatalogService RPCs and `catalog apply`, so both refuse the same things.

Rules a plan keeps (DESIGN.md §4: events are priced by the rate in force at their timestamp,
so history that may already have priced usage must not change under it):
- products are created or replaced; nothing is ever deleted by a plan;
- a rate card version, once stored, is immutable, except that an open-ended version may be
  closed at a time not in the past;
- a new version of an existing rate card starts no earlier than `now` (a new rate card may
  carry history: nothing has been priced by it yet);
- versions are numbered 1, 2, 3 … per rate card without gaps and never overlap;
- every version prices only known products, with matrix dimensions their meters read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from rating_service.core.errors import FieldViolation, InvalidArgument, ViolationCollector
from rating_service.core.pricing.aggregation import Aggregation
from rating_service.core.pricing.meter import Product, product_from_dict, product_to_dict
from rating_service.core.pricing.rate_card import (
    RateCard,
    RateCardHistory,
    rate_card_from_dict,
    rate_card_to_dict,
    validate_rate_card,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Catalog:
    """Products by key and every rate card's versions, earliest first; consistent when built."""

    products: Mapping[str, Product] = field(default_factory=dict)
    rate_cards: Mapping[str, RateCardHistory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "products", MappingProxyType(dict(self.products)))
        object.__setattr__(self, "rate_cards", MappingProxyType(dict(self.rate_cards)))

    def versions(self, key: str) -> tuple[RateCard, ...]:
        """Every version of a rate card (none if unknown), earliest first."""
        history = self.rate_cards.get(key)
        return () if history is None else history.versions

    def to_document(self) -> dict[str, object]:
        """The document form, sorted so that exporting twice gives the same text."""
        return {
            "products": [product_to_dict(self.products[k]) for k in sorted(self.products)],
            "rate_cards": [
                rate_card_to_dict(card)
                for key in sorted(self.rate_cards)
                for card in sorted(self.rate_cards[key].versions, key=lambda c: c.version)
            ],
        }


def catalog_from_document(document: Mapping[str, object]) -> Catalog:
    """Read and check a whole catalog document, naming every bad field by its path."""
    violations = ViolationCollector()
    for unknown in sorted(str(k) for k in document if k not in ("products", "rate_cards")):
        violations.add(unknown, "is not a section of a catalog (products, rate_cards)")
    products: dict[str, Product] = {}
    for index, raw in enumerate(_section(document, "products", violations)):
        path = f"products[{index}]"
        product = _collect(violations, product_from_dict, _mapping(raw), path)
        if product is None:
            continue
        if product.key in products:
            violations.add(f"{path}.key", f"product {product.key!r} is declared twice")
        products[product.key] = product
    cards: list[tuple[str, RateCard]] = []
    for index, raw in enumerate(_section(document, "rate_cards", violations)):
        path = f"rate_cards[{index}]"
        card = _collect(violations, rate_card_from_dict, _mapping(raw), products, path)
        if card is not None:
            cards.append((path, card))
    violations.raise_if_any("invalid catalog")
    return Catalog(products, _histories(cards))


class ChangeKind(StrEnum):
    """What one step of a plan does."""

    CREATE_PRODUCT = "create product"
    UPDATE_PRODUCT = "update product"
    CREATE_RATE_CARD_VERSION = "create rate card version"
    CLOSE_RATE_CARD_VERSION = "close rate card version"


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """One step of a plan: what changes, and its document form before and after."""

    kind: ChangeKind
    key: str
    version: int | None
    before: Mapping[str, object] | None
    after: Mapping[str, object]

    def describe(self) -> str:
        """One line for a human, e.g. `+ create rate card version list v2`."""
        sign = "+" if self.before is None else "~"
        target = self.key if self.version is None else f"{self.key} v{self.version}"
        if self.kind is ChangeKind.CLOSE_RATE_CARD_VERSION:
            return f"{sign} {self.kind} {target} at {self.after['effective_until']}"
        return f"{sign} {self.kind} {target}"


def plan_changes(current: Catalog, desired: Catalog, now: datetime) -> list[CatalogChange]:
    """The changes that bring `current` to what `desired` declares, or InvalidArgument."""
    violations = ViolationCollector()
    changes: list[CatalogChange] = []
    for key in sorted(desired.products):
        after = product_to_dict(desired.products[key])
        existing = current.products.get(key)
        if existing is None:
            changes.append(CatalogChange(ChangeKind.CREATE_PRODUCT, key, None, None, after))
        elif existing != desired.products[key]:
            _check_aggregation_kept(existing, desired.products[key], violations)
            before = product_to_dict(existing)
            changes.append(CatalogChange(ChangeKind.UPDATE_PRODUCT, key, None, before, after))
    merged_products = {**current.products, **desired.products}
    for key in sorted(desired.rate_cards):
        changes += _plan_rate_card(
            key, current.versions(key), desired.versions(key), now, violations
        )
    violations.raise_if_any("the catalog change is not allowed")
    _check_result(current, changes, merged_products)
    return changes


def _check_aggregation_kept(
    before: Product, after: Product, violations: ViolationCollector
) -> None:
    """Refuse changing what a product's usage counters hold: they may be mid-period."""
    was, now = before.meter, after.meter
    plain = (Aggregation.SUM, Aggregation.COUNT)  # both count units: a switch was always allowed
    for name in ("aggregation", "unique_property", "time_unit", "window"):
        if name == "aggregation" and was.aggregated_by in plain and now.aggregated_by in plain:
            continue
        if getattr(was, name) != getattr(now, name):
            violations.add(
                f"products[{before.key}].meter.{name}",
                f"cannot change from {getattr(was, name)} to {getattr(now, name)}: the"
                " period's usage is aggregated by it; create a new product instead",
            )


def apply_plan(current: Catalog, changes: Sequence[CatalogChange]) -> Catalog:
    """The catalog after a plan's changes (as the store will hold it)."""
    products = dict(current.products)
    versions = {key: {c.version: c for c in current.versions(key)} for key in current.rate_cards}
    for change in changes:
        if change.kind in (ChangeKind.CREATE_PRODUCT, ChangeKind.UPDATE_PRODUCT):
            products[change.key] = product_from_dict(change.after)
        else:
            card = rate_card_from_dict(change.after)
            versions.setdefault(change.key, {})[card.version] = card
    return Catalog(
        products, {key: RateCardHistory(by.values()) for key, by in versions.items() if by}
    )


def next_rate_card_version(current: Catalog, proposed: RateCard) -> Catalog:
    """The desired catalog for `UpdateRateCard`: the proposal as the next version of its card.

    An open-ended latest version that starts before the proposal is closed where it starts,
    the way a scheduled price change is expected to behave.
    """
    existing = current.versions(proposed.key)
    latest = max(existing, key=lambda c: c.version, default=None)
    number = 1 if latest is None else latest.version + 1
    new = _replace(proposed, version=number)
    versions = [c for c in existing if c is not latest]
    if latest is not None:
        if latest.effective_until is None and latest.effective_from < new.effective_from:
            latest = _replace(latest, effective_until=new.effective_from)
        versions.append(latest)
    return Catalog(current.products, {proposed.key: _history([*versions, new], "rate_card")})


def _plan_rate_card(
    key: str,
    stored: Sequence[RateCard],
    declared: Sequence[RateCard],
    now: datetime,
    violations: ViolationCollector,
) -> list[CatalogChange]:
    changes: list[CatalogChange] = []
    stored_by_version = {c.version: c for c in stored}
    for card in sorted(declared, key=lambda c: c.version):
        path = f"rate_cards[{key}].versions[{card.version}]"
        before = stored_by_version.get(card.version)
        if before is None:
            if stored and card.effective_from < now:
                violations.add(
                    f"{path}.effective_from",
                    f"a new version of an existing rate card cannot start in the past"
                    f" (now is {now.isoformat()}); it could re-price rated usage",
                )
            changes.append(
                CatalogChange(
                    ChangeKind.CREATE_RATE_CARD_VERSION,
                    key,
                    card.version,
                    None,
                    rate_card_to_dict(card),
                )
            )
        elif before != card:
            closing = (
                before.effective_until is None
                and card.effective_until is not None
                and _replace(card, effective_until=None) == before
            )
            if not closing:
                violations.add(
                    path,
                    f"version {card.version} of {key!r} is immutable (it may have priced"
                    f" usage); declare version {max(stored_by_version) + 1} instead",
                )
            elif card.effective_until is not None and card.effective_until < now:
                violations.add(
                    f"{path}.effective_until",
                    f"cannot close a version in the past (now is {now.isoformat()})",
                )
            else:
                changes.append(
                    CatalogChange(
                        ChangeKind.CLOSE_RATE_CARD_VERSION,
                        key,
                        card.version,
                        rate_card_to_dict(before),
                        rate_card_to_dict(card),
                    )
                )
    numbers = sorted({*stored_by_version, *(c.version for c in declared)})
    if numbers != list(range(1, len(numbers) + 1)):
        violations.add(
            f"rate_cards[{key}]",
            f"versions must be numbered 1, 2, 3 … without gaps; got {numbers}",
        )
    return changes


def _check_result(
    current: Catalog, changes: Sequence[CatalogChange], products: Mapping[str, Product]
) -> None:
    """The catalog after the plan must be consistent: no overlaps, every price fits its product."""
    try:
        after = apply_plan(current, changes)
    except InvalidArgument as error:
        raise InvalidArgument(error.message, error.violations) from None
    violations = ViolationCollector()
    for key, history in after.rate_cards.items():
        for card in history.versions:
            try:
                validate_rate_card(card, products)
            except InvalidArgument as error:
                for v in error.violations:
                    violations.add(
                        f"rate_cards[{key}].versions[{card.version}].{v.field}", v.description
                    )
    violations.raise_if_any("the catalog change leaves rate cards that do not fit the products")


def _histories(cards: Sequence[tuple[str, RateCard]]) -> dict[str, RateCardHistory]:
    by_key: dict[str, list[RateCard]] = {}
    paths: dict[str, str] = {}
    for path, card in cards:
        by_key.setdefault(card.key, []).append(card)
        paths.setdefault(card.key, path)
    violations = ViolationCollector()
    histories: dict[str, RateCardHistory] = {}
    for key, versions in by_key.items():
        history = _collect(violations, _history, versions, f"rate_cards[{key}]")
        if history is not None:
            histories[key] = history
    violations.raise_if_any("invalid rate card history")
    return histories


def _history(versions: Sequence[RateCard], path: str) -> RateCardHistory:
    try:
        return RateCardHistory(versions)
    except InvalidArgument as error:
        raise InvalidArgument(
            error.message,
            [FieldViolation(f"{path}.{v.field}", v.description) for v in error.violations],
        ) from None


def _replace(card: RateCard, **changes: object) -> RateCard:
    values: dict[str, object] = {
        "key": card.key,
        "version": card.version,
        "effective_from": card.effective_from,
        "effective_until": card.effective_until,
        "pricing_unit": card.pricing_unit,
        "prices": card.prices,
    }
    values.update(changes)
    return RateCard(**values)  # type: ignore[arg-type]


def _section(
    document: Mapping[str, object], name: str, violations: ViolationCollector
) -> Sequence[object]:
    value = document.get(name, [])
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value
    violations.add(name, "must be a list")
    return ()


def _mapping(value: object) -> Mapping[str, object]:
    # A non-mapping entry becomes an empty one, whose missing fields are then reported by path.
    return value if isinstance(value, Mapping) else {}


def _collect(violations: ViolationCollector, build: Callable[..., T], *args: object) -> T | None:
    try:
        return build(*args)
    except InvalidArgument as error:
        violations.violations.extend(error.violations)
        return None
