"""The closed set of price models a rate card can hold."""

from __future__ import annotations

from typing import TypeAlias

from rating_service.core.pricing.flat_fee import FlatFee
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.matrix import CellPriceModel, Matrix
from rating_service.core.pricing.package import Package
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.volume import Volume

PriceModel: TypeAlias = CellPriceModel | Matrix
"""Any price model: per unit, flat fee, graduated, volume, package, percentage or matrix."""

PRICE_MODELS: tuple[type[PriceModel], ...] = (
    PerUnit,
    FlatFee,
    Graduated,
    Volume,
    Package,
    Matrix,
    Percentage,
)
"""Every price model class, each naming itself in its `MODEL` class attribute."""
