"""Commitments and their credit pools: what applies to an event, and the order pools are drawn in.

A contract's commitments each carry one pool (one balance per access segment). Prepaid commits
and credits are drawable balances. A postpaid commit is not: it is a minimum spend over the term
whose shortfall is invoiced as a true-up at term end, so its pool holds no balance (balance and
pending are 0, it has no ledger account), it only records the committed amount, and it is never
in the draw-down order. Pools hold amounts in the contract's invoice currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import partial

from rating_service.core.dict_form import DictReader, utc_timestamp
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
    ViolationCollector,
)
from rating_service.core.ledger.journal import INSUFFICIENT_CREDIT
from rating_service.core.money import format_decimal
from rating_service.core.pricing.constraints import priced_exactly, under_prefix

ZERO = Decimal(0)
ONE = Decimal(1)


class CommitmentKind(StrEnum):
    """What a commitment is; free and bought credits differ only by their cost basis."""

    PREPAID_COMMIT = "prepaid_commit"
    """Paid up front (invoiced on a schedule), usable from starts_at to expires_at."""
    POSTPAID_COMMIT = "postpaid_commit"
    """A minimum spend over the term; the shortfall is invoiced at term end. Not drawable."""
    CREDIT = "credit"
    """Credit granted free (cost basis 0, promotional) or bought (top-up, auto-recharge)."""


@dataclass(frozen=True, slots=True)
class Pool:
    """One commitment's pool: its terms, and its posted balance and pending holds.

    `cost_basis` is what one unit of balance cost the customer (0 free, 1 bought at face value,
    between for a discount); `scope` None means every product. `balance` is posted and
    remaining; `pending` is held by open reservations, so `available = balance − pending`.
    """

    pool_id: str
    contract_id: str
    kind: CommitmentKind
    priority: int
    cost_basis: Decimal
    scope: frozenset[str] | None
    starts_at: datetime
    expires_at: datetime | None
    created_seq: int
    original_amount: Decimal
    balance: Decimal
    pending: Decimal = ZERO

    def __post_init__(self) -> None:
        violations = ViolationCollector()
        for name in ("pool_id", "contract_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                violations.add(name, "must be a non-empty string")
        if not isinstance(self.kind, CommitmentKind):
            violations.add("kind", f"must be one of {', '.join(CommitmentKind)}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            violations.add("priority", f"must be an integer, got {self.priority!r}")
        if _amount_ok(violations, "cost_basis", self.cost_basis) and self.cost_basis > ONE:
            violations.add(
                "cost_basis",
                f"must be between 0 (free) and 1 (bought at face value), got {self.cost_basis}",
            )
        self._check_scope(violations)
        starts_at = utc_timestamp(self.starts_at, "starts_at", violations)
        expires_at = (
            None
            if self.expires_at is None
            else utc_timestamp(self.expires_at, "expires_at", violations)
        )
        if starts_at is not None and expires_at is not None and expires_at <= starts_at:
            violations.add("expires_at", "must be after starts_at")
        if (
            isinstance(self.created_seq, bool)
            or not isinstance(self.created_seq, int)
            or self.created_seq < 0
        ):
            violations.add("created_seq", f"must be an integer ≥ 0, got {self.created_seq!r}")
        amounts_ok = all(
            _amount_ok(violations, name, getattr(self, name))
            for name in ("original_amount", "balance", "pending")
        )
        if amounts_ok and self.pending > self.balance:
            violations.add("pending", f"holds {self.pending}, more than the balance")
        if amounts_ok and self.kind is CommitmentKind.POSTPAID_COMMIT and self.balance:
            violations.add("balance", "a postpaid commit holds no balance (it is a minimum spend)")
        violations.raise_if_any("invalid pool")
        object.__setattr__(self, "starts_at", starts_at)
        object.__setattr__(self, "expires_at", expires_at)

    def holding(self, balance: Decimal, pending: Decimal) -> Pool:
        """This pool with another balance and pending hold; its terms are not checked again.

        Every debit moves a pool, and `__post_init__` re-validating terms that were validated
        when the pool was built cost 10–25 µs a time on the hot path; only the amounts are new.
        """
        if not _holds(self.kind, balance, pending):
            replace(self, balance=balance, pending=pending)  # raises, naming what is wrong
        moved = object.__new__(Pool)
        for name in Pool.__slots__:
            object.__setattr__(moved, name, getattr(self, name))
        object.__setattr__(moved, "balance", balance)
        object.__setattr__(moved, "pending", pending)
        return moved

    def _check_scope(self, violations: ViolationCollector) -> None:
        if self.scope is None:
            return
        if isinstance(self.scope, str) or not isinstance(self.scope, Iterable):
            violations.add("scope", "must be a set of product keys, or None for every product")
            return
        scope = frozenset(self.scope)
        if not scope:
            violations.add("scope", "must name at least one product (None means every product)")
        for key in sorted(scope, key=str):
            if not isinstance(key, str) or not key.strip():
                violations.add("scope", f"{key!r} is not a product key")
        object.__setattr__(self, "scope", scope)

    @property
    def available(self) -> Decimal:
        """What the pool can still give: balance less pending holds."""
        return priced_exactly(lambda: self.balance - self.pending, "pending")

    @property
    def is_drawable(self) -> bool:
        """False for a postpaid commit, which tracks a minimum spend rather than a balance."""
        return self.kind is not CommitmentKind.POSTPAID_COMMIT

    @property
    def is_free(self) -> bool:
        """True for promotional credit (cost basis 0)."""
        return self.cost_basis == 0

    def covers(self, product_key: str) -> bool:
        """True when the product is in the pool's scope."""
        return self.scope is None or product_key in self.scope

    def is_active_at(self, at: datetime) -> bool:
        """starts_at ≤ at < expires_at: an expired pool is never drawn, however late its sweep."""
        return self.starts_at <= at and (self.expires_at is None or at < self.expires_at)

    def applies_to(self, product_key: str, at: datetime) -> bool:
        """True when an event of this product at this time may use the pool."""
        return self.covers(product_key) and self.is_active_at(at)


