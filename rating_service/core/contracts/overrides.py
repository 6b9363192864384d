"""Contract overrides: effective-dated changes to a product's price, by product key or product tag.

An override replaces the price (a whole price model), multiplies every amount of it (0.8 = 20%
off), or replaces the tiers of a graduated or volume price. Prices and tiers in an override are
written in the rate card's pricing unit, like the prices they change.

How overrides combine, for one product at one moment (`effective_price`):
1. Only overrides in force count: effective_from ≤ at < effective_until (None = open-ended).
2. Product-key overrides shadow tag overrides: if any override names the product's key, every tag
   override is ignored for it; otherwise the overrides of all its tags count together.
3. Among those, the latest-starting price replacement applies (the later in the contract's list
   on a tie), then the latest-starting tier replacement, on the price the first step left.
4. Then every multiplier multiplies the result, and each other (0.9 and 0.8 give 0.72).
The new model is built through the pricing value objects, so it is validated like any price.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias, TypeVar

from rating_service.core.dict_form import (
    DictReader,
    join_path,
    utc_timestamp,
)
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.money import format_decimal
from rating_service.core.pricing import (
    FlatFee,
    Graduated,
    Matrix,
    MatrixCell,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    Tier,
    Volume,
    build_price_model,
    price_model_to_dict,
)
from rating_service.core.pricing.constraints import priced_exactly, under_prefix
from rating_service.core.pricing.matrix import CellPriceModel
from rating_service.core.pricing.price_model import PRICE_TYPES
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms
from rating_service.core.pricing.seat_fee import SeatFee
from rating_service.core.pricing.tiers import check_tiers

OVERRIDE_DOES_NOT_FIT = "OVERRIDE_DOES_NOT_FIT"
"""FailedPrecondition reason: an override cannot change this product's price (e.g. tiers of a
per-unit price, or a multiplier taking a percentage rate above 100%)."""

ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class ReplacePrice:
    """Use this price model instead of the rate card's."""

    price: PriceModel

    def __post_init__(self) -> None:
        if not isinstance(self.price, PRICE_TYPES):
            raise InvalidArgument.of_field(
                "price", f"must be a price model, got {type(self.price).__name__}"
            )


@dataclass(frozen=True, slots=True)
class Multiply:
    """Multiply every amount of the price by `multiplier` (0.8 = 20% off, 0 = free)."""

    multiplier: Decimal

    def __post_init__(self) -> None:
        value = self.multiplier
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
            raise InvalidArgument.of_field(
                "multiplier", f"must be a finite Decimal ≥ 0, got {value!r}"
            )


@dataclass(frozen=True, slots=True)
class ReplaceTiers:
    """Keep the graduated or volume model, with these tiers instead."""

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        violations = ViolationCollector()
        check_tiers(self.tiers, violations)
        violations.raise_if_any("invalid replacement tiers")


OverrideAction: TypeAlias = ReplacePrice | Multiply | ReplaceTiers
"""What an override does to a price."""

A = TypeVar("A", ReplacePrice, ReplaceTiers)


@dataclass(frozen=True, slots=True)
class Override:
    """One effective-dated override, naming exactly one of a product key or a product tag."""

    product_key: str | None
    tag: str | None
    effective_from: datetime
    effective_until: datetime | None
    action: OverrideAction

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        targets = [name for name in ("product_key", "tag") if getattr(self, name) is not None]
        if len(targets) != 1:
            violations.add("product_key", "name exactly one of product_key or tag")
        for name in targets:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                violations.add(name, "must be a non-empty string")
        start = utc_timestamp(self.effective_from, "effective_from", violations)
        end = (
            None
            if self.effective_until is None
            else utc_timestamp(self.effective_until, "effective_until", violations)
        )
        if start is not None and end is not None and end <= start:
            violations.add("effective_until", "must be after effective_from")
        if not isinstance(self.action, ReplacePrice | Multiply | ReplaceTiers):
            violations.add("action", "must be ReplacePrice, Multiply or ReplaceTiers")
        violations.raise_if_any("invalid override")
        object.__setattr__(self, "effective_from", start)
        object.__setattr__(self, "effective_until", end)

    @classmethod
    def for_product(
        cls,
        product_key: str,
        action: OverrideAction,
        effective_from: datetime,
        effective_until: datetime | None = None,
    ) -> Override:
        """An override of one product."""
        return cls(product_key, None, effective_from, effective_until, action)

    @classmethod
    def for_tag(
        cls,
        tag: str,
        action: OverrideAction,
        effective_from: datetime,
        effective_until: datetime | None = None,
    ) -> Override:
        """An override of every product carrying a tag."""
        return cls(None, tag, effective_from, effective_until, action)

    def is_in_force_at(self, at: datetime) -> bool:
        """effective_from ≤ at < effective_until."""
        return self.effective_from <= at and (
            self.effective_until is None or at < self.effective_until
        )


