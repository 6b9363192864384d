"""Invoice composition: recurring fees, prepaid commits and the postpaid true-up (pure).

The test catalog (see builders) prices `platform` at 310.00 a period in advance, `support` at
90.00 a period in arrears, `tokens` at 0.000002 per unit, `gpu-hours` with Stripe's graduated
tiers and `images` per quality (standard 0.04, hd 0.08).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.core.billing.compose import (
    compose_invoice,
)
from rating_service.core.billing.invoice import (
    LineKind,
)
from rating_service.core.contracts import CommitmentKind, Contract, Multiply, Override
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
    utc,
    version,
)

D = Decimal
SECOND = timedelta(seconds=1)
CENT = Decimal("0.01")


# ---------------------------------------------------------------- recurring fees

TEN_SECONDS = a_contract(term_end=T0 + 25 * SECOND, interval=10 * SECOND)


@pytest.mark.parametrize(
    ("contract", "at", "expected"),
    [
        pytest.param(
            STUB,
            utc(2025, 1, 15),
            # 15 Jan – 1 Feb of a 31-day January: 310 × 17/31 = 170 in advance; nothing in arrears.
            [
                (
                    "fee:platform:2025-01-15T00:00:00+00:00",
                    "Platform fee (prorated)",
                    "170",
                    "170.00",
                )
            ],
            id="opening date: advance fee prorated",
        ),
        pytest.param(
            STUB,
            utc(2025, 2, 1),
            [
                # 90 × 17/31 = 49.354838709677419354838…, kept to 20 places
                (
                    "fee:support:2025-01-15T00:00:00+00:00",
                    "Support plan (prorated)",
                    "49.35483870967741935484",
                    "49.35",
                ),
                # February in advance, whole
                ("fee:platform:2025-02-01T00:00:00+00:00", "Platform fee", "310.00", "310.00"),
            ],
            id="first period end: stub in arrears, next period in advance",
        ),
        pytest.param(
            STUB,
            utc(2025, 3, 1),
            [
                ("fee:support:2025-02-01T00:00:00+00:00", "Support plan", "90.00", "90.00"),
                # 1–10 March of 31 days: 310 × 9/31 = 90
                (
                    "fee:platform:2025-03-01T00:00:00+00:00",
                    "Platform fee (prorated)",
                    "90",
                    "90.00",
                ),
            ],
            id="last period billed in advance is cut to the term",
        ),
        pytest.param(
            STUB,
            utc(2025, 3, 10),
            # 90 × 9/31 = 26.129032258064516129032…; no advance fee on the final date
            [
                (
                    "fee:support:2025-03-01T00:00:00+00:00",
                    "Support plan (prorated)",
                    "26.12903225806451612903",
                    "26.13",
                )
            ],
            id="final date: arrears fee prorated, nothing in advance",
        ),
        pytest.param(
            a_contract(term_start=utc(2025, 2, 10, 15), term_end=utc(2025, 2, 20, 9)),
            utc(2025, 2, 10, 15),
            # By UTC day: 10–20 Feb of a 28-day February, 310 × 10/28 = 110.714285…
            [
                (
                    "fee:platform:2025-02-10T15:00:00+00:00",
                    "Platform fee (prorated)",
                    "110.71428571428571428571",
                    "110.71",
                )
            ],
            id="prorated by UTC day, not by hour",
        ),
        pytest.param(
            TEN_SECONDS,
            T0,
            [("fee:platform:2025-01-01T00:00:00+00:00", "Platform fee", "310.00", "310.00")],
            id="10-second interval: opening",
        ),
        pytest.param(
            TEN_SECONDS,
            T0 + 20 * SECOND,
            [
                ("fee:support:2025-01-01T00:00:10+00:00", "Support plan", "90.00", "90.00"),
                # 5 of 10 seconds: 310 × 5/10
                (
                    "fee:platform:2025-01-01T00:00:20+00:00",
                    "Platform fee (prorated)",
                    "155",
                    "155.00",
                ),
            ],
            id="10-second interval: last period cut in advance",
        ),
        pytest.param(
            TEN_SECONDS,
            T0 + 25 * SECOND,
            [("fee:support:2025-01-01T00:00:20+00:00", "Support plan (prorated)", "45", "45.00")],
            id="10-second interval: final, 90 × 5/10",
        ),
        pytest.param(
            a_contract(term_end=T0 + timedelta(seconds=1, microseconds=1), interval=3 * SECOND),
            T0,
            # By the microsecond: 310 × 1,000,001 / 3,000,000 = 103.33343666…
            [
                (
                    "fee:platform:2025-01-01T00:00:00+00:00",
                    "Platform fee (prorated)",
                    "103.33343666666666666667",
                    "103.33",
                )
            ],
            id="sub-day interval prorated by the microsecond",
        ),
    ],
)
def test_fee_lines(
    contract: Contract, at: datetime, expected: list[tuple[str, str, str, str]]
) -> None:
    invoice = compose_invoice(inputs_on(contract, at))
    assert summary(lines_of(invoice, LineKind.FEE)) == rows(expected)
    for line in lines_of(invoice, LineKind.FEE):
        assert line.quantity == 1
        assert line.unit_price == D("310.00" if line.product_key == "platform" else "90.00")


def test_a_fee_price_change_mid_period_splits_the_fee() -> None:
    # Version 2 from 10 January: support 100 (was 90), platform 400 (was 310).
    catalog = a_catalog(
        version(1, utc(2020, 1, 1), utc(2025, 1, 10)),
        version(2, utc(2025, 1, 10), support_fee="100", platform_fee="400"),
    )
    opening = compose_invoice(inputs_on(a_contract(), T0, catalog=catalog))
    assert summary(lines_of(opening, LineKind.FEE)) == rows(
        [
            # 310 × 9/31 = 90, then 400 × 22/31 = 283.870967741935…
            ("fee:platform:2025-01-01T00:00:00+00:00", "Platform fee (prorated)", "90", "90.00"),
            (
                "fee:platform:2025-01-10T00:00:00+00:00",
                "Platform fee (prorated)",
                "283.87096774193548387097",
                "283.87",
            ),
        ]
    )
    first_end = compose_invoice(inputs_on(a_contract(), utc(2025, 2, 1), catalog=catalog))
    assert summary(lines_of(first_end, LineKind.FEE)) == rows(
        [
            # 90 × 9/31 = 26.129…, then 100 × 22/31 = 70.967…
            (
                "fee:support:2025-01-01T00:00:00+00:00",
                "Support plan (prorated)",
                "26.12903225806451612903",
                "26.13",
            ),
            (
                "fee:support:2025-01-10T00:00:00+00:00",
                "Support plan (prorated)",
                "70.96774193548387096774",
                "70.97",
            ),
            ("fee:platform:2025-02-01T00:00:00+00:00", "Platform fee", "400", "400.00"),
        ]
    )
    for line in lines_of(first_end, LineKind.FEE)[:2]:
        assert (line.service_start, line.service_end) in {
            (T0, utc(2025, 1, 10)),
            (utc(2025, 1, 10), utc(2025, 2, 1)),
        }


def test_a_fee_is_not_split_where_its_price_did_not_change() -> None:
    # A new version keeping the fees, and an override of another product, both mid-January.
    catalog = a_catalog(
        version(1, utc(2020, 1, 1), utc(2025, 1, 10)),
        version(2, utc(2025, 1, 10), token_price="0.000003"),
    )
    tokens_off = Override.for_product("tokens", Multiply(D("0.5")), utc(2025, 1, 20))
    contract = a_contract(overrides=(tokens_off,))
    opening = compose_invoice(inputs_on(contract, T0, catalog=catalog))
    assert summary(lines_of(opening, LineKind.FEE)) == rows(
        [("fee:platform:2025-01-01T00:00:00+00:00", "Platform fee", "310.00", "310.00")]
    )
    first_end = compose_invoice(inputs_on(contract, utc(2025, 2, 1), catalog=catalog))
    assert summary(lines_of(first_end, LineKind.FEE)) == rows(
        [
            ("fee:support:2025-01-01T00:00:00+00:00", "Support plan", "90.00", "90.00"),
            ("fee:platform:2025-02-01T00:00:00+00:00", "Platform fee", "310.00", "310.00"),
        ]
    )


def test_a_fee_override_mid_period_splits_the_fee() -> None:
    # Half price from 15 February: 310 × 14/28 = 155, then 155 × 14/28 = 77.5.
    half = Override.for_product("platform", Multiply(D("0.5")), utc(2025, 2, 15))
    invoice = compose_invoice(inputs_on(a_contract(overrides=(half,)), utc(2025, 2, 1)))
    assert summary(lines_of(invoice, LineKind.FEE))[1:] == rows(
        [
            ("fee:platform:2025-02-01T00:00:00+00:00", "Platform fee (prorated)", "155", "155.00"),
            ("fee:platform:2025-02-15T00:00:00+00:00", "Platform fee (prorated)", "77.5", "77.50"),
        ]
    )


def test_no_fee_where_no_rate_card_version_is_in_force() -> None:
    # The only version starts on 10 January: nothing to bill for 1–10 January.
    catalog = a_catalog(version(1, utc(2025, 1, 10)))
    invoice = compose_invoice(inputs_on(a_contract(), T0, catalog=catalog))
    # 310 × 22/31 = 220
    assert summary(lines_of(invoice, LineKind.FEE)) == rows(
        [("fee:platform:2025-01-10T00:00:00+00:00", "Platform fee (prorated)", "220", "220.00")]
    )


# ---------------------------------------------------------------- prepaid commits


@pytest.mark.parametrize(
    ("pool_starts", "cost_basis", "kind", "at", "billed", "expected"),
    [
        # (exact, rounded): 1000 × 0.9 on the opening date
        (T0, "0.9", PREPAID, T0, False, ("900", "900.00")),
        (T0, "1", PREPAID, T0, False, ("1000", "1000.00")),
        (T0, "0.12345", PREPAID, T0, False, ("123.450", "123.45")),  # 1000 × 0.12345
        (T0, "0.123445", PREPAID, T0, False, ("123.445", "123.45")),  # half a cent: up
        (utc(2025, 1, 20), "0.9", PREPAID, T0, False, None),  # not started yet
        # first date after it starts
        (utc(2025, 1, 20), "0.9", PREPAID, utc(2025, 2, 1), False, ("900", "900.00")),
        # starts on the date
        (utc(2025, 2, 1), "0.9", PREPAID, utc(2025, 2, 1), False, ("900", "900.00")),
        (T0, "0.9", PREPAID, utc(2025, 2, 1), True, None),  # on a live invoice already
        (T0, "0", PREPAID, T0, False, None),  # a free commit costs nothing
        (T0, "1", CommitmentKind.CREDIT, T0, False, None),  # credits are not invoiced here
    ],
)
def test_prepaid_commit_lines(
    pool_starts: datetime,
    cost_basis: str,
    kind: CommitmentKind,
    at: datetime,
    billed: bool,
    expected: tuple[str, str] | None,
) -> None:
    pool = a_pool("pc", "1000", kind=kind, cost_basis=cost_basis, starts_at=pool_starts)
    invoice = compose_invoice(
        inputs_on(
            a_contract(term_end=utc(2026, 1, 1)),
            at,
            pools=(pool,),
            billed_commitments=frozenset({"pc"} if billed else ()),
        )
    )
    commits = lines_of(invoice, LineKind.COMMIT)
    if expected is None:
        assert commits == []
        return
    [line] = commits
    assert (line.key, line.description) == ("commit:pc", "Prepaid commit pc")
    assert (line.exact_amount, str(line.amount)) == (D(expected[0]), expected[1])
    assert (line.quantity, line.unit_price) == (D(1000), D(cost_basis))
    assert (line.service_start, line.service_end) == (pool_starts, utc(2026, 1, 1))


def test_a_commit_s_service_ends_at_its_expiry() -> None:
    pool = a_pool("pc", "10", kind=PREPAID, cost_basis="1", expires_at=utc(2025, 7, 1))
    [line] = compose_invoice(inputs_on(a_contract(), T0, pools=(pool,))).lines[1:]
    assert (line.kind, line.service_start, line.service_end) == (
        LineKind.COMMIT,
        T0,
        utc(2025, 7, 1),
    )


# ---------------------------------------------------------------- postpaid true-up

ONE_QUARTER = a_contract(term_end=utc(2025, 4, 1))


@pytest.mark.parametrize(
    ("scope", "term_usage", "expected"),
    [
        # (exact, rounded): 1000 − 500
        (None, {"tokens": "300", "gpu-hours": "200"}, ("500", "500.00")),
        # only tokens count: 1000 − 300
        (frozenset({"tokens"}), {"tokens": "300", "gpu-hours": "200"}, ("700", "700.00")),
        (None, {"tokens": "999.995"}, ("0.005", "0.01")),  # half a cent rounds up
        (None, {"tokens": "999.99501"}, ("0.00499", "0.00")),  # under half a cent: down
        (None, {}, ("1000", "1000.00")),  # nothing used: the whole commit
        (None, None, ("1000", "1000.00")),
        (None, {"tokens": "1000"}, None),  # met exactly: no true-up
        (None, {"tokens": "700", "gpu-hours": "800"}, None),  # exceeded: none, never negative
    ],
)
def test_postpaid_true_up_on_the_final_date(
    scope: frozenset[str] | None,
    term_usage: Mapping[str, str] | None,
    expected: tuple[str, str] | None,
) -> None:
    pool = a_pool("min", "1000", kind=POSTPAID, scope=scope)
    spent = None if term_usage is None else {k: D(v) for k, v in term_usage.items()}
    invoice = compose_invoice(
        inputs_on(ONE_QUARTER, utc(2025, 4, 1), pools=(pool,), term_usage=spent)
    )
    true_ups = lines_of(invoice, LineKind.TRUE_UP)
    if expected is None:
        assert true_ups == []
        return
    [line] = true_ups
    assert (line.key, line.description) == ("true_up:min", "Postpaid commit min true-up")
    assert (line.exact_amount, str(line.amount)) == (D(expected[0]), expected[1])
    assert (line.service_start, line.service_end) == (T0, utc(2025, 4, 1))


@pytest.mark.parametrize("at", [T0, utc(2025, 2, 1), utc(2025, 3, 1)])
def test_no_true_up_before_the_final_date(at: datetime) -> None:
    pool = a_pool("min", "1000", kind=POSTPAID)
    invoice = compose_invoice(inputs_on(ONE_QUARTER, at, pools=(pool,), term_usage={}))
    assert lines_of(invoice, LineKind.TRUE_UP) == []
