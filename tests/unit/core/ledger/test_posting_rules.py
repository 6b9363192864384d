"""Posting rules: which accounts each operation debits and credits, with deterministic ids."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.ledger import (
    Transfer,
    TransferCode,
    TransferFlags,
    adjustment_transfers,
    capture_transfers,
    expiry_transfers,
    grant_transfers,
    hold_transfers,
    release_transfers,
    top_up_transfers,
    usage_transfers,
)
from rating_service.core.ledger.accounts import AccountKind, contract_accounts

D = Decimal


def legs(transfers: tuple[Transfer, ...]) -> list[tuple[str, str, str, Decimal]]:
    return [(str(t.code), t.debit_account_id, t.credit_account_id, t.amount) for t in transfers]


@pytest.mark.parametrize(
    ("cost_basis", "expected"),
    [
        ("0", [("grant", "promotions:c", "pool:p", D(100))]),  # free credit
        ("1", [("grant", "payments:c", "pool:p", D(100))]),  # prepaid at face value
        # Bought at 0.8: 100 × 0.8 = 80 paid, the 20 discount is a promotion cost.
        (
            "0.8",
            [("grant", "payments:c", "pool:p", D(80)), ("grant", "promotions:c", "pool:p", D(20))],
        ),
    ],
)
def test_grants_split_paid_and_free(cost_basis: str, expected: list[object]) -> None:
    transfers = grant_transfers(
        reference="grant:g1", contract_id="c", pool_id="p", amount=D(100), cost_basis=D(cost_basis)
    )
    assert legs(transfers) == expected


def test_top_up_is_paid_at_face_value() -> None:
    transfers = top_up_transfers(reference="topup:t1", contract_id="c", pool_id="p", amount=D(50))
    assert legs(transfers) == [("top_up", "payments:c", "pool:p", D(50))]
    assert transfers[0].transfer_id == "top_up:topup:t1:0"


def test_usage_parts_overage_and_credit_backs() -> None:
    transfers = usage_transfers(
        reference="event:e1",
        contract_id="c",
        product_key="gpt",
        draws=[("a", D(3)), ("b", D("-1.5"))],
        overage=D(2),
    )
    assert legs(transfers) == [
        ("usage", "pool:a", "revenue:c:gpt", D(3)),
        ("credit_back", "revenue:c:gpt", "pool:b", D("1.5")),
        ("overage", "overage:c", "revenue:c:gpt", D(2)),
    ]
    assert [t.transfer_id for t in transfers] == [
        "usage:event:e1:0",
        "credit_back:event:e1:1",
        "overage:event:e1:2",
    ]
    negative = usage_transfers(
        reference="event:e2", contract_id="c", product_key="gpt", draws=[], overage=D(-4)
    )
    assert legs(negative) == [("credit_back", "revenue:c:gpt", "overage:c", D(4))]


def test_expiry_moves_the_rest_to_breakage() -> None:
    assert legs(
        expiry_transfers(reference="expiry:p", contract_id="c", pool_id="p", amount=D(7))
    ) == [("expiry", "pool:p", "breakage:c", D(7))]
    assert expiry_transfers(reference="expiry:p", contract_id="c", pool_id="p", amount=D(0)) == ()


def test_reservation_transfers() -> None:
    holds = [("a", D(6)), ("b", D(2))]
    held = hold_transfers(reservation_id="r", contract_id="c", product_key="gpt", holds=holds)
    assert [t.flags for t in held] == [TransferFlags.PENDING] * 2
    captured = capture_transfers(
        reservation_id="r", contract_id="c", product_key="gpt", holds=holds, posted=[D(5), D(0)]
    )
    assert [(t.flags, t.amount, t.pending_id) for t in captured] == [
        (TransferFlags.POST_PENDING, D(5), held[0].transfer_id),
        (TransferFlags.VOID_PENDING, D(2), held[1].transfer_id),  # a void releases it all
    ]
    released = release_transfers(
        reservation_id="r",
        contract_id="c",
        product_key="gpt",
        holds=holds,
        code=TransferCode.RESERVATION_EXPIRY,
    )
    assert {t.code for t in released} == {TransferCode.RESERVATION_EXPIRY}
    with pytest.raises(InvalidArgument):
        capture_transfers(
            reservation_id="r", contract_id="c", product_key="gpt", holds=holds, posted=[D(7), D(0)]
        )


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("25", ("adjustment", "adjustments:c", "pool:p", D(25))),  # adds to the pool
        ("-25", ("adjustment", "pool:p", "adjustments:c", D(25))),  # takes from it
    ],
)
def test_adjustments_go_either_way_with_a_reason(amount: str, expected: tuple[object, ...]) -> None:
    transfers = adjustment_transfers(
        reference="operator:act_1",
        contract_id="c",
        account_id="pool:p",
        amount=D(amount),
        reason="goodwill for the outage",
    )
    assert legs(transfers) == [expected]
    assert transfers[0].memo == "goodwill for the outage"


@pytest.mark.parametrize(("amount", "reason"), [("1", ""), ("1", "   "), ("0", "why")])
def test_adjustments_need_a_reason_and_an_amount(amount: str, reason: str) -> None:
    with pytest.raises(InvalidArgument):
        adjustment_transfers(
            reference="operator:a",
            contract_id="c",
            account_id="pool:p",
            amount=D(amount),
            reason=reason,
        )


def test_a_contract_opens_the_accounts_its_operations_post_to_but_no_revenue_yet() -> None:
    assert contract_accounts("c") == [
        ("overage:c", AccountKind.OVERAGE_RECEIVABLE, None),
        ("payments:c", AccountKind.PAYMENTS_CLEARING, None),
        ("promotions:c", AccountKind.PROMOTIONS, None),
        ("adjustments:c", AccountKind.ADJUSTMENTS, None),
        ("breakage:c", AccountKind.BREAKAGE, None),
    ]
