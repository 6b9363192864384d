"""Property: the incremental charges of a period add up exactly to the period total.

For any model P and any sequence of event quantities x₁…xₙ, rating each event as
P(c + x) − P(c) and summing gives P(Σx) − P(0) with no rounding anywhere (P(0) is 0 for every
usage model; it is the fee itself for a flat fee). For percentage, Σ charges = Σ event prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_service.core.pricing import (
    BillingTiming,
    FlatFee,
    Graduated,
    Matrix,
    MatrixCell,
    Package,
    Percentage,
    PerUnit,
    PricedAmount,
    Tier,
    Volume,
    incremental_charge,
    usage_cell,
)
from rating_service.core.pricing.matrix import CellPriceModel

D = Decimal
PROPERTY = settings(max_examples=200, deadline=None)


def money(max_value: int, places: int) -> st.SearchStrategy[Decimal]:
    """Non-negative decimals with at most `places` decimal places."""
    return st.decimals(min_value=0, max_value=max_value, places=places)


# Whole units (which hit tier bounds exactly), fractions, and the odd big event.
quantities = st.one_of(
    st.integers(min_value=0, max_value=12).map(Decimal),
    money(40, 3),
    st.integers(min_value=0, max_value=5000).map(Decimal),
)
events = st.lists(quantities, min_size=0, max_size=40)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    """1 to 5 contiguous tiers with ascending bounds, the last open."""
    bounds = sorted(
        draw(
            st.sets(
                st.one_of(st.integers(1, 60).map(Decimal), money(60, 2).filter(lambda d: d > 0)),
                max_size=4,
            )
        )
    )
    prices = draw(st.lists(money(20, 4), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    fees = draw(
        st.lists(
            st.one_of(st.just(D(0)), money(10, 2)),
            min_size=len(bounds) + 1,
            max_size=len(bounds) + 1,
        )
    )
    uppers: list[Decimal | None] = [*bounds, None]
    return tuple(Tier(up, price, fee) for up, price, fee in zip(uppers, prices, fees, strict=True))


quantity_models: st.SearchStrategy[CellPriceModel] = st.one_of(
    money(10, 6).map(PerUnit),
    tier_lists().map(Graduated),
    tier_lists().map(Volume),
    st.builds(
        Package,
        money(100, 2).filter(lambda d: d > 0),
        money(50, 2),
        st.one_of(st.just(D(0)), money(30, 1)),
    ),
    st.builds(FlatFee, money(100, 2), st.sampled_from(BillingTiming)),
)


def percentages() -> st.SearchStrategy[Percentage]:
    """Percentage models, with and without fixed fee, minimum and maximum."""
    return st.builds(
        lambda rate, fee, low, span: Percentage(
            rate, fee, low, None if span is None or low is None else low + span
        ),
        money(1, 4),
        st.one_of(st.just(D(0)), money(5, 2)),
        st.one_of(st.none(), money(5, 2)),
        st.one_of(st.none(), money(50, 2)),
    )


def assert_explained(priced: PricedAmount) -> None:
    """The breakdown adds up to the amount and each line is quantity × unit price + flat fee."""
    assert sum((line.amount for line in priced.lines), D(0)) == priced.amount
    for line in priced.lines:
        assert line.amount == line.quantity * line.unit_price + line.flat_fee


@PROPERTY
@given(model=quantity_models, quantities=events)
def test_charges_sum_to_the_period_total(model: CellPriceModel, quantities: list[Decimal]) -> None:
    assert not isinstance(model, Percentage)
    period_to_date = D(0)
    charged = D(0)
    for quantity in quantities:
        charge = incremental_charge(model, period_to_date, quantity)
        assert_explained(charge)
        charged += charge.amount
        period_to_date += quantity
    zero = model.period_total(D(0)).amount
    assert charged == model.period_total(period_to_date).amount - zero
    if not isinstance(model, FlatFee):
        assert zero == 0


@PROPERTY
@given(tiers=tier_lists(), quantities=events)
def test_graduated_and_volume_agree_on_the_first_tier(
    tiers: tuple[Tier, ...], quantities: list[Decimal]
) -> None:
    # Within the first tier both models price every unit at its price plus its flat fee.
    total = sum(quantities, D(0))
    bound = tiers[0].up_to
    if total and (bound is None or total <= bound):
        assert Graduated(tiers).period_total(total) == Volume(tiers).period_total(total)


# (value of the event, its charge), event after event in one period.
TAKE_RATE_EVENTS = [
    ("0", "1"),  # 0 × 0.2 + 0.30 = 0.30, lifted to the 1.00 minimum
    ("3.55", "1.01"),  # 3.55 × 0.2 + 0.30 = 0.71 + 0.30
    ("100", "20.30"),  # 100 × 0.2 + 0.30 = 20 + 0.30
    ("1000", "50"),  # 1000 × 0.2 + 0.30 = 200.30, cut to the 50 maximum
    ("2.5", "1"),  # 2.5 × 0.2 + 0.30 = 0.80, lifted to the minimum again
]
# 1 + 1.01 + 20.30 + 50 + 1 = 73.31; one price of the summed value, 1106.05, would be 50.
TAKE_RATE_TOTAL = "73.31"

SHARE_EVENTS = [
    ("10", "0.35"),  # 10 × 0.035
    ("0.01", "0.00035"),  # 0.01 × 0.035: kept exact, never rounded per event
    ("123.456", "4.32096"),  # 123.456 × 0.035
]
# 0.35 + 0.00035 + 4.32096 = 4.67131
SHARE_TOTAL = "4.67131"


@pytest.mark.parametrize(
    ("model", "events", "total"),
    [
        # 20% of the value + 0.30 per event, at least 1 and at most 50 per event.
        (Percentage(D("0.2"), D("0.30"), D(1), D(50)), TAKE_RATE_EVENTS, TAKE_RATE_TOTAL),
        # A plain 3.5% share: no fee, no bounds.
        (Percentage(D("0.035")), SHARE_EVENTS, SHARE_TOTAL),
    ],
    ids=["take-rate-clamped", "plain-share"],
)
def test_percentage_charges_are_each_event_s_own_price_and_sum_to_the_period_total(
    model: Percentage, events: list[tuple[str, str]], total: str
) -> None:
    period_to_date = D(0)
    charged = D(0)
    for value, price in events:
        # What came before in the period must not change an event's charge.
        charge = incremental_charge(model, period_to_date, D(value))
        assert charge.amount == D(price), value
        assert_explained(charge)
        charged += charge.amount
        period_to_date += D(value)
    assert charged == D(total)
    period_total = model.period_total([D(value) for value, _ in events])
    assert period_total.amount == D(total)
    assert_explained(period_total)


def clamped_share(model: Percentage, value: Decimal) -> Decimal:
    """The spec of one event's price, written out here: value × rate + fee, then the bounds."""
    price = value * model.rate + model.fixed_fee
    if model.minimum is not None:
        price = max(price, model.minimum)
    if model.maximum is not None:
        price = min(price, model.maximum)
    return price


