"""Invoice lines from a price's period terms: maximum discount, minimum top-up, first-tier fee.

The January invoice (billed 1 February) of a monthly contract, with `gpu-hours` or `tokens`
priced as each test says; usage totals are what the events were charged (Σ T(c + x) − T(c)).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import pytest

from rating_service.core.billing.compose import UsageTotal, compose_invoice
from rating_service.core.billing.invoice import Invoice, LineKind, TierLine
from rating_service.core.billing.postings import finalization_transfers
from rating_service.core.ledger.accounts import overage_account_id, revenue_account_id
from rating_service.core.pricing.catalog import Catalog, catalog_from_document
from tests.unit.core.billing.builders import PRODUCTS, a_contract, inputs_on, usage, utc

D = Decimal
JAN_1 = utc(2025, 1, 1)
FEB_1 = utc(2025, 2, 1)
FEE_TIERS = [
    {"up_to": "10", "unit_price": "1", "flat_fee": "20"},
    {"up_to": None, "unit_price": "0.5"},
]


def catalog_pricing(**prices: Mapping[str, object]) -> Catalog:
    """A catalog whose only rate card prices just these products."""
    card = {
        "key": "standard",
        "version": 1,
        "effective_from": "2020-01-01T00:00:00+00:00",
        "pricing_unit": "USD",
        "prices": prices,
    }
    return catalog_from_document({"products": PRODUCTS, "rate_cards": [card]})


CAPPED = catalog_pricing(
    **{"gpu-hours": {"model": "per_unit", "unit_price": "2", "maximum_spend": "100"}}
)
WITH_MINIMUM = catalog_pricing(
    tokens={"model": "per_unit", "unit_price": "0.5", "minimum_spend": "40"}
)
FEE_AT_ZERO = catalog_pricing(
    **{
        "gpu-hours": {
            "model": "graduated",
            "tiers": FEE_TIERS,
            "first_tier_fee_at_zero": True,
            "minimum_spend": "30",
        }
    }
)


def january(catalog: Catalog, *totals: UsageTotal, term_start: datetime = JAN_1) -> Invoice:
    """The invoice of 1 February: January in arrears."""
    contract = a_contract(term_start=term_start)
    return compose_invoice(inputs_on(contract, FEB_1, catalog=catalog, usage_totals=totals))


def kinds_and_amounts(invoice: Invoice) -> list[tuple[LineKind, str, Decimal]]:
    return [(line.kind, line.key, line.exact_amount) for line in invoice.lines]


@pytest.mark.parametrize(
    ("quantity", "charged", "lines"),
    [
        # 49.5 × 2 = 99: under the maximum, no discount.
        ("49.5", "99", [(LineKind.USAGE, "usage:gpu-hours:[]", D(99))]),
        # 50 × 2 = 100: the maximum exactly, still no discount.
        ("50", "100", [(LineKind.USAGE, "usage:gpu-hours:[]", D(100))]),
        # 60 × 2 = 120 shown, 20 above the maximum taken off: the events were charged 100.
        (
            "60",
            "100",
            [
                (LineKind.USAGE, "usage:gpu-hours:[]", D(120)),
                (LineKind.DISCOUNT, "maximum_spend:gpu-hours:[]", D(-20)),
            ],
        ),
    ],
)
def test_usage_above_the_maximum_shows_as_a_discount(
    quantity: str, charged: str, lines: list[tuple[LineKind, str, Decimal]]
) -> None:
    invoice = january(CAPPED, usage("gpu-hours", quantity, charged, events=3))
    assert kinds_and_amounts(invoice) == lines
    assert invoice.total == D(charged)


@pytest.mark.parametrize(
    ("quantity", "charged", "top_up"),
    [
        (None, None, "40"),  # no usage at all: the whole minimum
        ("60", "30", "10"),  # 30 spent
        ("79.98", "39.99", "0.01"),
        ("80", "40", None),  # the minimum exactly
        ("100", "50", None),
    ],
)
def test_a_minimum_tops_the_spend_up(
    quantity: str | None, charged: str | None, top_up: str | None
) -> None:
    totals = () if quantity is None else (usage("tokens", quantity, charged or "0"),)
    invoice = january(WITH_MINIMUM, *totals)
    top_ups = [line for line in invoice.lines if line.kind is LineKind.MINIMUM_SPEND]
    if top_up is None:
        assert top_ups == []
    else:
        assert [(line.key, line.description, line.exact_amount) for line in top_ups] == [
            ("minimum_spend:tokens:[]", "LLM tokens: minimum spend top-up", D(top_up))
        ]
    assert invoice.total == D(40) if quantity is None or D(charged or 0) < 40 else D(charged or 0)


def test_the_first_tier_fee_is_billed_at_zero_usage() -> None:
    invoice = january(FEE_AT_ZERO)
    # The fee alone (20), topped up to the 30 minimum.
    assert kinds_and_amounts(invoice) == [
        (LineKind.MINIMUM_SPEND, "minimum_spend:gpu-hours:[]", D(10)),
        (LineKind.FEE, "first_tier_fee:gpu-hours:[]", D(20)),
    ]


def test_with_usage_the_fee_stays_its_own_line_and_the_breakdown_explains_the_rest() -> None:
    # 12 hours: T(12) = 20 + 10 × 1 + 2 × 0.5 = 31; the events were charged T(12) − T(0) = 11.
    invoice = january(FEE_AT_ZERO, usage("gpu-hours", "12", "11", events=2))
    assert kinds_and_amounts(invoice) == [
        (LineKind.USAGE, "usage:gpu-hours:[]", D(11)),
        (LineKind.FEE, "first_tier_fee:gpu-hours:[]", D(20)),
    ]
    assert invoice.lines[0].tiers == (
        TierLine("Tier 1", D(10), D(1), D(30)),
        TierLine("Tier 2", D(2), D("0.5"), D(1)),
        TierLine("First tier fee", D(0), D(0), D(-20)),
    )
    assert invoice.total == D(31)


def test_prorated_tiers_and_minimum_follow_the_active_share() -> None:
    # Active 16–31 January: 16 of 31 days. 62 × 16/31 = 32 units in tier 1, minimum 93 → 48.
    catalog = catalog_pricing(
        **{
            "gpu-hours": {
                "model": "graduated",
                "tiers": [
                    {"up_to": "62", "unit_price": "1"},
                    {"up_to": None, "unit_price": "0.5"},
                ],
                "minimum_spend": "93",
                "prorated": True,
            }
        }
    )
    # 40 hours: 32 × 1 + 8 × 0.5 = 36 charged; the breakdown uses the prorated tiers.
    invoice = january(catalog, usage("gpu-hours", "40", "36"), term_start=utc(2025, 1, 16))
    usage_line = invoice.lines[0]
    assert usage_line.tiers == (
        TierLine("Tier 1", D(32), D(1), D(32)),
        TierLine("Tier 2", D(8), D("0.5"), D(4)),
    )
    assert kinds_and_amounts(invoice)[1] == (
        LineKind.MINIMUM_SPEND,
        "minimum_spend:gpu-hours:[]",
        D(12),  # 48 − 36
    )


def test_finalizing_keeps_discounts_with_usage_and_top_ups_with_revenue() -> None:
    capped = january(CAPPED, usage("gpu-hours", "60", "100"))
    moved = {t.credit_account_id: t.amount for t in finalization_transfers(capped)}
    assert moved[overage_account_id("ctr_1")] == D(100)  # 120 − 20: what the events accrued
    topped = january(WITH_MINIMUM, usage("tokens", "60", "30"))
    moved = {t.credit_account_id: t.amount for t in finalization_transfers(topped)}
    assert moved[overage_account_id("ctr_1")] == D(30)
    assert moved[revenue_account_id("ctr_1", "tokens")] == D(10)
