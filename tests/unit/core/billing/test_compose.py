"""Invoice composition from a closed period: usage, credits, the whole invoice (pure).

Fees, commits and the true-up are in test_compose_charges.py.

The test catalog (see builders) prices `platform` at 310.00 a period in advance, `support` at
90.00 a period in arrears, `tokens` at 0.000002 per unit, `gpu-hours` with Stripe's graduated
tiers and `images` per quality (standard 0.04, hd 0.08).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating_service.core.billing.compose import (
    InvoiceInputs,
    UsageTotal,
    compose_invoice,
    describe_pool,
)
from rating_service.core.billing.invoice import (
    Invoice,
    InvoiceLine,
    LineKind,
    PoolBalance,
    TierLine,
)
from rating_service.core.contracts import Multiply, Override, ReplacePrice
from rating_service.core.pricing import FlatFee, Package
from tests.unit.core.billing.builders import (
    POSTPAID,
    PREPAID,
    STUB,
    T0,
    a_catalog,
    a_contract,
    a_pool,
    inputs_on,
    lines_of,
    rows,
    summary,
    usage,
    utc,
    version,
    walk,
)

D = Decimal
SECOND = timedelta(seconds=1)
CENT = Decimal("0.01")


# ---------------------------------------------------------------- usage lines


@pytest.mark.parametrize(
    ("total", "exact", "rounded"),
    [
        # The counters' exact amounts, whatever quantity × price would give: aggregation.
        (usage("tokens", "1234567", "2.469134"), "2.469134", "2.47"),
        (usage("tokens", "1", "0.125", events=3), "0.125", "0.13"),  # half up, not 0.12
        (usage("tokens", "1", "0.005"), "0.005", "0.01"),
        (usage("tokens", "1", "0.00499"), "0.00499", "0.00"),
        (usage("tokens", "1", "123.454999999999"), "123.454999999999", "123.45"),
        (usage("images", "3", "0.24", "hd"), "0.24", "0.24"),
    ],
)
def test_a_usage_line_is_the_counted_amount_rounded_once(
    total: UsageTotal, exact: str, rounded: str
) -> None:
    invoice = compose_invoice(inputs_on(a_contract(), utc(2025, 2, 1), usage_totals=(total,)))
    [line] = lines_of(invoice, LineKind.USAGE)
    assert line.exact_amount == D(exact)
    assert str(line.amount) == rounded
    assert line.quantity == total.quantity
    assert line.events == total.events
    assert line.product_key == total.product_key
    assert (line.service_start, line.service_end) == (utc(2025, 1, 1), utc(2025, 2, 1))


@pytest.mark.parametrize(
    ("total", "description", "unit_price", "tiers"),
    [
        pytest.param(
            # Stripe: 5 × 7 + 1 × 6.50 = 41.50
            usage("gpu-hours", "6", "41.50"),
            "GPU hours",
            None,
            [("Tier 1", "5", "7", "35"), ("Tier 2", "1", "6.50", "6.50")],
            id="graduated 6 units",
        ),
        pytest.param(
            # Stripe: 5 × 7 + 5 × 6.50 + 10 × 6 = 127.50
            usage("gpu-hours", "20", "127.50"),
            "GPU hours",
            None,
            [
                ("Tier 1", "5", "7", "35"),
                ("Tier 2", "5", "6.50", "32.50"),
                ("Tier 3", "10", "6", "60"),
            ],
            id="graduated 20 units",
        ),
        pytest.param(
            # 1,234,567 × 0.000002 = 2.469134: one price explains it
            usage("tokens", "1234567", "2.469134"),
            "LLM tokens",
            "0.000002",
            [("Units", "1234567", "0.000002", "2.469134")],
            id="per unit",
        ),
        pytest.param(
            usage("images", "3", "0.24", "hd"),  # 3 × 0.08
            "Images · hd",
            "0.08",
            [("Units", "3", "0.08", "0.24")],
            id="matrix cell",
        ),
        pytest.param(
            # 1,000,000 × 0.000002 = 2.00, but 2.50 was charged: the price changed mid-period.
            usage("tokens", "1000000", "2.50"),
            "LLM tokens",
            None,
            [],
            id="amount a single price does not explain",
        ),
        pytest.param(
            usage("images", "3", "0.24", "ultra"),  # a cell the price does not know
            "Images · ultra",
            None,
            [],
            id="unpriced cell",
        ),
        pytest.param(
            usage("unknown-product", "3", "1.00"),  # named by its key, no breakdown
            "unknown-product",
            None,
            [],
            id="product not in the catalog",
        ),
    ],
)
def test_usage_breakdown_when_one_price_explains_the_period(
    total: UsageTotal,
    description: str,
    unit_price: str | None,
    tiers: list[tuple[str, str, str, str]],
) -> None:
    invoice = compose_invoice(inputs_on(a_contract(), utc(2025, 2, 1), usage_totals=(total,)))
    [line] = lines_of(invoice, LineKind.USAGE)
    assert line.description == description
    assert line.unit_price == (None if unit_price is None else D(unit_price))
    assert [
        (t.description, str(t.quantity), str(t.unit_price), str(t.amount)) for t in line.tiers
    ] == tiers
    if line.tiers:
        assert sum(t.amount for t in line.tiers) == line.exact_amount


def test_breakdown_uses_the_contract_s_override() -> None:
    # 20% off tokens: 1,000,000 × 0.0000016 = 1.60
    contract = a_contract(overrides=(Override.for_product("tokens", Multiply(D("0.8")), T0),))
    totals = (usage("tokens", "1000000", "1.6"),)
    [line] = lines_of(
        compose_invoice(inputs_on(contract, utc(2025, 2, 1), usage_totals=totals)), LineKind.USAGE
    )
    assert line.unit_price == D("0.0000016")
    assert [t.amount for t in line.tiers] == [D("1.6")]


def test_a_package_block_price_is_no_unit_price() -> None:
    # 2,500,000 tokens in blocks of 1,000,000 at 1.50: 3 blocks = 4.50; 1.50 per token is wrong.
    package = Package(D(1_000_000), D("1.50"))
    contract = a_contract(overrides=(Override.for_product("tokens", ReplacePrice(package), T0),))
    totals = (usage("tokens", "2500000", "4.50"),)
    [line] = lines_of(
        compose_invoice(inputs_on(contract, utc(2025, 2, 1), usage_totals=totals)), LineKind.USAGE
    )
    assert line.tiers == (TierLine("Blocks", D(3), D("1.50"), D("4.50")),)
    assert line.unit_price is None
    assert line.quantity == D(2_500_000)


def test_breakdown_is_read_at_the_end_of_the_period() -> None:
    # Tokens cost 0.000003 from 10 January: usage all at the new price is explained by it,
    # usage straddling the change (1,000,000 at 9/31 old, 22/31 new, say 2.70) is not.
    catalog = a_catalog(
        version(1, utc(2020, 1, 1), utc(2025, 1, 10)),
        version(2, utc(2025, 1, 10), token_price="0.000003"),
    )

    def line_for(amount: str) -> InvoiceLine:
        totals = (usage("tokens", "1000000", amount),)
        invoice = compose_invoice(
            inputs_on(a_contract(), utc(2025, 2, 1), catalog=catalog, usage_totals=totals)
        )
        [line] = lines_of(invoice, LineKind.USAGE)
        return line

    assert line_for("3").unit_price == D("0.000003")
    assert line_for("2.70").tiers == ()
    assert line_for("2.70").unit_price is None


def test_custom_pricing_unit_breakdown_is_in_the_invoice_currency() -> None:
    # Prices in credits worth 0.01 USD: 6 GPU hours = 41.50 credits = 0.415 USD.
    credits = {
        "custom_unit": "credits",
        "invoice_currency": "USD",
        "rate_to_invoice_currency": "0.01",
    }
    catalog = a_catalog(version(1, utc(2020, 1, 1), pricing_unit=credits))
    totals = (usage("gpu-hours", "6", "0.415"),)
    invoice = compose_invoice(
        inputs_on(a_contract(), utc(2025, 2, 1), catalog=catalog, usage_totals=totals)
    )
    [line] = lines_of(invoice, LineKind.USAGE)
    assert str(line.amount) == "0.42"
    assert line.tiers == (
        TierLine("Tier 1", D(5), D("0.07"), D("0.35")),
        TierLine("Tier 2", D(1), D("0.065"), D("0.065")),
    )
    # The fees convert too: 310 credits in advance = 3.10 USD, 90 in arrears = 0.90 USD.
    assert [line.exact_amount for line in lines_of(invoice, LineKind.FEE)] == [
        D("0.90"),
        D("3.10"),
    ]


def test_usage_lines_skip_empty_totals_and_keep_zero_priced_events() -> None:
    totals = (
        usage("tokens", "0", "0", events=0),  # nothing happened
        usage("platform", "4", "0", events=4),  # events of a flat-fee product cost nothing
    )
    invoice = compose_invoice(inputs_on(a_contract(), utc(2025, 2, 1), usage_totals=totals))
    [line] = lines_of(invoice, LineKind.USAGE)
    assert (line.key, line.amount, line.events) == ("usage:platform:[]", D(0), 4)
    assert not line.tiers


def test_usage_lines_are_sorted_by_product_then_cell() -> None:
    totals = (
        usage("tokens", "1", "0.000002"),
        usage("images", "1", "0.04", "standard"),
        usage("images", "1", "0.08", "hd"),
        usage("gpu-hours", "1", "7"),
    )
    invoice = compose_invoice(inputs_on(a_contract(), utc(2025, 2, 1), usage_totals=totals))
    assert [line.key for line in lines_of(invoice, LineKind.USAGE)] == [
        "usage:gpu-hours:[]",
        'usage:images:["hd"]',
        'usage:images:["standard"]',
        "usage:tokens:[]",
    ]


def test_the_opening_invoice_bills_no_usage_or_credits() -> None:
    invoice = compose_invoice(
        inputs_on(
            a_contract(),
            T0,
            usage_totals=(usage("tokens", "1", "5"),),
            drawn={"promo": D(5)},
            pools=(a_pool("promo"),),
        )
    )
    assert lines_of(invoice, LineKind.USAGE) == lines_of(invoice, LineKind.CREDIT) == []


# ---------------------------------------------------------------- credits and overage

POOLS = (
    a_pool("promo", "50", created_seq=0),
    a_pool("bought", "100", cost_basis="1", created_seq=1),
    a_pool("pc", "1000", kind=PREPAID, cost_basis="0.9", created_seq=2, balance="400"),
    a_pool("min", "500", kind=POSTPAID, created_seq=3),
)


@pytest.mark.parametrize(
    ("pool_id", "name"),
    [
        ("promo", "Promotional credit promo"),
        ("bought", "Purchased credit bought"),
        ("pc", "Prepaid commit pc"),
        ("min", "Postpaid commit min"),
    ],
)
def test_describe_pool(pool_id: str, name: str) -> None:
    assert describe_pool(next(p for p in POOLS if p.pool_id == pool_id)) == name


def test_credit_lines_are_negative_per_pool_drawn() -> None:
    drawn = {
        "promo": D(10),
        "bought": D("5.555"),  # −5.555 rounds to −5.56, half up away from zero
        "pc": D(20),
        "ghost": D(3),  # not one of the contract's pools: nothing to name, no line
        "min": D(0),  # drew nothing: no line
    }
    totals = (usage("tokens", "20000000", "40"),)
    invoice = compose_invoice(
        inputs_on(a_contract(), utc(2025, 2, 1), usage_totals=totals, drawn=drawn, pools=POOLS)
    )
    credits = lines_of(invoice, LineKind.CREDIT)
    assert summary(credits) == rows(
        [
            ("credit:bought", "Purchased credit bought applied", "-5.555", "-5.56"),
            ("credit:pc", "Prepaid commit pc applied", "-20", "-20.00"),
            ("credit:promo", "Promotional credit promo applied", "-10", "-10.00"),
        ]
    )
    assert all((ln.service_start, ln.service_end) == (T0, utc(2025, 2, 1)) for ln in credits)
    # The overage is what the pools did not pay: 40 − 35.555 = 4.445 exactly.
    assert invoice.subtotal(LineKind.USAGE, LineKind.CREDIT) == D("40") - D("35.56")
    usage_and_credits = [ln for ln in invoice.lines if ln.kind in (LineKind.USAGE, LineKind.CREDIT)]
    assert sum(ln.exact_amount for ln in usage_and_credits) == D("4.445")


def test_balances_list_the_drawable_pools_in_creation_order() -> None:
    invoice = compose_invoice(inputs_on(a_contract(), utc(2025, 2, 1), pools=POOLS[::-1]))
    assert invoice.balances == (
        PoolBalance("promo", "Promotional credit promo", D(50), None),
        PoolBalance("bought", "Purchased credit bought", D(100), None),
        PoolBalance("pc", "Prepaid commit pc", D(400), None),
    )


# ---------------------------------------------------------------- the whole invoice


def test_invoice_header_on_each_kind_of_date() -> None:
    opening = compose_invoice(inputs_on(STUB, utc(2025, 1, 15)))
    regular = compose_invoice(inputs_on(STUB, utc(2025, 2, 1), revision=1))
    final = compose_invoice(inputs_on(STUB, utc(2025, 3, 10)))
    assert opening.invoice_id == "inv_ctr_1_20250115T000000Z"
    assert (opening.period_start, opening.period_end) == (utc(2025, 1, 15), utc(2025, 2, 1))
    assert regular.invoice_id == "inv_ctr_1_20250201T000000Z-r1"
    assert regular.revision == 1
    assert (regular.period_start, regular.period_end) == (utc(2025, 1, 15), utc(2025, 2, 1))
    assert (final.period_start, final.period_end) == (utc(2025, 3, 1), utc(2025, 3, 10))
    assert (final.tenant_id, final.contract_id, final.customer_id) == ("tnt_1", "ctr_1", "cus_1")
    assert final.currency.code == "USD"
    assert final.billing_date == utc(2025, 3, 10)
    assert final.number is None and final.issued_at is None


def test_lines_come_in_the_documented_order() -> None:
    pools = (
        a_pool("promo", "50"),
        a_pool("pc", "100", kind=PREPAID, cost_basis="1", starts_at=utc(2025, 1, 20)),
        a_pool("min", "1000", kind=POSTPAID),
    )
    invoice = compose_invoice(
        inputs_on(
            STUB,
            utc(2025, 3, 10),
            usage_totals=(usage("tokens", "1", "3"), usage("gpu-hours", "1", "7")),
            drawn={"promo": D(5)},
            pools=pools,
            term_usage={"tokens": D(100)},
        )
    )
    assert [line.kind for line in invoice.lines] == [
        LineKind.USAGE,
        LineKind.USAGE,
        LineKind.CREDIT,
        LineKind.FEE,
        LineKind.COMMIT,
        LineKind.TRUE_UP,
    ]
    regular = compose_invoice(inputs_on(STUB, utc(2025, 2, 1)))
    assert [line.product_key for line in regular.lines] == ["support", "platform"]  # arrears first
    # 3 + 7 − 5 + 90 × 9/31 + 100 + (1000 − 100)
    assert invoice.exact_total == D("1005") + D("26.12903225806451612903")
    assert invoice.total == D("1005") + D("26.13")


def test_line_keys_are_unique_within_an_invoice() -> None:
    catalog = a_catalog(
        version(1, utc(2020, 1, 1), utc(2025, 1, 10)),
        version(2, utc(2025, 1, 10), support_fee="100", platform_fee="400"),
    )
    invoice = compose_invoice(
        inputs_on(
            a_contract(),
            utc(2025, 2, 1),
            catalog=catalog,
            usage_totals=(
                usage("images", "1", "0.04", "standard"),
                usage("images", "1", "1", "hd"),
            ),
            drawn={"promo": D(1)},
            pools=(a_pool("promo"), a_pool("pc", kind=PREPAID, cost_basis="1")),
        )
    )
    keys = [line.key for line in invoice.lines]
    assert len(keys) == len(set(keys)) == 7


# ---------------------------------------------------------------- the exact-total property

money = st.decimals(min_value=0, max_value=100_000, places=6, allow_nan=False, allow_infinity=False)
fee_amounts = st.decimals(min_value=0, max_value=10_000, places=4).map(str)
products_and_cells = st.sampled_from(
    [("tokens", ()), ("gpu-hours", ()), ("images", ("standard",)), ("images", ("hd",))]
)


@st.composite
def invoice_inputs(draw: st.DrawFn) -> InvoiceInputs:
    """Random inputs on a random billing date of a random monthly contract, anchor day 1."""
    start = utc(2025, draw(st.integers(1, 12)), draw(st.integers(1, 28)), draw(st.integers(0, 23)))
    length = draw(st.one_of(st.none(), st.integers(1, 400).map(lambda d: timedelta(days=d))))
    contract = a_contract(term_start=start, term_end=None if length is None else start + length)
    dates = walk(contract, limit=15)
    when = dates[draw(st.integers(0, len(dates) - 1))]
    catalog = a_catalog(
        version(1, utc(2020, 1, 1), platform_fee=draw(fee_amounts), support_fee=draw(fee_amounts))
    )
    totals = draw(
        st.dictionaries(
            products_and_cells, st.tuples(money, money, st.integers(0, 10**6)), max_size=4
        )
    )
    usage_totals = tuple(
        UsageTotal(key, cell, quantity, amount, events)
        for (key, cell), (quantity, amount, events) in totals.items()
    )
    pc_start = start + timedelta(days=draw(st.integers(0, 60)))
    pools = (
        a_pool("promo", "50", created_seq=0),
        a_pool("bought", "100", cost_basis="1", created_seq=1),
        a_pool(
            "pc",
            str(draw(money)),
            kind=PREPAID,
            cost_basis=str(draw(st.decimals(min_value=0, max_value=1, places=4))),
            starts_at=pc_start,
            created_seq=2,
        ),
        a_pool(
            "min",
            str(draw(money)),
            kind=POSTPAID,
            scope=draw(st.sampled_from([None, frozenset({"tokens"})])),
            created_seq=3,
        ),
    )
    drawn = draw(st.dictionaries(st.sampled_from(["promo", "bought", "pc", "ghost"]), money))
    term_usage = draw(st.dictionaries(st.sampled_from(["tokens", "gpu-hours", "images"]), money))
    return InvoiceInputs(
        "tnt_1",
        contract,
        when,
        catalog,
        usage_totals,
        drawn,
        pools,
        draw(st.sampled_from([frozenset(), frozenset({"pc"})])),
        term_usage,
    )


# A prorated fee that does not terminate (310 × 9/31) is kept to 20 places, rounded half up.
HALF_A_UNIT_IN_THE_LAST_PLACE = Fraction(1, 2 * 10**20)


def fee_for(fee: Decimal, period: tuple[datetime, datetime] | None) -> Fraction:
    """A monthly fee for `period`: fee × its UTC days ÷ the days of its calendar month.

    Worked out here from the rule (whole UTC days, half-open), exactly as a fraction, so the
    composer's own proration is checked rather than reused.
    """
    if period is None:
        return Fraction(0)
    first, stop = (moment.astimezone(UTC).date() for moment in period)
    days_in_month = calendar.monthrange(first.year, first.month)[1]
    return Fraction(fee) * (stop - first).days / days_in_month


def billed(invoice: Invoice, product_key: str) -> Fraction:
    """What the invoice's fee lines of one product add up to, exactly."""
    return sum(
        (Fraction(line.exact_amount) for line in invoice.lines if line.product_key == product_key),
        Fraction(0),
    )


