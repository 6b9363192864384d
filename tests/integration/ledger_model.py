"""A pure model of one contract's pools, holds and idempotency keys, as the rating API shows them.

The API state machine (test_ledger_api_state_machine.py) asks this model, before every call,
what the real server must answer: accepted (with which draws, holds, charge and overage) or
refused (with which status code and reason), or a replay of an earlier answer. It is written
from DESIGN.md §4-§5 and imports nothing of `rating_service`: a rule the product gets wrong
must not be copied into the prediction, or the test could only agree with itself.

The rules, as the model keeps them:
- A pool applies to an event when it is drawable (not a postpaid commit: that is a minimum
  spend with no balance), covers the event's product, and is active at the event's timestamp
  (starts_at ≤ t < expires_at). An expired pool is never drawn, whatever its balance.
- Draw-down order: priority (smaller first) → cost basis (free first) → narrower scope →
  sooner expiry (none last) → earlier start → creation order. Each pool gives at most its
  balance less what reservations hold on it.
- What the pools cannot cover is refused INSUFFICIENT_CREDIT under `block` (nothing changes) or
  accrues as overage under `arrears`. Before that, a spend cap refuses (SPEND_CAP_EXCEEDED) any
  charge that would take the period's spend (every accepted charge) beyond it.
- Authorize holds an estimate the same way (partially under `arrears`) until its TTL; Capture
  gives the holds back and rates the actual usage by the normal rules, in one step; Void gives
  them back; a sweep gives back the holds of reservations past their TTL.
- Idempotency: an id seen with the same payload is a replay and changes nothing; with another
  payload it is refused ALREADY_EXISTS IDEMPOTENCY_KEY_MISMATCH; a refused call stores nothing,
  so its id is free again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

ZERO = Decimal(0)

PRODUCTS = ("calls", "tokens", "embeddings")
"""Every product of the test catalog (tests/integration/billing.py)."""

TOKEN_PRICES = {"small": Decimal("0.001"), "large": Decimal("0.01")}


@dataclass(frozen=True)
class Refusal:
    """A refused call: its gRPC status code name and ErrorInfo reason ("" = code only)."""

    code: str
    reason: str = ""


MISMATCH = Refusal("ALREADY_EXISTS", "IDEMPOTENCY_KEY_MISMATCH")
INSUFFICIENT_CREDIT = Refusal("FAILED_PRECONDITION", "INSUFFICIENT_CREDIT")
SPEND_CAP_EXCEEDED = Refusal("RESOURCE_EXHAUSTED", "SPEND_CAP_EXCEEDED")
RESERVATION_NOT_FOUND = Refusal("NOT_FOUND", "RESERVATION_NOT_FOUND")
RESERVATION_NOT_HELD = Refusal("FAILED_PRECONDITION", "RESERVATION_NOT_HELD")
RESERVATION_CAPTURED = Refusal("FAILED_PRECONDITION", "RESERVATION_CAPTURED")
INVALID = Refusal("INVALID_ARGUMENT")


@dataclass(frozen=True)
class Replay:
    """The id was used before with the same payload: the first answer again, nothing changes."""


@dataclass(frozen=True)
class Debit:
    """A rated event the server must accept: its charge, draws, overage, pools after."""

    charge: Decimal
    draws: dict[str, Decimal]
    overage: Decimal
    balances: dict[str, tuple[Decimal, Decimal]]
    """(remaining, pending) after the event, of each pool it drew from."""
    released: Decimal = ZERO
    """For a capture: the part of the holds given back, max(held − charge, 0)."""


@dataclass(frozen=True)
class Holding:
    """An authorization the server must accept: its holds in draw-down order, and its expiry."""

    holds: tuple[tuple[str, Decimal], ...]
    expires_at: datetime
    balances: dict[str, tuple[Decimal, Decimal]]


@dataclass(frozen=True)
class Release:
    """A void the server must accept: what it gives back, and whether it is a replay."""

    released: Decimal
    replay: bool


@dataclass(frozen=True)
class NewPool:
    """A grant or top-up the server must accept; the server names the pool."""


Expected = Debit | Holding | Release | NewPool | Refusal | Replay


@dataclass
class ModelPool:
    """One pool: its terms, and its posted balance and pending holds."""

    pool_id: str
    kind: str
    priority: int
    cost_basis: Decimal
    scope: frozenset[str] | None
    starts_at: datetime
    expires_at: datetime | None
    created: int
    balance: Decimal
    pending: Decimal = ZERO

    def applies(self, product: str, at: datetime) -> bool:
        """Drawable, covers the product, and active at `at`."""
        return (
            self.kind != "postpaid_commit"
            and (self.scope is None or product in self.scope)
            and self.starts_at <= at
            and (self.expires_at is None or at < self.expires_at)
        )

    def order(self) -> tuple[Hashable, ...]:
        """Sort key of the draw-down order (DESIGN.md §5)."""
        width = len(PRODUCTS) if self.scope is None else len(self.scope)
        expiry = (1, self.starts_at) if self.expires_at is None else (0, self.expires_at)
        return (self.priority, self.cost_basis, width, expiry, self.starts_at, self.created)


@dataclass
class ModelHold:
    """One reservation: what it holds where, until when, and where it is in its life."""

    payload: Hashable
    holds: tuple[tuple[str, Decimal], ...]
    expires_at: datetime
    state: str = "held"

    @property
    def held(self) -> Decimal:
        """The total held."""
        return sum((amount for _, amount in self.holds), ZERO)


@dataclass(frozen=True)
class GrantTerms:
    """What a grant or top-up asks for; `starts_at` None means when the server makes it."""

    kind: str
    amount: Decimal
    priority: int
    cost_basis: Decimal
    scope: frozenset[str] | None
    starts_at: datetime | None
    expires_at: datetime | None


@dataclass
class ContractModel:
    """A contract's pools, holds, period spend and overage, and the ids it has answered."""

    overage_policy: str
    spend_cap: Decimal | None
    pools: dict[str, ModelPool] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    events: dict[str, Hashable] = field(default_factory=dict)
    grants: dict[str, tuple[Hashable, str]] = field(default_factory=dict)
    spend: Decimal = ZERO
    overage: Decimal = ZERO

    # Pricing (the test catalog): a call costs 1, tokens 0.001 (small) or 0.01 (large) each.

    @staticmethod
    def price(event_type: str, properties: dict[str, str]) -> tuple[str, Decimal]:
        """(product, charge) of an event of the test catalog."""
        if event_type == "api.call":
            return "calls", Decimal(1)
        assert event_type == "llm.completion", event_type
        return "tokens", Decimal(properties["tokens"]) * TOKEN_PRICES[properties["model"]]

    # Grants and top-ups.

    def grant(self, key: str, payload: Hashable, terms: GrantTerms, now: datetime) -> Expected:
        """A new pool, a replay, or a refusal; `key` is "grant:<id>" or "top_up:<id>"."""
        seen = self.grants.get(key)
        if seen is not None:
            return Replay() if seen[0] == payload else MISMATCH
        start = terms.starts_at or now
        if terms.expires_at is not None and terms.expires_at <= start:
            return INVALID
        return NewPool()

    def open_pool(
        self, key: str, payload: Hashable, terms: GrantTerms, pool_id: str, starts_at: datetime
    ) -> None:
        """Record the pool the server made for an accepted grant (its id, its start)."""
        self.grants[key] = (payload, pool_id)
        balance = ZERO if terms.kind == "postpaid_commit" else terms.amount
        self.pools[pool_id] = ModelPool(
            pool_id,
            terms.kind,
            terms.priority,
            terms.cost_basis,
            terms.scope,
            starts_at,
            terms.expires_at,
            len(self.pools),
            balance,
        )

    def pool_of(self, key: str) -> str:
        """The pool an accepted grant made."""
        return self.grants[key][1]

    # Rating.

    def _drawn(
        self,
        amount: Decimal,
        product: str,
        at: datetime,
        pending: dict[str, Decimal],
    ) -> tuple[list[tuple[str, Decimal]], Decimal]:
        """(pool, part) in draw-down order, and what the pools could not cover."""
        order = sorted(
            (p for p in self.pools.values() if p.applies(product, at)), key=ModelPool.order
        )
        left = amount
        parts = []
        for pool in order:
            take = min(left, pool.balance - pending[pool.pool_id])
            if take > 0:
                parts.append((pool.pool_id, take))
                left -= take
        return parts, left

    def _capped(self, amount: Decimal) -> bool:
        return self.spend_cap is not None and amount > 0 and self.spend + amount > self.spend_cap

    def rate(
        self,
        event_id: str,
        payload: Hashable,
        event_type: str,
        properties: dict[str, str],
        at: datetime,
        now: datetime,
        capture: str | None = None,
    ) -> Expected:
        """What RateAndDebit (or Capture, with `capture`) must answer; applied if accepted."""
        if event_id in self.events:
            return Replay() if self.events[event_id] == payload else MISMATCH
        product, charge = self.price(event_type, properties)
        pending = {pool_id: pool.pending for pool_id, pool in self.pools.items()}
        hold = None
        if capture is not None:
            hold = self.holds.get(capture)
            if hold is None:
                return RESERVATION_NOT_FOUND
            if hold.state != "held" or hold.expires_at <= now:
                return RESERVATION_NOT_HELD
            for pool_id, amount in hold.holds:
                pending[pool_id] -= amount
        if self._capped(charge):
            return SPEND_CAP_EXCEEDED
        parts, left = self._drawn(charge, product, at, pending)
        if left and self.overage_policy == "block":
            return INSUFFICIENT_CREDIT
        # Accepted: apply it.
        for pool_id, value in pending.items():
            self.pools[pool_id].pending = value
        for pool_id, amount in parts:
            self.pools[pool_id].balance -= amount
        self.spend += charge
        self.overage += left
        self.events[event_id] = payload
        released = ZERO
        if hold is not None:
            hold.state = "captured"
            released = max(hold.held - max(charge, ZERO), ZERO)
        return Debit(
            charge,
            dict(parts),
            left,
            {pool_id: self.remaining(pool_id) for pool_id, _ in parts},
            released,
        )

    # Reservations.

    def authorize(
        self,
        reservation_id: str,
        payload: Hashable,
        product: str,
        amount: Decimal,
        at: datetime,
        ttl: timedelta,
    ) -> Expected:
        """What Authorize must answer; applied if accepted."""
        seen = self.holds.get(reservation_id)
        if seen is not None:
            return Replay() if seen.payload == payload else MISMATCH
        if self._capped(amount):
            return SPEND_CAP_EXCEEDED
        pending = {pool_id: pool.pending for pool_id, pool in self.pools.items()}
        parts, left = self._drawn(amount, product, at, pending)
        if left and self.overage_policy == "block":
            return INSUFFICIENT_CREDIT
        for pool_id, part in parts:
            self.pools[pool_id].pending += part
        hold = ModelHold(payload, tuple(parts), at + ttl)
        self.holds[reservation_id] = hold
        return Holding(
            hold.holds, hold.expires_at, {pool_id: self.remaining(pool_id) for pool_id, _ in parts}
        )

    def void(self, reservation_id: str) -> Expected:
        """What Void must answer; applied if accepted."""
        hold = self.holds.get(reservation_id)
        if hold is None:
            return RESERVATION_NOT_FOUND
        if hold.state == "captured":
            return RESERVATION_CAPTURED
        if hold.state != "held":
            return Release(hold.held, replay=True)
        self._give_back(hold, "voided")
        return Release(hold.held, replay=False)

    def sweep(self, now: datetime) -> list[str]:
        """Expire every held reservation whose TTL is up at `now`; their ids."""
        due = [rid for rid, h in self.holds.items() if h.state == "held" and h.expires_at <= now]
        for rid in due:
            self._give_back(self.holds[rid], "expired")
        return due

    def _give_back(self, hold: ModelHold, state: str) -> None:
        for pool_id, amount in hold.holds:
            self.pools[pool_id].pending -= amount
        hold.state = state

    # Reading.

    def remaining(self, pool_id: str) -> tuple[Decimal, Decimal]:
        """(remaining, pending) of a pool."""
        pool = self.pools[pool_id]
        return pool.balance, pool.pending

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """(remaining, pending) of every pool."""
        return {pool_id: self.remaining(pool_id) for pool_id in self.pools}

    def available(self, at: datetime) -> Decimal:
        """Σ remaining − pending over the drawable pools active at `at`."""
        return sum(
            (
                p.balance - p.pending
                for p in self.pools.values()
                if p.kind != "postpaid_commit"
                and p.starts_at <= at
                and (p.expires_at is None or at < p.expires_at)
            ),
            ZERO,
        )

    def open_holds(self) -> Iterable[str]:
        """Ids of reservations still held."""
        return (rid for rid, hold in self.holds.items() if hold.state == "held")