def overrides_in_force(
    product_key: str,
    product_tags: Iterable[str],
    overrides: Sequence[Override],
    at: datetime,
) -> tuple[Override, ...]:
    """The overrides that decide a product's price at `at`: its own, else its tags', in order."""
    in_force = [override for override in overrides if override.is_in_force_at(at)]
    own = tuple(override for override in in_force if override.product_key == product_key)
    if own:
        return own
    tags = frozenset(product_tags)
    return tuple(override for override in in_force if override.tag in tags)


def effective_price(
    base_model: PriceModel,
    product_key: str,
    product_tags: Iterable[str],
    overrides: Sequence[Override],
    at: datetime,
) -> PriceModel:
    """The price of a product for a contract at `at`: the rate card's, changed by its overrides.

    See the module docstring for how several overrides combine. An override that cannot apply
    to the price (tiers of a per-unit price) is refused with FailedPrecondition
    OVERRIDE_DOES_NOT_FIT rather than ignored.
    """
    chosen = overrides_in_force(product_key, product_tags, overrides, at)
    if not chosen:
        return base_model
    model = base_model
    price = _latest(chosen, ReplacePrice)
    if price is not None:
        model = price.price
    tiers = _latest(chosen, ReplaceTiers)
    if tiers is not None:
        model = _with_tiers(model, tiers.tiers, product_key)
    multipliers = [
        override.action.multiplier for override in chosen if isinstance(override.action, Multiply)
    ]
    factor = priced_exactly(lambda: _product(multipliers), "multiplier")
    if factor != ONE:
        model = _fitting(product_key, lambda: multiplied(model, factor))
    return model


class EffectivePrices:
    """A contract's effective prices, each built once per base price and overrides in force.

    Building a changed price validates it through the pricing value objects (tens of µs), and
    rating needs it for every event: the result depends only on the base model and which of
    the contract's overrides are in force, so it is kept per that pair. A base model is kept
    alive by its entry, so its id cannot be reused by another model while the entry stands.
    """

    __slots__ = ("_built", "_overrides")

    def __init__(self, overrides: Sequence[Override]) -> None:
        self._overrides = tuple(overrides)
        self._built: dict[tuple[int, str, tuple[int, ...]], tuple[PriceModel, PriceModel]] = {}

    def price(
        self, base_model: PriceModel, product_key: str, product_tags: Iterable[str], at: datetime
    ) -> PriceModel:
        """`effective_price` of the base model for this contract's overrides, at `at`."""
        chosen = overrides_in_force(product_key, product_tags, self._overrides, at)
        if not chosen:
            return base_model
        key = (id(base_model), product_key, tuple(id(o) for o in chosen))
        built = self._built.get(key)
        if built is None or built[0] is not base_model:
            if len(self._built) >= _MAX_BUILT_PRICES:
                self._built.clear()  # rate cards changed many times under a long-lived contract
            built = (base_model, effective_price(base_model, product_key, product_tags, chosen, at))
            self._built[key] = built
        return built[1]


_MAX_BUILT_PRICES = 1024
"""Built prices kept per contract: far more than its products × rate-card versions."""


def _latest(overrides: Sequence[Override], kind: type[A]) -> A | None:
    found: tuple[datetime, int, A] | None = None
    for position, override in enumerate(overrides):
        action = override.action
        if isinstance(action, kind):
            candidate = (override.effective_from, position, action)
            if found is None or candidate[:2] >= found[:2]:
                found = candidate
    return None if found is None else found[2]