@settings(max_examples=300, deadline=None)
@given(inputs=invoice_inputs())
def test_exact_total_is_usage_less_credits_plus_charges(inputs: InvoiceInputs) -> None:
    invoice = compose_invoice(inputs)
    when = inputs.date
    known = {pool.pool_id: pool for pool in inputs.pools}
    prices = inputs.catalog.versions("standard")[0].prices
    platform, support = prices["platform"], prices["support"]
    assert isinstance(platform, FlatFee) and isinstance(support, FlatFee)
    commit, minimum = known["pc"], known["min"]
    billed_usage = D(0)
    billed_credit = D(0)
    if when.arrears is not None:
        billed_usage = sum((u.amount for u in inputs.usage), D(0))
        billed_credit = sum((a for p, a in (inputs.drawn or {}).items() if p in known), D(0))
    support_fee = fee_for(support.amount, when.arrears)
    platform_fee = fee_for(platform.amount, when.advance)
    # Each fee line is its prorated fee, to within its last kept place.
    assert abs(billed(invoice, "support") - support_fee) <= HALF_A_UNIT_IN_THE_LAST_PLACE
    assert abs(billed(invoice, "platform") - platform_fee) <= HALF_A_UNIT_IN_THE_LAST_PLACE
    commits = D(0)
    if commit.starts_at <= when.at and "pc" not in inputs.billed_commitments:
        commits = commit.original_amount * commit.cost_basis
    true_up = D(0)
    if when.is_final:
        spent = sum((a for k, a in (inputs.term_usage or {}).items() if minimum.covers(k)), D(0))
        true_up = max(D(0), minimum.original_amount - spent)

    expected = Fraction(billed_usage - billed_credit + commits + true_up)
    expected += support_fee + platform_fee
    assert abs(Fraction(invoice.exact_total) - expected) <= 2 * HALF_A_UNIT_IN_THE_LAST_PLACE
    charges = [
        ln.exact_amount
        for ln in invoice.lines
        if ln.kind in (LineKind.FEE, LineKind.COMMIT, LineKind.TRUE_UP)
    ]
    assert invoice.exact_total == billed_usage - billed_credit + sum(charges, D(0))
    # Each line rounded once, to the cent, half up; the total is the sum of the rounded lines.
    for line in invoice.lines:
        assert line.amount == line.exact_amount.quantize(CENT, ROUND_HALF_UP)
    assert invoice.total == sum((line.amount for line in invoice.lines), D(0))
    assert abs(invoice.total - invoice.exact_total) <= len(invoice.lines) * D("0.005")


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 2 * 365 * 24 * 3600).map(lambda s: utc(2024, 1, 1) + timedelta(seconds=s)),
    days=st.integers(1, 500),
    fee=fee_amounts,
)
def test_fees_in_advance_and_in_arrears_bill_the_same_stretches_over_a_term(
    start: datetime, days: int, fee: str
) -> None:
    """Over a whole term, a fee in advance and the same fee in arrears add up alike."""
    contract = a_contract(term_start=start, term_end=start + timedelta(days=days))
    catalog = a_catalog(version(1, utc(2020, 1, 1), platform_fee=fee, support_fee=fee))
    advance, arrears = D(0), D(0)
    for when in walk(contract, limit=100):
        inputs = inputs_on(contract, when.at, catalog=catalog)
        for line in compose_invoice(inputs).lines:
            if line.product_key == "platform":
                advance += line.exact_amount
            else:
                arrears += line.exact_amount
    assert advance == arrears


def test_consecutive_fee_lines_over_a_term_cover_it_without_gaps() -> None:
    contract = a_contract(term_start=utc(2025, 1, 15), term_end=utc(2025, 6, 10))
    services = [
        (line.service_start, line.service_end)
        for when in walk(contract)
        for line in compose_invoice(inputs_on(contract, when.at)).lines
        if line.product_key == "platform"
    ]
    assert services[0][0] == utc(2025, 1, 15) and services[-1][1] == utc(2025, 6, 10)
    assert all(a[1] == b[0] for a, b in pairwise(services))
