"""Reservations for streaming calls: authorize, capture, void, expire, as a pure state machine.

Authorize holds an estimate across the pools in draw-down order as pending amounts (they count
against the balance; under `arrears` the part no pool can cover is not held and simply becomes
overage if it is captured). Capture posts the actual amount: from the holds first, in the order
they were taken, releasing what is left of them; an amount beyond the holds is charged by the
normal rules (draw-down order at capture time, the overage policy, and the spend cap when the
amount exceeds the estimate). Void releases every hold. A reservation not captured or voided
by `expires_at` (authorize time + TTL) is expired by a sweep, which releases its holds.

Every transition returns the pool movements and the ledger transfers to apply, and is
idempotent: capturing a captured reservation with the same amount, voiding a voided one,
expiring an expired one are replays that change nothing; capturing again with another amount
is refused (ALREADY_EXISTS, IDEMPOTENCY_KEY_MISMATCH). The contract's status is checked at
authorize only: an authorized call was admitted, so its capture settles it even if the contract
was suspended meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import partial
from types import MappingProxyType

from rating_service.core.contracts.allocation import (
    Allocation,
    PoolDraw,
    allocate,
    check_spend_cap,
)
from rating_service.core.contracts.contract import Contract, check_contract_accepts_usage
from rating_service.core.contracts.pools import (
    MovementAction,
    Pool,
    PoolMovement,
    apply_movements,
    draw_down_order,
)
from rating_service.core.dict_form import utc_timestamp
from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.ledger.journal import IDEMPOTENCY_KEY_MISMATCH
from rating_service.core.ledger.posting_rules import (
    capture_transfers,
    hold_transfers,
    release_transfers,
    reservation_reference,
    usage_transfers,
)
from rating_service.core.ledger.transfers import Transfer, TransferCode
from rating_service.core.money import exact_sum, format_decimal
from rating_service.core.pricing.constraints import priced_exactly

RESERVATION_CAPTURED = "RESERVATION_CAPTURED"
"""FailedPrecondition reason: the reservation was captured, it can no longer be voided."""

RESERVATION_VOIDED = "RESERVATION_VOIDED"
"""FailedPrecondition reason: the reservation was voided, it can no longer be captured."""

RESERVATION_EXPIRED = "RESERVATION_EXPIRED"
"""FailedPrecondition reason: the reservation outlived its TTL, it can no longer be captured."""

RESERVATION_NOT_EXPIRED = "RESERVATION_NOT_EXPIRED"
"""FailedPrecondition reason: an expiry sweep ran before the reservation's TTL was up."""

ZERO = Decimal(0)
_NOTHING: Mapping[str, Decimal] = MappingProxyType({})