def draw_down_order(pools: Iterable[Pool], product_key: str, at: datetime) -> tuple[Pool, ...]:
    """The drawable pools that apply to an event, in the order they are drawn from.

    Priority (smaller first) → cost basis (free before paid) → narrower scope (fewest products;
    every-product scope is widest) → soonest expiry (no expiry last) → earliest start →
    creation order, and the pool id last so the order is total. Postpaid commits are left out
    (they hold no balance); empty pools are kept (allocation passes over them).
    """
    return tuple(
        sorted(
            (pool for pool in pools if pool.is_drawable and pool.applies_to(product_key, at)),
            key=_draw_down_key,
        )
    )


def _draw_down_key(
    pool: Pool,
) -> tuple[int, Decimal, tuple[bool, int], tuple[bool, datetime], datetime, int, str]:
    scope_width = (True, 0) if pool.scope is None else (False, len(pool.scope))
    expiry = (True, pool.starts_at) if pool.expires_at is None else (False, pool.expires_at)
    return (
        pool.priority,
        pool.cost_basis,
        scope_width,
        expiry,
        pool.starts_at,
        pool.created_seq,
        pool.pool_id,
    )


def postpaid_shortfall(commitment: Pool, term_spend: Decimal) -> Decimal:
    """What a postpaid commit's true-up invoices at term end: max(committed − spend, 0)."""
    if commitment.kind is not CommitmentKind.POSTPAID_COMMIT:
        raise InvalidArgument.of_field("kind", "only a postpaid commit has a shortfall")
    return max(priced_exactly(lambda: commitment.original_amount - term_spend, "term_spend"), ZERO)


class MovementAction(StrEnum):
    """How a movement changes a pool."""

    DRAW = "draw"
    """balance −= amount (a negative amount is a credit back, balance grows)."""
    HOLD = "hold"
    """pending += amount: a reservation holds it."""
    RELEASE = "release"
    """pending −= amount: a hold given back."""
    POST = "post"
    """pending −= amount and balance −= amount: a hold captured."""
    FUND = "fund"
    """balance += amount: a grant or top-up into an existing pool."""
    EXPIRE = "expire"
    """balance −= amount: unused balance moved to breakage."""


@dataclass(frozen=True, slots=True)
class PoolMovement:
    """One change to one pool's balance or pending amount, mirroring one ledger transfer."""

    pool_id: str
    action: MovementAction
    amount: Decimal


def apply_movements(
    pools: Mapping[str, Pool], movements: Iterable[PoolMovement]
) -> dict[str, Pool]:
    """The pools after the movements, or FailedPrecondition INSUFFICIENT_CREDIT and no change.

    Every pool must keep 0 ≤ pending ≤ balance, the same rule the pool's ledger account
    enforces (debits posted + pending ≤ credits posted).
    """
    result = dict(pools)
    for movement in movements:
        pool = result.get(movement.pool_id)
        if pool is None:
            raise InvalidArgument.of_field("pool_id", f"{movement.pool_id!r} is not a known pool")
        balance, pending = priced_exactly(partial(_moved, pool, movement), "amount")
        if balance < 0 or pending < 0 or pending > balance:
            raise FailedPrecondition(
                f"pool {pool.pool_id!r} cannot {movement.action} {format_decimal(movement.amount)}:"
                f" available {format_decimal(pool.available)}",
                reason=INSUFFICIENT_CREDIT,
                violations=[
                    PreconditionViolation(
                        "BALANCE",
                        f"pools/{pool.pool_id}",
                        f"available {format_decimal(pool.available)}",
                    )
                ],
                metadata={"pool_id": pool.pool_id},
            )
        result[pool.pool_id] = pool.holding(balance, pending)
    return result


def _moved(pool: Pool, movement: PoolMovement) -> tuple[Decimal, Decimal]:
    # Called under the exact context (see apply_movements).
    amount = movement.amount
    action = movement.action
    if action is MovementAction.DRAW or action is MovementAction.EXPIRE:
        return pool.balance - amount, pool.pending
    if action is MovementAction.FUND:
        return pool.balance + amount, pool.pending
    if action is MovementAction.HOLD:
        return pool.balance, pool.pending + amount
    if action is MovementAction.RELEASE:
        return pool.balance, pool.pending - amount
    return pool.balance - amount, pool.pending - amount


