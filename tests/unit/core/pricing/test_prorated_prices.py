"""Prorated usage prices: tiers and per-period allowances cut to the contract's active share."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from rating_service.core.pricing import (
    Graduated,
    Matrix,
    MatrixCell,
    Package,
    PerUnit,
    Tier,
    Volume,
    build_price_model,
    price_model_to_dict,
)
from rating_service.core.pricing.period_price import price_for_period
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms

D = Decimal
JUNE = (datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC))  # 30 days
JULY = (datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC))  # 31 days

# 100 units at $1, then $0.50; 20 units free, at least $40 and at most $200 a period.
TIERS = (Tier(D(100), D(1)), Tier(None, D("0.5")))
PRORATED = PriceWithTerms(
    Graduated(TIERS),
    PeriodTerms(free_units=D(20), minimum_spend=D(40), maximum_spend=D(200), prorated=True),
)


def test_a_contract_starting_mid_period_gets_a_share_of_each_tier() -> None:
    # Active 16–30 June: 15 of 30 days, so half of every per-period quantity and amount.
    half = price_for_period(PRORATED, JUNE, (datetime(2025, 6, 16, 10, tzinfo=UTC), JUNE[1]))
    assert isinstance(half, PriceWithTerms)
    assert half.model == Graduated((Tier(D(50), D(1)), Tier(None, D("0.5"))))
    assert half.terms == PeriodTerms(
        free_units=D(10), minimum_spend=D(20), maximum_spend=D(100), prorated=False
    )


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("10", "0"),  # the 10 free units (half of 20)
        ("60", "50"),  # 50 billable, the whole (halved) first tier
        ("61", "50.5"),  # 1 unit into the second tier at 0.50
        ("260", "100"),  # 50 + 200 × 0.5 = 150, capped at the halved 100
    ],
)
def test_prorated_totals(quantity: str, total: str) -> None:
    half = price_for_period(PRORATED, JUNE, (datetime(2025, 6, 16, tzinfo=UTC), JUNE[1]))
    assert isinstance(half, PriceWithTerms)
    assert half.period_total(D(quantity)).amount == D(total)


def test_a_whole_period_keeps_the_price() -> None:
    whole = price_for_period(PRORATED, JUNE, JUNE)
    assert isinstance(whole, PriceWithTerms)
    assert whole.model == PRORATED.model
    assert whole.terms.free_units == D(20)


def test_a_share_that_does_not_terminate_is_kept_to_20_places() -> None:
    # Active 22–31 July: 10 of 31 days. 100 × 10 / 31 = 32.258064516129032258064516…
    cut = price_for_period(PRORATED, JULY, (datetime(2025, 7, 22, tzinfo=UTC), JULY[1]))
    assert isinstance(cut, PriceWithTerms) and isinstance(cut.model, Graduated)
    assert cut.model.tiers[0].up_to == D("32.25806451612903225806")


def test_a_contract_ending_mid_period_is_prorated_too() -> None:
    # Active 1–10 June: 10 of 30 days; a volume price's bounds shrink the same way.
    volume = PriceWithTerms(Volume(TIERS), PeriodTerms(prorated=True))
    cut = price_for_period(volume, JUNE, (JUNE[0], datetime(2025, 6, 11, tzinfo=UTC)))
    assert isinstance(cut, PriceWithTerms)
    assert cut.model == Volume((Tier(D("33.33333333333333333333"), D(1)), Tier(None, D("0.5"))))


@pytest.mark.parametrize(
    ("quantity", "total"),
    [
        ("50", "0"),  # the package's own 100 free units, halved
        ("50.5", "5"),  # a started block of 1000
        ("1050", "5"),
        ("1050.5", "10"),
    ],
)
def test_a_prorated_package_halves_its_free_units(quantity: str, total: str) -> None:
    package = PriceWithTerms(Package(D(1000), D(5), D(100)), PeriodTerms(prorated=True))
    half = price_for_period(package, JUNE, (datetime(2025, 6, 16, tzinfo=UTC), JUNE[1]))
    assert isinstance(half, PriceWithTerms)
    assert half.period_total(D(quantity)).amount == D(total)


def test_prices_not_marked_prorated_are_never_cut() -> None:
    plain = PriceWithTerms(Graduated(TIERS), PeriodTerms(free_units=D(20)))
    active = (datetime(2025, 6, 16, tzinfo=UTC), JUNE[1])
    assert price_for_period(plain, JUNE, active) is plain
    assert price_for_period(Graduated(TIERS), JUNE, active) == Graduated(TIERS)


def test_matrix_cells_are_prorated_each_by_its_own_terms() -> None:
    matrix = Matrix(
        ("model",),
        (
            MatrixCell(("small",), PRORATED),
            MatrixCell(("large",), PerUnit(D(3))),
        ),
    )
    cut = price_for_period(matrix, JUNE, (datetime(2025, 6, 16, tzinfo=UTC), JUNE[1]))
    assert isinstance(cut, Matrix)
    small = cut.price_of(("small",))
    assert isinstance(small, PriceWithTerms) and small.terms.free_units == D(10)
    assert cut.price_of(("large",)) == PerUnit(D(3))


def test_terms_round_trip_through_the_dict_form() -> None:
    document = {
        "model": "graduated",
        "tiers": [{"up_to": "100", "unit_price": "1"}, {"up_to": None, "unit_price": "0.5"}],
        "free_units": "20",
        "minimum_spend": "40",
        "maximum_spend": "200",
        "prorated": True,
    }
    assert build_price_model(document) == PRORATED
    assert price_model_to_dict(PRORATED) == document
