"""The pure pricing core: price models, incremental rating, meters, rate cards and proration.

Nothing here does I/O or imports grpc, sqlalchemy, asyncpg or temporalio. Amounts are exact
Decimals in the rate card's pricing unit, never rounded: rounding to a currency's minor unit
happens once per invoice line (`rating_service.core.money.round_to_minor_unit`).
"""

from rating_service.core.pricing.breakdown import LineItem, PricedAmount, PriceLine
from rating_service.core.pricing.factory import MODEL_NAMES, build_price_model, price_model_to_dict
from rating_service.core.pricing.flat_fee import BillingTiming, FlatFee
from rating_service.core.pricing.graduated import Graduated
from rating_service.core.pricing.incremental import incremental_charge, usage_cell
from rating_service.core.pricing.matrix import CellPriceModel, Matrix, MatrixCell
from rating_service.core.pricing.meter import (
    Measurement,
    Meter,
    Product,
    PropertyFilter,
    UsageEvent,
    product_from_dict,
    product_to_dict,
)
from rating_service.core.pricing.package import Package, PackageRounding
from rating_service.core.pricing.per_unit import PerUnit
from rating_service.core.pricing.percentage import Percentage
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms
from rating_service.core.pricing.proration import prorate, prorated_days
from rating_service.core.pricing.rate_card import (
    RateCard,
    RateCardHistory,
    rate_card_from_dict,
    rate_card_in_force,
    rate_card_to_dict,
    validate_rate_card,
)
from rating_service.core.pricing.seat_fee import SeatFee
from rating_service.core.pricing.tiers import Tier
from rating_service.core.pricing.volume import Volume

__all__ = [
    "MODEL_NAMES",
    "BillingTiming",
    "CellPriceModel",
    "FlatFee",
    "Graduated",
    "LineItem",
    "Matrix",
    "MatrixCell",
    "Measurement",
    "Meter",
    "Package",
    "PackageRounding",
    "PerUnit",
    "Percentage",
    "PeriodTerms",
    "PriceLine",
    "PriceModel",
    "PriceWithTerms",
    "PricedAmount",
    "Product",
    "PropertyFilter",
    "RateCard",
    "RateCardHistory",
    "SeatFee",
    "Tier",
    "UsageEvent",
    "Volume",
    "build_price_model",
    "incremental_charge",
    "price_model_to_dict",
    "product_from_dict",
    "product_to_dict",
    "prorate",
    "prorated_days",
    "rate_card_from_dict",
    "rate_card_in_force",
    "rate_card_to_dict",
    "usage_cell",
    "validate_rate_card",
]