def _holds(kind: CommitmentKind, balance: object, pending: object) -> bool:
    """Whether a pool of this kind may hold this balance and pending (`Pool.__post_init__`)."""
    return (
        isinstance(balance, Decimal)
        and isinstance(pending, Decimal)
        and balance.is_finite()
        and pending.is_finite()
        and ZERO <= pending <= balance
        and not (kind is CommitmentKind.POSTPAID_COMMIT and balance)
    )


def _amount_ok(violations: ViolationCollector, path: str, value: object) -> bool:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        violations.add(path, f"must be a finite Decimal ≥ 0, got {value!r}")
        return False
    return True


def pool_from_dict(
    data: Mapping[str, object], field_path: str = "", *, contract_id: str | None = None
) -> Pool:
    """Build a commitment's pool from its plain-dict form, or raise naming every bad field.

    `balance` defaults to `original_amount` (0 for a postpaid commit) and `pending` to 0;
    `contract_id` may come from the enclosing contract instead of the dict.
    """
    violations = ViolationCollector()
    fields = DictReader(data, field_path, violations, "a commitment")
    pool_id = fields.text("pool_id")
    owner = contract_id if contract_id is not None and not fields.has("contract_id") else None
    contract = owner if owner is not None else fields.text("contract_id")
    kind = fields.choice("kind", CommitmentKind)
    priority = fields.integer("priority", 0)
    cost_basis = fields.decimal("cost_basis", ZERO)
    scope = _scope(fields)
    starts_at = fields.timestamp("starts_at")
    expires_at = fields.optional_timestamp("expires_at")
    created_seq = fields.integer("created_seq", 0)
    original = fields.decimal("original_amount")
    postpaid = kind is CommitmentKind.POSTPAID_COMMIT
    balance = fields.decimal("balance", ZERO if postpaid else original)
    pending = fields.decimal("pending", ZERO)
    fields.reject_unknown()
    violations.raise_if_any("invalid commitment")
    if (
        kind is None
        or priority is None
        or cost_basis is None
        or starts_at is None
        or created_seq is None
        or original is None
        or balance is None
        or pending is None
    ):  # each recorded a violation already
        raise InvalidArgument.of_field(field_path or "commitment", "is incomplete")
    try:
        return Pool(
            pool_id,
            contract,
            kind,
            priority,
            cost_basis,
            scope,
            starts_at,
            expires_at,
            created_seq,
            original,
            balance,
            pending,
        )
    except InvalidArgument as error:
        raise under_prefix(error, field_path) from None


def _scope(fields: DictReader) -> frozenset[str] | None:
    raw = fields.raw("scope")
    if raw is None:
        return None
    keys: set[str] = set()
    for index, key in enumerate(fields.sequence("scope")):
        if isinstance(key, str) and key.strip():
            keys.add(key)
        else:
            fields.violations.add(fields.at(f"scope[{index}]"), "must be a product key")
    return frozenset(keys)


def pool_to_dict(pool: Pool) -> dict[str, object]:
    """The plain-dict form of a pool; `pool_from_dict` reads it back to an equal pool."""
    return {
        "pool_id": pool.pool_id,
        "contract_id": pool.contract_id,
        "kind": str(pool.kind),
        "priority": pool.priority,
        "cost_basis": format_decimal(pool.cost_basis),
        "scope": None if pool.scope is None else sorted(pool.scope),
        "starts_at": pool.starts_at.isoformat(),
        "expires_at": None if pool.expires_at is None else pool.expires_at.isoformat(),
        "created_seq": pool.created_seq,
        "original_amount": format_decimal(pool.original_amount),
        "balance": format_decimal(pool.balance),
        "pending": format_decimal(pool.pending),
    }


COMMITMENT_NOT_ENDABLE = "COMMITMENT_NOT_ENDABLE"
"""FailedPrecondition reason: the commitment cannot end then (postpaid, or ended already)."""


def ended_at(pool: Pool, at: datetime) -> Pool:
    """The pool ending at `at` (an amendment's moment): drawn no more from then, its balance
    expired as any expiry is. Refused for a postpaid commit (its minimum is a term of the
    contract, trued up at term end) and for a pool that has ended by then already."""
    description = ""
    if pool.kind is CommitmentKind.POSTPAID_COMMIT:
        description = "a postpaid commit holds no balance to end; amend the contract instead"
    elif pool.expires_at is not None and pool.expires_at <= at:
        description = f"it ends at {pool.expires_at.isoformat()} already"
    elif at <= pool.starts_at:
        description = f"it starts at {pool.starts_at.isoformat()}, after the amendment"
    if description:
        raise FailedPrecondition(
            f"pool {pool.pool_id!r} cannot end at {at.isoformat()}: {description}",
            reason=COMMITMENT_NOT_ENDABLE,
            violations=[PreconditionViolation("COMMITMENT", f"pools/{pool.pool_id}", description)],
            metadata={"pool_id": pool.pool_id},
        )
    return replace(pool, expires_at=at)
