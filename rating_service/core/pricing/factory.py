"""Price models from plain dicts (a YAML catalog, a proto converted to a dict) and back.

A price mapping holds its model's keys and, for every model but a flat fee and a matrix, the
period terms (`free_units`, `free_amount`, `minimum_spend`, `maximum_spend`, `prorated`,
`first_tier_fee_at_zero`); a price with terms is a `PriceWithTerms`.

Every decimal is read with `parse_decimal` (decimal strings or ints, never floats) and every
problem is reported at once, each under its field path (`tiers[1].up_to`, or
`prices.tokens.cells[3].price.unit_price` when a prefix is given).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from rating_service.core.dict_form import DictReader, join_path
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import format_decimal
from rating_service.core.pricing.breakdown import ZERO
from rating_service.core.pricing.flat_fee import BillingTiming, FlatFee
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.matrix import Matrix, MatrixCell
from rating_service.core.pricing.package import Package, PackageRounding
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_model import PRICE_MODELS, PriceModel
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms, TermedModel
from rating_service.core.pricing.seat_fee import SeatFee
from rating_service.core.pricing.tiers import Tier
from rating_service.core.pricing.volume import Volume

MODEL_NAMES: tuple[str, ...] = tuple(model.MODEL for model in PRICE_MODELS)
"""The accepted values of a price dict's `model` field."""


def build_price_model(data: Mapping[str, object], field_path: str = "") -> PriceModel:
    """Build and validate a price model from its plain-dict form, or raise InvalidArgument.

    `field_path` prefixes every reported field, so a catalog can say where the price sits.
    """
    violations = ViolationCollector()
    model = _build(data, field_path, violations)
    violations.raise_if_any("invalid price model")
    if model is None:  # every failure records a violation first; this is only a guard
        raise InvalidArgument.of_field(field_path or "model", "could not be built")
    return model


def price_model_to_dict(model: PriceModel) -> dict[str, object]:
    """The plain-dict form of a price model; `build_price_model` reads it back to an equal model."""
    if isinstance(model, PriceWithTerms):
        return {**price_model_to_dict(model.model), **_terms_to_dict(model.terms)}
    if isinstance(model, PerUnit):
        return {"model": model.MODEL, "unit_price": format_decimal(model.unit_price)}
    if isinstance(model, FlatFee):
        return {
            "model": model.MODEL,
            "amount": format_decimal(model.amount),
            "timing": str(model.timing),
        }
    if isinstance(model, Graduated | Volume):
        return {"model": model.MODEL, "tiers": [_tier_to_dict(tier) for tier in model.tiers]}
    if isinstance(model, SeatFee):
        return {
            "model": model.MODEL,
            "per_seat": price_model_to_dict(model.per_seat),
            "timing": str(model.timing),
        }
    if isinstance(model, Package):
        data: dict[str, object] = {
            "model": model.MODEL,
            "block_size": format_decimal(model.block_size),
            "block_price": format_decimal(model.block_price),
        }
        if model.free_units:
            data["free_units"] = format_decimal(model.free_units)
        if model.rounding is not PackageRounding.UP:
            data["rounding"] = str(model.rounding)
        return data
    if isinstance(model, Percentage):
        data = {"model": model.MODEL, "rate": format_decimal(model.rate)}
        if model.fixed_fee:
            data["fixed_fee"] = format_decimal(model.fixed_fee)
        if model.minimum is not None:
            data["minimum"] = format_decimal(model.minimum)
        if model.maximum is not None:
            data["maximum"] = format_decimal(model.maximum)
        if model.free_events is not None:
            data["free_events"] = model.free_events
        if model.free_value is not None:
            data["free_value"] = format_decimal(model.free_value)
        return data
    return {
        "model": model.MODEL,
        "dimensions": list(model.dimensions),
        "cells": [
            {
                "match": dict(zip(model.dimensions, cell.values, strict=True)),
                "price": price_model_to_dict(cell.price),
            }
            for cell in model.cells
        ],
    }


def _tier_to_dict(tier: Tier) -> dict[str, object]:
    data: dict[str, object] = {"up_to": None if tier.up_to is None else format_decimal(tier.up_to)}
    if tier.block_size is None:
        data["unit_price"] = format_decimal(tier.unit_price)
    else:
        data["block_size"] = format_decimal(tier.block_size)
        data["block_price"] = format_decimal(tier.unit_price)
    if tier.flat_fee:
        data["flat_fee"] = format_decimal(tier.flat_fee)
    return data


def _terms_to_dict(terms: PeriodTerms) -> dict[str, object]:
    data: dict[str, object] = {}
    for name in terms.given():
        value = getattr(terms, name)
        data[name] = format_decimal(value) if isinstance(value, Decimal) else value
    return data