def _product(factors: Iterable[Decimal]) -> Decimal:
    result = ONE
    for factor in factors:
        result *= factor
    return result


def _with_tiers(model: PriceModel, tiers: tuple[Tier, ...], product_key: str) -> PriceModel:
    if isinstance(model, PriceWithTerms) and isinstance(model.model, Graduated | Volume):
        # The price keeps its period terms (free units, spend bounds, …) with the new tiers.
        inner = _with_tiers(model.model, tiers, product_key)
        assert isinstance(inner, Graduated | Volume)
        return _fitting(product_key, lambda: PriceWithTerms(inner, model.terms))
    if isinstance(model, Graduated):
        return Graduated(tiers)
    if isinstance(model, Volume):
        return Volume(tiers)
    raise _does_not_fit(
        product_key, f"tiers cannot replace a {model.MODEL} price (only graduated or volume)"
    )


def multiplied(model: PriceModel, factor: Decimal) -> PriceModel:
    """The same price with every amount × factor; quantities (bounds, block sizes) unchanged.

    Unit prices, tier unit prices and flat fees, flat fees, block prices, and a percentage's
    rate, fixed fee, minimum and maximum are all multiplied; a matrix multiplies every cell.
    Of the period terms, the free amount and the minimum and maximum spend are amounts and are
    multiplied; free units, free events and free value are quantities and are not.
    """
    if isinstance(model, Matrix):
        return Matrix(
            model.dimensions,
            tuple(
                MatrixCell(cell.values, _cell_multiplied(cell.price, factor))
                for cell in model.cells
            ),
        )
    if isinstance(model, SeatFee):
        per_seat = _cell_multiplied(model.per_seat, factor)
        assert isinstance(per_seat, PerUnit | Graduated | Volume)
        return SeatFee(per_seat, model.timing)
    return _cell_multiplied(model, factor)


def _cell_multiplied(model: CellPriceModel, factor: Decimal) -> CellPriceModel:
    def times(amount: Decimal) -> Decimal:
        return priced_exactly(lambda: amount * factor, "multiplier")

    if isinstance(model, PriceWithTerms):
        inner = _cell_multiplied(model.model, factor)
        assert not isinstance(inner, FlatFee | PriceWithTerms)
        terms = model.terms
        return PriceWithTerms(
            inner,
            PeriodTerms(
                terms.free_units,
                times(terms.free_amount),
                None if terms.minimum_spend is None else times(terms.minimum_spend),
                None if terms.maximum_spend is None else times(terms.maximum_spend),
                terms.prorated,
                terms.first_tier_fee_at_zero,
            ),
        )
    if isinstance(model, PerUnit):
        return PerUnit(times(model.unit_price))
    if isinstance(model, FlatFee):
        return FlatFee(times(model.amount), model.timing)
    if isinstance(model, Graduated | Volume):
        tiers = tuple(
            Tier(tier.up_to, times(tier.unit_price), times(tier.flat_fee), tier.block_size)
            for tier in model.tiers
        )
        return Graduated(tiers) if isinstance(model, Graduated) else Volume(tiers)
    if isinstance(model, Package):
        return Package(model.block_size, times(model.block_price), model.free_units, model.rounding)
    return Percentage(
        times(model.rate),
        times(model.fixed_fee),
        None if model.minimum is None else times(model.minimum),
        None if model.maximum is None else times(model.maximum),
        model.free_events,
        model.free_value,
    )


def _fitting(product_key: str, build: Callable[[], PriceModel]) -> PriceModel:
    try:
        return build()
    except InvalidArgument as error:
        # The rate card's price is valid; only the override can have made it invalid.
        raise _does_not_fit(product_key, error.message) from None


def _does_not_fit(product_key: str, description: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the contract's override of {product_key!r} does not fit its price: {description}",
        reason=OVERRIDE_DOES_NOT_FIT,
        violations=[PreconditionViolation("OVERRIDE", f"products/{product_key}", description)],
        metadata={"product": product_key},
    )


