"""A price as it stands for one billing period of one contract: prorated where it says so."""

from __future__ import annotations

from datetime import datetime

from rating_service.core.pricing.matrix import Matrix, MatrixCell
from rating_service.core.pricing.price_model import PriceModel
from rating_service.core.pricing.price_terms import PriceWithTerms
from rating_service.core.pricing.prorated_tiers import active_share


def is_prorated(model: PriceModel) -> bool:
    """True when the price (or a cell of it) is prorated to the part of a period."""
    if isinstance(model, PriceWithTerms):
        return model.terms.prorated
    return isinstance(model, Matrix) and any(
        isinstance(cell.price, PriceWithTerms) and cell.price.terms.prorated for cell in model.cells
    )


def price_for_period(
    model: PriceModel, nominal: tuple[datetime, datetime], active: tuple[datetime, datetime]
) -> PriceModel:
    """The price for a contract active over `active` of the billing period `nominal`.

    Only a price marked `prorated` changes (see `prorated_tiers`); every other price, and every
    period the contract is active in whole, keeps the model as it is.
    """
    if not is_prorated(model):
        return model
    if isinstance(model, PriceWithTerms):
        return model.prorated_to(*active_share(nominal, active))
    if isinstance(model, Matrix):
        part, whole = active_share(nominal, active)
        return Matrix(
            model.dimensions,
            tuple(
                MatrixCell(
                    cell.values,
                    cell.price.prorated_to(part, whole)
                    if isinstance(cell.price, PriceWithTerms)
                    else cell.price,
                )
                for cell in model.cells
            ),
        )
    return model
