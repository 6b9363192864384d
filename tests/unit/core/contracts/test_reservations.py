"""Reservations: authorize holds, capture posts (less releases, more draws), void, expiry."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from rating_service.core.contracts import (
    INSUFFICIENT_CREDIT,
    RESERVATION_CAPTURED,
    RESERVATION_EXPIRED,
    RESERVATION_NOT_EXPIRED,
    RESERVATION_VOIDED,
    SPEND_CAP_EXCEEDED,
    Contract,
    OveragePolicy,
    Pool,
    PoolDraw,
    Reservation,
    ReservationStatus,
    ReservationStep,
    apply_movements,
    authorize,
    capture,
    expire,
    void,
)
from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from rating_service.core.ledger import IDEMPOTENCY_KEY_MISMATCH, TransferCode, TransferFlags
from tests.unit.core.contracts.builders import a_contract, a_pool, at

D = Decimal
TTL = timedelta(minutes=10)
ARREARS = a_contract()
BLOCK = a_contract(policy=OveragePolicy.BLOCK)


def pools() -> list[Pool]:
    # Draw-down order: a (6) then b (10).
    return [a_pool("a", "6", created_seq=1), a_pool("b", "10", created_seq=2)]


def held(estimate: str, contract: Contract = ARREARS) -> tuple[ReservationStep, list[Pool]]:
    step = authorize(
        reservation_id="res_1",
        contract=contract,
        pools=pools(),
        product_key="gpt",
        estimate=D(estimate),
        at=at(1),
        ttl=TTL,
    )
    after = apply_movements({p.pool_id: p for p in pools()}, step.movements)
    return step, list(after.values())


def moves(step: ReservationStep) -> list[tuple[str, str, str]]:
    return [(m.pool_id, str(m.action), str(m.amount)) for m in step.movements]


def test_authorize_holds_across_pools_in_draw_down_order() -> None:
    step, after = held("8")
    # 8 = 6 from a + 2 from b, held as pending.
    assert step.reservation.holds == (PoolDraw("a", D(6)), PoolDraw("b", D(2)))
    assert moves(step) == [("a", "hold", "6"), ("b", "hold", "2")]
    assert [(p.balance, p.pending, p.available) for p in after] == [
        (D(6), D(6), D(0)),
        (D(10), D(2), D(8)),
    ]
    assert [t.flags for t in step.transfers] == [TransferFlags.PENDING] * 2
    assert step.reservation.expires_at == at(1) + TTL


def test_authorize_under_block_refuses_an_estimate_the_pools_cannot_cover() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        held("16.01", BLOCK)  # 16 available
    assert refused.value.reason == INSUFFICIENT_CREDIT


def test_authorize_under_arrears_holds_what_there_is() -> None:
    step, _ = held("20")
    # 16 held; the 4 not held becomes overage only if it is captured.
    assert step.reservation.held == D(16)


def test_authorize_counts_against_the_spend_cap() -> None:
    with pytest.raises(ResourceExhausted) as refused:
        authorize(
            reservation_id="res_1",
            contract=a_contract(spend_cap="100"),
            pools=pools(),
            product_key="gpt",
            estimate=D("5.01"),
            at=at(1),
            ttl=TTL,
            period_spend=D(95),  # 95 + 5.01 > 100
        )
    assert refused.value.reason == SPEND_CAP_EXCEEDED


def capture_of(amount: str, contract: Contract = ARREARS, estimate: str = "8") -> ReservationStep:
    step, after = held(estimate, contract)
    return capture(
        step.reservation,
        amount=D(amount),
        contract=contract,
        pools=after,
        at=at(1) + timedelta(minutes=1),
    )


@pytest.mark.parametrize(
    ("amount", "expected_moves", "overage"),
    [
        # Held 6 on a and 2 on b.
        ("8", [("a", "post", "6"), ("b", "post", "2")], None),  # exactly the hold
        ("5", [("a", "post", "5"), ("a", "release", "1"), ("b", "release", "2")], None),
        ("0", [("a", "release", "6"), ("b", "release", "2")], None),  # nothing used
        # 11: the holds post 8, the extra 3 is drawn by the normal rules (b has 8 left).
        ("11", [("a", "post", "6"), ("b", "post", "2"), ("b", "draw", "3")], "0"),
        # 20: holds post 8, b gives its other 8, 4 is overage (arrears).
        ("20", [("a", "post", "6"), ("b", "post", "2"), ("b", "draw", "8")], "4"),
    ],
)
def test_capture(
    amount: str, expected_moves: list[tuple[str, str, str]], overage: str | None
) -> None:
    step = capture_of(amount)
    assert moves(step) == expected_moves
    assert step.reservation.status is ReservationStatus.CAPTURED
    assert step.reservation.captured_amount == D(amount)
    if overage is None:
        assert step.allocation is None
    else:
        assert step.allocation is not None
        assert step.allocation.overage == D(overage)


def test_capture_transfers_post_less_than_held_and_void_untouched_holds() -> None:
    step = capture_of("5")
    # Hold 0 (a, 6) posts 5; hold 1 (b, 2) is voided.
    assert [(t.code, t.flags, t.amount, t.pending_id) for t in step.transfers] == [
        (
            TransferCode.RESERVATION_CAPTURE,
            TransferFlags.POST_PENDING,
            D(5),
            "reservation_hold:reservation:res_1:0",
        ),
        (
            TransferCode.RESERVATION_VOID,
            TransferFlags.VOID_PENDING,
            D(2),
            "reservation_hold:reservation:res_1:1",
        ),
    ]


def test_capture_beyond_the_holds_under_block_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        capture_of("16.01", BLOCK)  # 8 held + 8 more available = 16
    assert refused.value.reason == INSUFFICIENT_CREDIT


def test_capture_beyond_the_estimate_checks_the_spend_cap() -> None:
    contract = a_contract(spend_cap="10")
    step, after = held("8", contract)
    with pytest.raises(ResourceExhausted):
        capture(step.reservation, amount=D("10.5"), contract=contract, pools=after, at=at(1))


def test_capturing_again_with_the_same_amount_is_a_replay() -> None:
    step = capture_of("5")
    again = capture(step.reservation, amount=D("5.00"), contract=ARREARS, pools=pools(), at=at(1))
    assert again.replay and not again.movements and not again.transfers


def test_capturing_again_with_another_amount_is_refused() -> None:
    step = capture_of("5")
    with pytest.raises(AlreadyExists) as refused:
        capture(step.reservation, amount=D(6), contract=ARREARS, pools=pools(), at=at(1))
    assert refused.value.reason == IDEMPOTENCY_KEY_MISMATCH


def test_void_releases_every_hold_and_is_idempotent() -> None:
    step, _ = held("8")
    voided = void(step.reservation)
    assert moves(voided) == [("a", "release", "6"), ("b", "release", "2")]
    assert voided.reservation.status is ReservationStatus.VOIDED
    assert void(voided.reservation).replay
    with pytest.raises(FailedPrecondition) as refused:
        capture(voided.reservation, amount=D(1), contract=ARREARS, pools=pools(), at=at(1))
    assert refused.value.reason == RESERVATION_VOIDED


def test_a_captured_reservation_cannot_be_voided() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        void(capture_of("5").reservation)
    assert refused.value.reason == RESERVATION_CAPTURED


def test_expiry_after_the_ttl_releases_the_holds() -> None:
    step, after = held("8")
    reservation = step.reservation
    with pytest.raises(FailedPrecondition) as early:
        expire(reservation, at=reservation.expires_at - timedelta(microseconds=1))
    assert early.value.reason == RESERVATION_NOT_EXPIRED
    expired = expire(reservation, at=reservation.expires_at)
    assert moves(expired) == [("a", "release", "6"), ("b", "release", "2")]
    assert {t.code for t in expired.transfers} == {TransferCode.RESERVATION_EXPIRY}
    released = apply_movements({p.pool_id: p for p in after}, expired.movements)
    assert [p.available for p in released.values()] == [D(6), D(10)]
    # Expiring again, or voiding an expired reservation, changes nothing.
    assert expire(expired.reservation, at=at(2)).replay
    assert void(expired.reservation).replay


def test_a_capture_after_the_ttl_is_refused_even_before_the_sweep() -> None:
    step, after = held("8")
    with pytest.raises(FailedPrecondition) as refused:
        capture(
            step.reservation,
            amount=D(1),
            contract=ARREARS,
            pools=after,
            at=step.reservation.expires_at,
        )
    assert refused.value.reason == RESERVATION_EXPIRED


def test_authorizing_again_is_a_replay_or_a_mismatch() -> None:
    step, _ = held("8")
    again = authorize(
        reservation_id="res_1",
        contract=ARREARS,
        pools=pools(),
        product_key="gpt",
        estimate=D("8.0"),
        at=at(1),
        ttl=TTL,
        existing=step.reservation,
    )
    assert again.replay and again.reservation == step.reservation
    with pytest.raises(AlreadyExists):
        authorize(
            reservation_id="res_1",
            contract=ARREARS,
            pools=pools(),
            product_key="gpt",
            estimate=D(9),
            at=at(1),
            ttl=TTL,
            existing=step.reservation,
        )


def test_a_negative_capture_releases_and_credits_back() -> None:
    step, after = held("8")
    captured = capture(
        step.reservation,
        amount=D(-3),
        contract=ARREARS,
        pools=after,
        at=at(1),
        period_draws={"a": D(10)},
    )
    # Holds released; 3 credited back to a, which gave 10 this period.
    assert moves(captured) == [
        ("a", "release", "6"),
        ("b", "release", "2"),
        ("a", "draw", "-3"),
    ]


CAPTURED = ReservationStatus.CAPTURED
AUTHORIZED = ReservationStatus.AUTHORIZED


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"status": CAPTURED, "captured_amount": None}, ["captured_amount"]),
        ({"status": AUTHORIZED, "captured_amount": D(1)}, ["captured_amount"]),
        ({"expires_at": at(0)}, ["expires_at"]),  # not after authorized_at
        ({"reservation_id": " "}, ["reservation_id"]),
        ({"holds": (PoolDraw("a", D(0)),)}, ["holds[0]"]),
        ({"estimate": D(-1), "product_key": ""}, ["product_key", "estimate"]),
    ],
    ids=[
        "captured-without-amount",
        "amount-without-capture",
        "expires-first",
        "blank-id",
        "empty-hold",
        "two-fields",
    ],
)
def test_reservation_values_are_checked(changes: dict[str, object], fields: list[str]) -> None:
    values: dict[str, object] = {
        "reservation_id": "r",
        "contract_id": "ctr_1",
        "product_key": "gpt",
        "estimate": D(1),
        "holds": (PoolDraw("a", D(1)),),
        "authorized_at": at(0),
        "expires_at": at(1),
        **changes,
    }
    with pytest.raises(InvalidArgument) as refused:
        Reservation(**values)  # type: ignore[arg-type]
    assert sorted(v.field for v in refused.value.violations) == sorted(fields)


def test_a_captured_reservation_with_its_amount_is_accepted() -> None:
    holds = (PoolDraw("a", D("1.5")), PoolDraw("b", D("0.25")))
    reservation = Reservation(
        "r", "ctr_1", "gpt", D(2), holds, at(0), at(1), CAPTURED, captured_amount=D("1.75")
    )
    assert reservation.held == D("1.75")  # 1.5 + 0.25
    assert reservation.hold_parts == (("a", D("1.5")), ("b", D("0.25")))
