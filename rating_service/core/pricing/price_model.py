"""The closed set of price models a rate card can hold."""

from __future__ import annotations

from typing import TypeAlias

from rating_service.core.pricing.flat_fee import FlatFee
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.matrix import CellPriceModel, Matrix
from rating_service.core.pricing.package import Package
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_terms import PriceWithTerms
from rating_service.core.pricing.seat_fee import SeatFee
from rating_service.core.pricing.volume import Volume

PriceModel: TypeAlias = CellPriceModel | Matrix | SeatFee
"""Any price model: per unit, flat fee, graduated, volume, package, percentage, matrix or seat
fee, and any of them but a flat fee, matrix or seat fee with period terms (`PriceWithTerms`)."""

ModelClass: TypeAlias = type[
    PerUnit | FlatFee | Graduated | Volume | Package | Matrix | Percentage | SeatFee
]
"""A price model class, naming itself in its `MODEL` class attribute."""

PRICE_MODELS: tuple[ModelClass, ...] = (
    PerUnit,
    FlatFee,
    Graduated,
    Volume,
    Package,
    Matrix,
    Percentage,
    SeatFee,
)
"""Every price model class, each naming itself in its `MODEL` class attribute."""

PRICE_TYPES: tuple[type[PriceModel], ...] = (*PRICE_MODELS, PriceWithTerms)
"""Every class a price can be: the models, and a model with period terms."""