def _as_dict_field(field: str) -> str:
    # A matrix cell's `values` are written as its `match` mapping in the dict form.
    return _CELL_VALUES.sub(r"\1.match", field)


_CELL_VALUES = re.compile(r"^(cells\[\d+\])\.values$")


def _build(data: object, path: str, violations: ViolationCollector) -> PriceModel | None:
    fields = DictReader(data, path, violations, "price")
    name = fields.raw("model")
    builder = _BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        if isinstance(data, Mapping):
            violations.add(
                fields.at("model"),
                ("is required" if name is None else f"{name!r} is not a price model")
                + f"; expected one of {', '.join(MODEL_NAMES)}",
            )
        return None
    before = len(violations.violations)
    construct = builder(fields)
    terms = None if name in _NO_TERMS else _terms(fields, own_free_units=name == Package.MODEL)
    fields.reject_unknown(f"a {name} price")
    if len(violations.violations) > before or construct is None:
        return None
    try:
        model = construct()
        if terms is None or terms.is_plain:
            return model
        if not isinstance(model, TermedModel):  # pragma: no cover - _NO_TERMS names the others
            raise InvalidArgument.of_field("model", "takes no period terms")
        return PriceWithTerms(model, terms)
    except InvalidArgument as error:
        # The model validates meaning (order, signs, ranges) with paths relative to itself.
        for violation in error.violations:
            violations.add(join_path(path, _as_dict_field(violation.field)), violation.description)
        return None


Construct = Callable[[], PriceModel]

_NO_TERMS = frozenset({FlatFee.MODEL, Matrix.MODEL, SeatFee.MODEL})
"""Models that take no period terms: fees have no usage, a matrix's cells take them."""


def _terms(fields: DictReader, *, own_free_units: bool) -> PeriodTerms | None:
    """The period terms a price mapping gives (free allowances, spend bounds, options)."""
    values: dict[str, object] = {}
    names = ("free_amount", "minimum_spend", "maximum_spend")
    for name in names if own_free_units else ("free_units", *names):
        if fields.has(name):
            values[name] = fields.decimal(name)
        else:
            fields.raw(name)
    for name in ("prorated", "first_tier_fee_at_zero"):
        flag = fields.raw(name)
        if flag is None:
            continue
        if isinstance(flag, bool):
            values[name] = flag
        else:
            fields.violations.add(fields.at(name), f"must be true or false, got {flag!r}")
    if any(value is None for value in values.values()):
        return None
    try:
        return PeriodTerms(**values)  # type: ignore[arg-type]
    except InvalidArgument as error:
        for violation in error.violations:
            fields.violations.add(fields.at(violation.field), violation.description)
        return None


def _per_unit(fields: DictReader) -> Construct | None:
    unit_price = fields.decimal("unit_price")
    if unit_price is None:
        return None
    return lambda: PerUnit(unit_price)


def _flat_fee(fields: DictReader) -> Construct | None:
    amount = fields.decimal("amount")
    timing = _timing(fields, BillingTiming.IN_ARREARS)
    if amount is None or timing is None:
        return None
    return lambda: FlatFee(amount, timing)


def _seat_fee(fields: DictReader) -> Construct | None:
    timing = _timing(fields, BillingTiming.IN_ADVANCE)
    per_seat = _build(fields.raw("per_seat"), fields.at("per_seat"), fields.violations)
    if per_seat is not None and not isinstance(per_seat, PerUnit | Graduated | Volume):
        fields.violations.add(
            fields.at("per_seat.model"), "a seat is priced per_unit, graduated or volume"
        )
        return None
    if per_seat is None or timing is None:
        return None
    return lambda: SeatFee(per_seat, timing)


def _timing(fields: DictReader, default: BillingTiming) -> BillingTiming | None:
    name = fields.raw("timing")
    if name is None:
        return default
    try:
        return BillingTiming(str(name))
    except ValueError:
        fields.violations.add(
            fields.at("timing"), f"{name!r} is not one of {', '.join(BillingTiming)}"
        )
        return None


def _tiers(fields: DictReader) -> list[Tier] | None:
    tiers: list[Tier] = []
    complete = True
    for index, raw in enumerate(fields.required_sequence("tiers")):
        tier = DictReader(raw, fields.at(f"tiers[{index}]"), fields.violations, "a tier")
        up_to = tier.optional_decimal("up_to")
        block_size = tier.optional_decimal("block_size")
        if tier.has("block_size") or tier.has("block_price"):
            # A tier sold in blocks is priced per block: block_size and block_price go together.
            unit_price = tier.decimal("block_price")
            if not tier.has("block_size"):
                tier.violations.add(tier.at("block_size"), "is required with block_price")
                block_size = None
            if tier.has("unit_price"):
                tier.raw("unit_price")
                tier.violations.add(
                    tier.at("unit_price"), "a tier sold in blocks is priced by block_price"
                )
                unit_price = None
        else:
            unit_price = tier.decimal("unit_price")
        flat_fee = tier.decimal("flat_fee", ZERO)
        tier.reject_unknown()
        if (
            unit_price is None
            or flat_fee is None
            or (tier.has("block_size") and block_size is None)
        ):
            complete = False
            continue
        tiers.append(Tier(up_to, unit_price, flat_fee, block_size))
    return tiers if complete else None


