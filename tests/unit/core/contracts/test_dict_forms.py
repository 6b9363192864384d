"""Plain-dict forms of contracts, customers and commitments: round trips and field-path errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.contracts import (
    CommitmentKind,
    contract_from_dict,
    contract_to_dict,
    customer_from_dict,
    customer_to_dict,
    pool_from_dict,
    pool_to_dict,
    postpaid_shortfall,
)
from rating_service.core.errors import InvalidArgument

D = Decimal

CONTRACT = {
    "contract_id": "ctr_1",
    "customer_id": "cus_1",
    "tenant_id": "tnt_1",
    "term_start": "2025-01-01T00:00:00+00:00",
    "term_end": "2026-01-01T00:00:00+00:00",
    "billing_anchor": {"day": 31, "time": "06:00:00"},
    "billing_frequency": "monthly",
    "invoice_currency": "USD",
    "rate_card_key": "standard",
    "overage_policy": "arrears",
    "overrides": [
        {"tag": "llm", "effective_from": "2025-01-01T00:00:00+00:00", "multiplier": "0.8"}
    ],
    "spend_cap": "5000",
    "alert_thresholds": [
        {"threshold_id": "low", "kind": "balance_below", "amount": "100"},
        {"threshold_id": "cap_80", "kind": "spend_above_cap_percent", "percent": "80"},
    ],
    "status": "active",
}

POOL = {
    "pool_id": "pool_1",
    "contract_id": "ctr_1",
    "kind": "credit",
    "priority": 10,
    "cost_basis": "0",
    "scope": ["embed", "gpt"],
    "starts_at": "2025-01-01T00:00:00+00:00",
    "expires_at": "2025-04-01T00:00:00+00:00",
    "created_seq": 3,
    "original_amount": "500",
    "balance": "420.5",
    "pending": "20",
}


def test_contract_round_trip() -> None:
    contract = contract_from_dict(CONTRACT)
    assert contract_to_dict(contract) == CONTRACT
    assert contract.spend_cap == D(5000)
    assert contract.invoice_currency.code == "USD"


def test_pool_round_trip() -> None:
    pool = pool_from_dict(POOL)
    assert pool_to_dict(pool) == POOL
    assert pool.available == D("400.5")


def test_pool_defaults() -> None:
    pool = pool_from_dict(
        {
            "pool_id": "p",
            "kind": "prepaid_commit",
            "cost_basis": "1",
            "starts_at": "2025-01-01T00:00:00Z",
            "original_amount": "1000",
        },
        contract_id="ctr_9",
    )
    assert (pool.contract_id, pool.balance, pool.pending, pool.scope, pool.expires_at) == (
        "ctr_9",
        D(1000),
        D(0),
        None,
        None,
    )


def test_a_postpaid_commit_holds_no_balance() -> None:
    commit = pool_from_dict(
        {
            "pool_id": "min",
            "contract_id": "ctr_1",
            "kind": "postpaid_commit",
            "starts_at": "2025-01-01T00:00:00Z",
            "original_amount": "10000",
        }
    )
    assert commit.kind is CommitmentKind.POSTPAID_COMMIT
    assert commit.balance == 0
    # True-up at term end: 10000 − 7250.50 = 2749.50; none once the spend passes the commit.
    assert postpaid_shortfall(commit, D("7250.50")) == D("2749.50")
    assert postpaid_shortfall(commit, D(12000)) == 0


def test_customer_round_trip() -> None:
    data = {"customer_id": "cus_1", "tenant_id": "tnt_1", "name": "Acme", "external_ref": "crm-9"}
    assert customer_to_dict(customer_from_dict(data)) == data


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"term_end": "2024-06-01T00:00:00+00:00"}, "term_end"),  # before term_start
        ({"term_start": "2025-01-01T00:00:00"}, "term_start"),  # no offset
        ({"billing_anchor": {"day": 32}}, "billing_anchor.day"),
        ({"billing_anchor": {"day": 1, "time": "25:00"}}, "billing_anchor.time"),
        ({"billing_frequency": "weekly"}, "billing_frequency"),
        ({"invoice_currency": "XYZ"}, "invoice_currency"),
        ({"overage_policy": None}, "overage_policy"),
        ({"spend_cap": "-1"}, "spend_cap"),
        ({"spend_cap": 100.0}, "spend_cap"),  # a float is never money
        ({"status": "paused"}, "status"),
        (
            {"overrides": [{"tag": "llm", "effective_from": "2025-01-01T00:00:00Z"}]},
            "overrides[0].multiplier",
        ),
        (
            {"alert_thresholds": [{"threshold_id": "x", "kind": "balance_below"}]},
            "alert_thresholds[0].amount",
        ),
        (
            {
                "alert_thresholds": [
                    {"threshold_id": "x", "kind": "balance_below", "amount": "1"},
                    {"threshold_id": "x", "kind": "balance_below", "amount": "2"},
                ]
            },
            "alert_thresholds[1].threshold_id",  # ids are unique within a contract
        ),
        ({"rate_card": "standard"}, "rate_card"),  # unknown field
    ],
)
def test_contract_errors_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        contract_from_dict({**CONTRACT, **changes})
    assert field in [violation.field for violation in refused.value.violations]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "coupon"}, "commitments[0].kind"),
        ({"cost_basis": "1.5"}, "commitments[0].cost_basis"),
        ({"scope": []}, "commitments[0].scope"),
        ({"scope": ["gpt", ""]}, "commitments[0].scope[1]"),
        ({"expires_at": "2024-12-01T00:00:00Z"}, "commitments[0].expires_at"),
        ({"pending": "500"}, "commitments[0].pending"),  # more than the balance
        ({"balance": "-1"}, "commitments[0].balance"),
        ({"priority": "high"}, "commitments[0].priority"),
    ],
)
def test_pool_errors_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        pool_from_dict({**POOL, **changes}, "commitments[0]")
    assert field in [violation.field for violation in refused.value.violations]