@PROPERTY
@given(model=percentages(), values=events)
def test_percentage_charges_sum_to_the_event_prices(
    model: Percentage, values: list[Decimal]
) -> None:
    charged = D(0)
    period_to_date = D(0)
    for value in values:
        charge = incremental_charge(model, period_to_date, value)
        assert_explained(charge)
        assert charge.amount == clamped_share(model, value)
        charged += charge.amount
        period_to_date += value
    expected = sum((clamped_share(model, value) for value in values), D(0))
    assert charged == expected
    assert model.period_total(values).amount == expected
    assert_explained(model.period_total(values))


@st.composite
def matrices(draw: st.DrawFn) -> Matrix:
    """A 2 × 2 matrix (model × token_type) whose cells are any non-matrix models."""
    cells = [
        MatrixCell((model, token_type), draw(st.one_of(quantity_models, percentages())))
        for model in ("small", "large")
        for token_type in ("input", "output")
    ]
    return Matrix(("model", "token_type"), tuple(cells))


@PROPERTY
@given(
    matrix=matrices(),
    stream=st.lists(st.tuples(st.integers(0, 3), quantities), max_size=40),
)
def test_matrix_charges_sum_to_the_period_total_cell_by_cell(
    matrix: Matrix, stream: Sequence[tuple[int, Decimal]]
) -> None:
    period_to_date: dict[tuple[str, ...], Decimal] = {}
    events_by_cell: dict[tuple[str, ...], list[Decimal]] = {
        cell.values: [] for cell in matrix.cells
    }
    charged = D(0)
    for cell_index, quantity in stream:
        model, token_type = matrix.cells[cell_index].values
        dimensions = {"model": model, "token_type": token_type}
        key = usage_cell(matrix, dimensions)
        charge = incremental_charge(matrix, period_to_date.get(key, D(0)), quantity, dimensions)
        assert_explained(charge)
        assert all(line.cell == key for line in charge.lines)
        charged += charge.amount
        period_to_date[key] = period_to_date.get(key, D(0)) + quantity
        events_by_cell[key].append(quantity)
    total = matrix.period_total(events_by_cell)
    # A flat-fee cell costs its fee with no usage at all; usage adds nothing to it.
    before_any_usage = matrix.period_total({cell: [] for cell in events_by_cell})
    assert charged == total.amount - before_any_usage.amount
    assert_explained(total)