def _graduated(fields: DictReader) -> Construct | None:
    tiers = _tiers(fields)
    return None if tiers is None else lambda: Graduated(tuple(tiers))


def _volume(fields: DictReader) -> Construct | None:
    tiers = _tiers(fields)
    return None if tiers is None else lambda: Volume(tuple(tiers))


def _package(fields: DictReader) -> Construct | None:
    block_size = fields.decimal("block_size")
    block_price = fields.decimal("block_price")
    free_units = fields.decimal("free_units", ZERO)
    rounding = fields.choice("rounding", PackageRounding, PackageRounding.UP)
    if block_size is None or block_price is None or free_units is None or rounding is None:
        return None
    return lambda: Package(block_size, block_price, free_units, rounding)


def _percentage(fields: DictReader) -> Construct | None:
    rate = fields.decimal("rate")
    fixed_fee = fields.decimal("fixed_fee", ZERO)
    minimum = fields.optional_decimal("minimum")
    maximum = fields.optional_decimal("maximum")
    free_events = _whole_number(fields, "free_events")
    free_value = fields.optional_decimal("free_value")
    if rate is None or fixed_fee is None or free_events is False:
        return None
    return lambda: Percentage(rate, fixed_fee, minimum, maximum, free_events or None, free_value)


def _whole_number(fields: DictReader, name: str) -> int | bool | None:
    """A whole number given as an int or a decimal string; None if absent, False if bad.

    A count, unlike a price, survives a binary float: a wire Struct carries every number as
    one, so a whole float (2.0) is read as the count it holds.
    """
    value = fields.raw(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number: Decimal | None = Decimal(value)
    elif isinstance(value, float) and value.is_integer():
        number = Decimal(int(value))
    else:
        number = fields.decimal(name)
    if number is None or number != number.to_integral_value() or number < 0:
        if number is not None:
            fields.violations.add(fields.at(name), f"must be a whole number ≥ 0, got {value!r}")
        return False
    return int(number)


def _matrix(fields: DictReader) -> Construct | None:
    dimensions: list[str] = []
    for index, name in enumerate(fields.required_sequence("dimensions")):
        if isinstance(name, str) and name:
            dimensions.append(name)
        else:
            fields.violations.add(fields.at(f"dimensions[{index}]"), "must be a non-empty name")
    cells: list[MatrixCell] = []
    complete = True
    for index, raw in enumerate(fields.required_sequence("cells")):
        cell = DictReader(raw, fields.at(f"cells[{index}]"), fields.violations, "a matrix cell")
        values = _cell_values(cell, dimensions)
        price = _build(cell.raw("price"), cell.at("price"), fields.violations)
        cell.reject_unknown()
        if values is None or price is None:
            complete = False
        elif isinstance(price, Matrix | SeatFee):
            fields.violations.add(
                cell.at("price.model"), f"a matrix cell cannot be a {price.MODEL}"
            )
            complete = False
        else:
            cells.append(MatrixCell(values, price))
    if not complete:
        return None
    return lambda: Matrix(tuple(dimensions), tuple(cells))


def _cell_values(cell: DictReader, dimensions: Sequence[str]) -> tuple[str, ...] | None:
    match = cell.raw("match")
    if not isinstance(match, Mapping):
        cell.violations.add(cell.at("match"), "must map each dimension to a value")
        return None
    values: list[str] = []
    for name in dimensions:
        value = match.get(name)
        if isinstance(value, str) and value:
            values.append(value)
        else:
            cell.violations.add(cell.at(f"match.{name}"), "must be a non-empty string")
    for name in match:
        if name not in dimensions:
            cell.violations.add(
                cell.at(f"match.{name}"),
                f"is not a dimension of this matrix ({', '.join(dimensions)})",
            )
    return tuple(values) if len(values) == len(dimensions) == len(match) else None


_BUILDERS: Mapping[str, Callable[[DictReader], Construct | None]] = {
    PerUnit.MODEL: _per_unit,
    FlatFee.MODEL: _flat_fee,
    Graduated.MODEL: _graduated,
    Volume.MODEL: _volume,
    Package.MODEL: _package,
    Percentage.MODEL: _percentage,
    Matrix.MODEL: _matrix,
    SeatFee.MODEL: _seat_fee,
}
