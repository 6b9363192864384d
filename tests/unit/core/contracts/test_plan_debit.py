"""One event end to end (pure): checks, allocation, transfers that the ledger accepts, alerts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.contracts import (
    CONTRACT_SUSPENDED,
    CURRENCY_MISMATCH,
    SPEND_CAP_EXCEEDED,
    AlertKind,
    AlertThreshold,
    CommitmentKind,
    ContractStatus,
    Multiply,
    OveragePolicy,
    Override,
    effective_price,
    invoice_currency_charge,
    plan_debit,
)
from rating_service.core.errors import FailedPrecondition, ResourceExhausted
from rating_service.core.ledger import (
    AccountKind,
    Ledger,
    TransferCode,
    invariant_breaches,
    open_account,
    overage_account_id,
    pool_account_id,
    revenue_account_id,
)
from rating_service.core.ledger.posting_rules import grant_transfers
from rating_service.core.money import PricingUnit
from rating_service.core.pricing import PerUnit, incremental_charge
from tests.unit.core.contracts.builders import T0, a_contract, a_pool, at

D = Decimal


def test_rate_and_debit_from_price_to_ledger() -> None:
    # A credits unit worth 0.01 USD; gpt at 2 credits per 1000 tokens, 25% off by contract.
    unit = PricingUnit.custom("credits", "USD", D("0.01"))
    contract = a_contract(overrides=(Override.for_product("gpt", Multiply(D("0.75")), T0),))
    model = effective_price(PerUnit(D("0.002")), "gpt", (), contract.overrides, at(1))
    priced = incremental_charge(model, D(0), D(10_000))
    # 10 000 tokens × 0.002 × 0.75 = 15 credits = 0.15 USD.
    assert priced.amount == D(15)
    charge = invoice_currency_charge(priced.amount, unit, contract)
    assert charge == D("0.15")
    promo = a_pool("promo", "0.10", created_seq=1)
    paid = a_pool("paid", "1", cost_basis="1", created_seq=2)
    plan = plan_debit(
        contract=contract,
        pools=[paid, promo],
        product_key="gpt",
        charge=charge,
        at=at(1),
        reference="event:evt_1",
    )
    # Free before paid: 0.10 from promo, 0.05 from paid.
    assert [(t.code, t.debit_account_id, t.amount) for t in plan.transfers] == [
        (TransferCode.USAGE, pool_account_id("promo"), D("0.10")),
        (TransferCode.USAGE, pool_account_id("paid"), D("0.05")),
    ]
    assert [p.balance for p in plan.pools_after] == [D("0.95"), D("0.00")]
    # The ledger accepts the transfers, and stays sound.
    ledger = Ledger.empty().open(
        [
            open_account(pool_account_id("promo"), AccountKind.POOL, "USD"),
            open_account(pool_account_id("paid"), AccountKind.POOL, "USD"),
            open_account("promotions:ctr_1", AccountKind.PROMOTIONS, "USD"),
            open_account("payments:ctr_1", AccountKind.PAYMENTS_CLEARING, "USD"),
            open_account(revenue_account_id("ctr_1", "gpt"), AccountKind.REVENUE, "USD"),
        ]
    )
    ledger = ledger.apply(
        grant_transfers(
            reference="grant:g1", contract_id="ctr_1", pool_id="promo", amount=D("0.10")
        )
        + grant_transfers(
            reference="grant:g2", contract_id="ctr_1", pool_id="paid", amount=D(1), cost_basis=D(1)
        )
    )
    ledger = ledger.apply(plan.transfers)
    assert ledger.accounts[pool_account_id("paid")].credit_balance == D("0.95")
    assert invariant_breaches(ledger.accounts, ledger.transfers) == ()


def test_the_rate_card_must_convert_to_the_invoice_currency() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        invoice_currency_charge(D(1), PricingUnit.of_currency("EUR"), a_contract())
    assert refused.value.reason == CURRENCY_MISMATCH


def test_overage_and_alerts() -> None:
    contract = a_contract(
        spend_cap="100",
        thresholds=(
            AlertThreshold("low", AlertKind.BALANCE_BELOW, amount=D(5)),
            AlertThreshold("cap_50", AlertKind.SPEND_ABOVE_CAP_PERCENT, percent=D(50)),
            AlertThreshold(
                "commit", AlertKind.SPEND_ABOVE_COMMIT_PERCENT, percent=D(10), pool_id="min"
            ),
        ),
    )
    pools = [
        a_pool("p", "10"),
        a_pool("min", "200", kind=CommitmentKind.POSTPAID_COMMIT),
    ]
    plan = plan_debit(
        contract=contract,
        pools=pools,
        product_key="gpt",
        charge=D(25),
        at=at(1),
        reference="event:evt_2",
        period_spend=D(40),
        commitment_spend={"min": D(0)},
    )
    # 25 = 10 from p + 15 overage; spend 40 → 65 (≥ 50); balance 10 → 0 (< 5);
    # postpaid commit 0 → 25 (≥ 10% of 200 = 20).
    assert plan.allocation.overage == D(15)
    assert plan.transfers[-1].debit_account_id == overage_account_id("ctr_1")
    assert plan.period_spend_after == D(65)
    assert sorted(alert.threshold_id for alert in plan.alerts) == ["cap_50", "commit", "low"]


def test_a_refused_event_raises_before_anything_is_planned() -> None:
    with pytest.raises(ResourceExhausted) as capped:
        plan_debit(
            contract=a_contract(spend_cap="10"),
            pools=[a_pool("p", "100")],
            product_key="gpt",
            charge=D("10.01"),
            at=at(1),
            reference="event:e",
        )
    assert capped.value.reason == SPEND_CAP_EXCEEDED
    with pytest.raises(FailedPrecondition) as suspended:
        plan_debit(
            contract=a_contract(status=ContractStatus.SUSPENDED),
            pools=[],
            product_key="gpt",
            charge=D(0),
            at=at(1),
            reference="event:e",
        )
    assert suspended.value.reason == CONTRACT_SUSPENDED
    with pytest.raises(FailedPrecondition):
        plan_debit(
            contract=a_contract(policy=OveragePolicy.BLOCK),
            pools=[a_pool("p", "1")],
            product_key="gpt",
            charge=D(2),
            at=at(1),
            reference="event:e",
        )


def test_an_event_in_an_expired_pools_time_does_not_draw_it() -> None:
    plan = plan_debit(
        contract=a_contract(),
        pools=[a_pool("old", "50", expires_at=at(1)), a_pool("new", "50", priority=9)],
        product_key="gpt",
        charge=D(5),
        at=at(1),  # the instant "old" expires: it is not drawn, even if not yet swept
        reference="event:e",
    )
    assert plan.allocation.parts == (("new", D(5)),)


@pytest.mark.parametrize(
    ("balance", "charge", "enabled", "due"),
    [
        ("12", "3", True, True),  # 12 → 9: crosses below 10
        ("9", "3", True, False),  # already below: fired on the earlier crossing
        ("30", "3", True, False),  # 30 → 27: still above
        ("12", "3", False, False),  # switched off after failed recharges
    ],
)
def test_auto_recharge_is_due_once_when_the_balance_crosses_below_its_threshold(
    balance: str, charge: str, enabled: bool, due: bool
) -> None:
    from dataclasses import replace

    from rating_service.core.contracts.lifecycle import AutoRecharge

    contract = replace(a_contract(), auto_recharge=AutoRecharge(D(10), D(50), enabled))
    plan = plan_debit(
        contract=contract,
        pools=[a_pool("p", "100", balance=balance)],
        product_key="gpt",
        charge=D(charge),
        at=at(1),
        reference="event:e",
    )
    assert plan.recharge_due is due
    assert plan.alerts == ()  # the recharge threshold is not a tenant alert
