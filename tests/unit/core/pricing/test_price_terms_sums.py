"""Property: with any period terms, the events' charges and the period fee sum to the period price.

For a price with terms T, rating events x₁…xₙ as T(c + x) − T(c) and adding the fee the
invoice bills once per period, T(0), gives T(Σx) exactly; for a percentage with free events
and free value, the charges sum to the period total of the same events.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from rating_service.core.pricing import (
    Graduated,
    Package,
    Percentage,
    PerUnit,
    Tier,
    Volume,
    incremental_charge,
)
from rating_service.core.pricing.package import PackageRounding
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms
from tests.unit.core.pricing.test_incremental_sums import (
    PROPERTY,
    assert_explained,
    events,
    money,
    tier_lists,
)

D = Decimal


@st.composite
def block_tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    """Tier lists where some tiers are sold in blocks."""
    tiers = draw(tier_lists())
    blocks = draw(
        st.lists(
            st.one_of(st.none(), money(50, 2).filter(lambda d: d > 0)),
            min_size=len(tiers),
            max_size=len(tiers),
        )
    )
    return tuple(
        Tier(tier.up_to, tier.unit_price, tier.flat_fee, block)
        for tier, block in zip(tiers, blocks, strict=True)
    )


quantity_models = st.one_of(
    money(10, 6).map(PerUnit),
    block_tier_lists().map(Graduated),
    block_tier_lists().map(Volume),
    st.builds(
        Package,
        money(100, 2).filter(lambda d: d > 0),
        money(50, 2),
        st.one_of(st.just(D(0)), money(30, 1)),
        st.sampled_from(PackageRounding),
    ),
)


@st.composite
def priced_with_terms(draw: st.DrawFn) -> PriceWithTerms:
    """Any quantity model with any terms that fit it."""
    model = draw(quantity_models)
    low = draw(st.one_of(st.none(), money(200, 2)))
    high = draw(st.one_of(st.none(), money(500, 2)))
    if low is not None and high is not None and high < low:
        low, high = high, low
    terms = PeriodTerms(
        free_units=D(0)
        if isinstance(model, Package)
        else draw(st.one_of(st.just(D(0)), money(30, 1))),
        free_amount=draw(st.one_of(st.just(D(0)), money(100, 2))),
        minimum_spend=low,
        maximum_spend=high,
        first_tier_fee_at_zero=isinstance(model, Graduated | Volume) and draw(st.booleans()),
    )
    return PriceWithTerms(model, terms)


@PROPERTY
@given(price=priced_with_terms(), quantities=events)
def test_charges_and_the_period_fee_sum_to_the_period_price(
    price: PriceWithTerms, quantities: list[Decimal]
) -> None:
    period_to_date = D(0)
    charged = D(0)
    for quantity in quantities:
        charge = incremental_charge(price, period_to_date, quantity)
        assert_explained(charge)
        charged += charge.amount
        period_to_date += quantity
    total = price.period_total(period_to_date)
    assert_explained(total)
    assert price.period_fee() + charged == total.amount
    if price.terms.maximum_spend is not None:
        assert total.amount <= price.terms.maximum_spend


@st.composite
def percentages_with_allowance(draw: st.DrawFn) -> Percentage:
    """Percentage prices with free events and/or free value, and per-event bounds."""
    low = draw(st.one_of(st.none(), money(5, 2)))
    span = draw(st.one_of(st.none(), money(50, 2)))
    return Percentage(
        draw(money(1, 4)),
        draw(st.one_of(st.just(D(0)), money(5, 2))),
        low,
        None if span is None or low is None else low + span,
        draw(st.one_of(st.none(), st.integers(0, 6))),
        draw(st.one_of(st.none(), money(200, 2))),
    )


@PROPERTY
@given(model=percentages_with_allowance(), values=events)
def test_percentage_charges_with_an_allowance_sum_to_the_period_total(
    model: Percentage, values: list[Decimal]
) -> None:
    charged = D(0)
    value_before = D(0)
    for count, value in enumerate(values):
        charge = incremental_charge(model, value_before, value, events_before=count)
        assert_explained(charge)
        # Wholly inside the allowance (a free value of 0 has run out from the start).
        if (
            model.free_events is not None
            and count < model.free_events
            and (model.free_value is None or value_before < model.free_value)
            and (model.free_value is None or value_before + value <= model.free_value)
        ):
            assert charge.amount == 0
        charged += charge.amount
        value_before += value
    assert charged == model.period_total(values).amount