def override_from_dict(data: Mapping[str, object], field_path: str = "") -> Override:
    """Build an override from its plain-dict form, or raise naming every bad field.

    Shape: one of `product_key` or `tag`; `effective_from` (and optionally `effective_until`)
    as ISO-8601 timestamps with an offset; and exactly one of `multiplier` (a decimal string),
    `replace_price` (a price-model dict, as in a rate card) or `replace_tiers` (a tier list).
    """
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "an override")
    product_key = fields.optional_text("product_key")
    tag = fields.optional_text("tag")
    if (product_key is None) == (tag is None) and isinstance(data, Mapping):
        violations.add(fields.at("product_key"), "give exactly one of product_key or tag")
    effective_from = fields.timestamp("effective_from")
    effective_until = fields.optional_timestamp("effective_until")
    action = _action_from_dict(fields)
    fields.reject_unknown()
    violations.raise_if_any("invalid override")
    if effective_from is None or action is None:  # each recorded a violation already
        raise InvalidArgument.of_field(field_path or "override", "is incomplete")
    try:
        return Override(product_key, tag, effective_from, effective_until, action)
    except InvalidArgument as error:
        raise under_prefix(error, field_path) from None


_ACTIONS = ("multiplier", "replace_price", "replace_tiers")


def _action_from_dict(fields: DictReader) -> OverrideAction | None:
    given = [name for name in _ACTIONS if fields.has(name)]
    for name in _ACTIONS:
        fields.raw(name)
    if len(given) != 1:
        if isinstance(fields.data, Mapping) and fields.data:
            fields.violations.add(
                fields.at("multiplier"),
                "give exactly one of multiplier, replace_price or replace_tiers",
            )
        return None
    name = given[0]
    path = fields.at(name)
    try:
        if name == "multiplier":
            multiplier = fields.decimal("multiplier")
            return None if multiplier is None else Multiply(multiplier)
        if name == "replace_price":
            raw = fields.raw("replace_price")
            if not isinstance(raw, Mapping):
                fields.violations.add(path, "must be a price-model mapping with a model field")
                return None
            return ReplacePrice(build_price_model(raw, path))
        return _tiers_from_dict(fields.raw("replace_tiers"), path)
    except InvalidArgument as error:
        if name == "multiplier":
            fields.violations.add(path, error.violations[0].description)
        else:
            fields.violations.violations.extend(error.violations)
        return None


_TIERS_PATH = re.compile(r"^tiers(?=\[|$)")


def _tiers_from_dict(raw: object, path: str) -> ReplaceTiers:
    # The pricing factory reads tiers; its paths say `tiers[…]`, the override says `replace_tiers`.
    try:
        model = build_price_model({"model": Graduated.MODEL, "tiers": raw})
    except InvalidArgument as error:
        raise InvalidArgument(
            error.message,
            [
                type(violation)(
                    _TIERS_PATH.sub(path, violation.field)
                    if _TIERS_PATH.match(violation.field)
                    else join_path(path, violation.field),
                    violation.description,
                )
                for violation in error.violations
            ],
        ) from None
    if not isinstance(model, Graduated):  # pragma: no cover - the factory built what was asked
        raise InvalidArgument.of_field(path, "must be a tier list")
    return ReplaceTiers(model.tiers)


def override_to_dict(override: Override) -> dict[str, object]:
    """The plain-dict form of an override; `override_from_dict` reads it back to an equal one."""
    data: dict[str, object] = (
        {"product_key": override.product_key}
        if override.product_key is not None
        else {"tag": override.tag}
    )
    data["effective_from"] = override.effective_from.isoformat()
    if override.effective_until is not None:
        data["effective_until"] = override.effective_until.isoformat()
    action = override.action
    if isinstance(action, Multiply):
        data["multiplier"] = format_decimal(action.multiplier)
    elif isinstance(action, ReplacePrice):
        data["replace_price"] = price_model_to_dict(action.price)
    else:
        data["replace_tiers"] = price_model_to_dict(Graduated(action.tiers))["tiers"]
    return data