class ReservationStatus(StrEnum):
    """Where a reservation is in its life."""

    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Reservation:
    """An authorized amount held on a contract's pools for one product, until captured or not."""

    reservation_id: str
    contract_id: str
    product_key: str
    estimate: Decimal
    holds: tuple[PoolDraw, ...]
    authorized_at: datetime
    expires_at: datetime
    status: ReservationStatus = ReservationStatus.AUTHORIZED
    captured_amount: Decimal | None = None

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        for name in ("reservation_id", "contract_id", "product_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                violations.add(name, "must be a non-empty string")
        _check_amount(violations, "estimate", self.estimate)
        object.__setattr__(self, "holds", tuple(self.holds))
        for index, hold in enumerate(self.holds):
            if not isinstance(hold, PoolDraw) or hold.amount <= 0:
                violations.add(f"holds[{index}]", "must be a PoolDraw of a positive amount")
        start = utc_timestamp(self.authorized_at, "authorized_at", violations)
        end = utc_timestamp(self.expires_at, "expires_at", violations)
        if start is not None and end is not None and end <= start:
            violations.add("expires_at", "must be after authorized_at")
        if not isinstance(self.status, ReservationStatus):
            violations.add("status", f"must be one of {', '.join(ReservationStatus)}")
        captured = self.status is ReservationStatus.CAPTURED
        if captured != (self.captured_amount is not None):
            violations.add("captured_amount", "is set exactly when the reservation is captured")
        violations.raise_if_any("invalid reservation")
        object.__setattr__(self, "authorized_at", start)
        object.__setattr__(self, "expires_at", end)

    @property
    def held(self) -> Decimal:
        """The total held on the pools."""
        return exact_sum(hold.amount for hold in self.holds)

    @property
    def hold_parts(self) -> tuple[tuple[str, Decimal], ...]:
        """The holds as (pool_id, amount) pairs, the shape the ledger's posting rules take."""
        return tuple((hold.pool_id, hold.amount) for hold in self.holds)


@dataclass(frozen=True, slots=True)
class ReservationStep:
    """The result of one transition: the reservation after it, and what to apply.

    `movements` change the pools, `transfers` are the same changes in the ledger, and
    `allocation` is how an amount beyond the holds (or a credit back) was charged by the
    normal rules at capture. A replay carries no movements and no transfers.
    """

    reservation: Reservation
    movements: tuple[PoolMovement, ...] = ()
    transfers: tuple[Transfer, ...] = ()
    allocation: Allocation | None = None
    replay: bool = False


def authorize(
    *,
    reservation_id: str,
    contract: Contract,
    pools: Sequence[Pool],
    product_key: str,
    estimate: Decimal,
    at: datetime,
    ttl: timedelta,
    period_spend: Decimal = ZERO,
    existing: Reservation | None = None,
) -> ReservationStep:
    """Hold `estimate` (invoice currency) on the pools that apply to the product at `at`.

    `existing` is the reservation already stored under this id, if any: the same contract,
    product and estimate make this a replay; anything else is refused (ALREADY_EXISTS,
    IDEMPOTENCY_KEY_MISMATCH). `period_spend` is the billing period's spend including the holds
    of other open reservations, so the spend cap counts holds. Under `block` an estimate the
    pools cannot cover is refused (INSUFFICIENT_CREDIT).
    """
    if existing is not None:
        same = (existing.contract_id, existing.product_key, existing.estimate) == (
            contract.contract_id,
            product_key,
            estimate,
        )
        if not same or existing.reservation_id != reservation_id:
            raise _mismatch(reservation_id, "authorized with another contract, product or amount")
        return ReservationStep(existing, replay=True)
    violations = ViolationCollector()
    _check_amount(violations, "estimate", estimate)
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        violations.add("ttl", "must be a positive duration")
    moment = utc_timestamp(at, "at", violations)
    if moment is None:
        violations.raise_if_any("invalid authorization")
        raise InvalidArgument.of_field("at", "is required")  # utc_timestamp recorded why
    violations.raise_if_any("invalid authorization")
    check_contract_accepts_usage(contract, moment)
    check_spend_cap(period_spend, estimate, contract.spend_cap, contract_id=contract.contract_id)
    order = draw_down_order(pools, product_key, moment)
    covered = allocate(estimate, order, contract.overage_policy, contract_id=contract.contract_id)
    reservation = Reservation(
        reservation_id,
        contract.contract_id,
        product_key,
        estimate,
        covered.draws,
        moment,
        moment + ttl,
    )
    movements = tuple(
        PoolMovement(hold.pool_id, MovementAction.HOLD, hold.amount) for hold in covered.draws
    )
    transfers = hold_transfers(
        reservation_id=reservation_id,
        contract_id=contract.contract_id,
        product_key=product_key,
        holds=reservation.hold_parts,
    )
    return ReservationStep(reservation, movements, transfers)


def capture(
    reservation: Reservation,
    *,
    amount: Decimal,
    contract: Contract,
    pools: Sequence[Pool],
    at: datetime,
    period_spend: Decimal = ZERO,
    period_draws: Mapping[str, Decimal] = _NOTHING,
    period_overage: Decimal = ZERO,
) -> ReservationStep:
    """Post the actual amount: from the holds first, the rest by the normal rules.

    `pools` are the contract's pools as they are now (this reservation's holds still pending);
    `period_spend` excludes this reservation's own hold. A negative amount (the call's usage
    crossed into a cheaper volume tier) releases every hold and is credited back as
    `allocate` does, with `period_draws` and `period_overage`.
    """
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InvalidArgument.of_field("amount", f"must be a finite Decimal, got {amount!r}")
    if reservation.status is ReservationStatus.CAPTURED:
        if reservation.captured_amount == amount:
            return ReservationStep(reservation, replay=True)
        raise _mismatch(
            reservation.reservation_id,
            f"already captured for {format_decimal(reservation.captured_amount or ZERO)}",
        )
    if reservation.status is not ReservationStatus.AUTHORIZED:
        raise _closed(reservation, "captured")
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidArgument.of_field("at", "must be a timezone-aware datetime")
    if at >= reservation.expires_at:
        raise FailedPrecondition(
            f"reservation {reservation.reservation_id!r} expired at"
            f" {reservation.expires_at.isoformat()}",
            reason=RESERVATION_EXPIRED,
            violations=[_violation(reservation, "its TTL is up")],
        )
    if contract.contract_id != reservation.contract_id:
        raise InvalidArgument.of_field("contract", "is not the reservation's contract")
    if amount > reservation.estimate:
        check_spend_cap(period_spend, amount, contract.spend_cap, contract_id=contract.contract_id)
    posted, beyond, movements = priced_exactly(partial(_settle_holds, reservation, amount))
    settled = apply_movements({pool.pool_id: pool for pool in pools}, movements)
    extra: Allocation | None = None
    if beyond:
        order = draw_down_order(settled.values(), reservation.product_key, at)
        extra = allocate(
            beyond,
            order,
            contract.overage_policy,
            contract_id=contract.contract_id,
            period_draws=period_draws,
            period_overage=period_overage,
        )
        movements.extend(extra.movements())
    transfers = capture_transfers(
        reservation_id=reservation.reservation_id,
        contract_id=reservation.contract_id,
        product_key=reservation.product_key,
        holds=reservation.hold_parts,
        posted=posted,
    )
    if extra is not None:
        transfers += usage_transfers(
            reference=reservation_reference(reservation.reservation_id),
            contract_id=reservation.contract_id,
            product_key=reservation.product_key,
            draws=extra.parts,
            overage=extra.overage,
        )
    captured = replace(reservation, status=ReservationStatus.CAPTURED, captured_amount=amount)
    return ReservationStep(captured, tuple(movements), transfers, extra)


def void(reservation: Reservation) -> ReservationStep:
    """Release every hold; voiding a voided or expired reservation is a replay."""
    if reservation.status in (ReservationStatus.VOIDED, ReservationStatus.EXPIRED):
        return ReservationStep(reservation, replay=True)
    if reservation.status is ReservationStatus.CAPTURED:
        raise _closed(reservation, "voided")
    return _released(reservation, ReservationStatus.VOIDED, TransferCode.RESERVATION_VOID)


def expire(reservation: Reservation, *, at: datetime) -> ReservationStep:
    """Release the holds of a reservation whose TTL is up; a closed one is a replay."""
    if reservation.status is not ReservationStatus.AUTHORIZED:
        return ReservationStep(reservation, replay=True)
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidArgument.of_field("at", "must be a timezone-aware datetime")
    if at < reservation.expires_at:
        raise FailedPrecondition(
            f"reservation {reservation.reservation_id!r} is open until"
            f" {reservation.expires_at.isoformat()}",
            reason=RESERVATION_NOT_EXPIRED,
            violations=[_violation(reservation, "its TTL is not up")],
        )
    return _released(reservation, ReservationStatus.EXPIRED, TransferCode.RESERVATION_EXPIRY)


def _settle_holds(
    reservation: Reservation, amount: Decimal
) -> tuple[list[Decimal], Decimal, list[PoolMovement]]:
    # Runs under the exact context: what each hold posts, what is left beyond them, the moves.
    posted: list[Decimal] = []
    movements: list[PoolMovement] = []
    to_post = max(amount, ZERO)
    for hold in reservation.holds:
        part = min(hold.amount, to_post)
        to_post -= part
        posted.append(part)
        if part:
            movements.append(PoolMovement(hold.pool_id, MovementAction.POST, part))
        if hold.amount - part:
            movements.append(PoolMovement(hold.pool_id, MovementAction.RELEASE, hold.amount - part))
    return posted, amount - exact_sum(posted), movements


def _released(
    reservation: Reservation, status: ReservationStatus, code: TransferCode
) -> ReservationStep:
    movements = tuple(
        PoolMovement(hold.pool_id, MovementAction.RELEASE, hold.amount)
        for hold in reservation.holds
    )
    transfers = release_transfers(
        reservation_id=reservation.reservation_id,
        contract_id=reservation.contract_id,
        product_key=reservation.product_key,
        holds=reservation.hold_parts,
        code=code,
    )
    return ReservationStep(replace(reservation, status=status), movements, transfers)


def _check_amount(violations: ViolationCollector, path: str, value: object) -> None:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        violations.add(path, f"must be a finite Decimal ≥ 0, got {value!r}")


def _violation(reservation: Reservation, description: str) -> PreconditionViolation:
    return PreconditionViolation(
        "RESERVATION", f"reservations/{reservation.reservation_id}", description
    )


def _closed(reservation: Reservation, wanted: str) -> FailedPrecondition:
    reasons = {
        ReservationStatus.CAPTURED: RESERVATION_CAPTURED,
        ReservationStatus.VOIDED: RESERVATION_VOIDED,
        ReservationStatus.EXPIRED: RESERVATION_EXPIRED,
    }
    description = f"it is {reservation.status}, it cannot be {wanted}"
    return FailedPrecondition(
        f"reservation {reservation.reservation_id!r}: {description}",
        reason=reasons.get(reservation.status, RESERVATION_CAPTURED),
        violations=[_violation(reservation, description)],
    )


def _mismatch(reservation_id: str, description: str) -> AlreadyExists:
    return AlreadyExists(
        f"reservation {reservation_id!r} was {description}",
        reason=IDEMPOTENCY_KEY_MISMATCH,
        metadata={"reservation_id": reservation_id},
    )
