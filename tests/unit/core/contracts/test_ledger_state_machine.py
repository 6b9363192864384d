"""Property: any sequence of operations keeps the ledger sound, and a retry changes nothing.

A Hypothesis state machine plays a small service around the pure core: grants, top-ups,
debits (charges and credit backs), reservations (authorize, capture, void, expiry), pool expiry,
rollovers into a next term's pool, and retries of earlier operations under the same
idempotency key. After every step it checks: Σ debits = Σ credits (posted and pending), every
account equals the sum of its transfers, no pool below zero, every pool's balance and pending
equal its ledger account's, and no credit back gives a pool more than that product took from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rating_service.core.contracts import (
    CommitmentKind,
    Contract,
    MovementAction,
    OveragePolicy,
    Pool,
    PoolMovement,
    Reservation,
    ReservationStatus,
    apply_movements,
    authorize,
    capture,
    expire,
    plan_debit,
    void,
)
from rating_service.core.contracts.lifecycle import Renewal
from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
)
from rating_service.core.ledger import (
    AccountKind,
    IdempotentOutcome,
    Ledger,
    Transfer,
    adjustments_account_id,
    breakage_account_id,
    expiry_transfers,
    grant_transfers,
    invariant_breaches,
    open_account,
    overage_account_id,
    payload_fingerprint,
    payments_clearing_account_id,
    pool_account_id,
    promotions_account_id,
    recall,
    revenue_account_id,
    top_up_transfers,
)
from rating_service.core.ledger.posting_rules import rollover_transfers
from tests.unit.core.contracts.builders import T0, a_contract

D = Decimal
ZERO = D(0)
PRODUCTS = ("gpt", "embed")
TTL = timedelta(minutes=30)

amounts = st.decimals(min_value=D("0.001"), max_value=D(40), places=3)
charges = st.one_of(amounts, st.decimals(min_value=D(-15), max_value=D(0), places=3))
scopes = st.sampled_from([None, frozenset({"gpt"}), frozenset({"embed"}), frozenset(PRODUCTS)])


@dataclass
class World:
    """Everything the service keeps: ledger, pools, reservations, period-to-date figures."""

    ledger: Ledger
    pools: dict[str, Pool] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    draws: dict[str, dict[str, Decimal]] = field(
        default_factory=lambda: {product: {} for product in PRODUCTS}
    )
    overage: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(PRODUCTS, ZERO))

    def copy(self) -> World:
        return World(
            self.ledger,
            dict(self.pools),
            dict(self.reservations),
            {product: dict(parts) for product, parts in self.draws.items()},
            dict(self.overage),
        )

    def record_draws(
        self, product: str, parts: tuple[tuple[str, Decimal], ...], overage: Decimal
    ) -> None:
        for pool_id, amount in parts:
            self.draws[product][pool_id] = self.draws[product].get(pool_id, ZERO) + amount
        self.overage[product] += overage


class LedgerMachine(RuleBasedStateMachine):
    """A tiny rating service over the pure core, retried and raced by Hypothesis."""

    def __init__(self) -> None:
        super().__init__()
        self.contract: Contract = a_contract()
        self.now: datetime = T0 + timedelta(days=1)
        contract_id = self.contract.contract_id
        fixed = [
            open_account(promotions_account_id(contract_id), AccountKind.PROMOTIONS, "USD"),
            open_account(
                payments_clearing_account_id(contract_id), AccountKind.PAYMENTS_CLEARING, "USD"
            ),
            open_account(breakage_account_id(contract_id), AccountKind.BREAKAGE, "USD"),
            open_account(overage_account_id(contract_id), AccountKind.OVERAGE_RECEIVABLE, "USD"),
            open_account(adjustments_account_id(contract_id), AccountKind.ADJUSTMENTS, "USD"),
            *(
                open_account(revenue_account_id(contract_id, p), AccountKind.REVENUE, "USD")
                for p in PRODUCTS
            ),
        ]
        self.world = World(Ledger.empty().open(fixed))
        self.outcomes: dict[str, IdempotentOutcome[bool]] = {}
        self.done: list[tuple[str, dict[str, object]]] = []
        self.last_batch: tuple[Transfer, ...] = ()
        self.serial = 0

    # The service layer: idempotency keys in front of pure operations.

    def submit(self, key: str, payload: dict[str, object]) -> bool:
        """Run an operation once per key; True when it ran now, False on a replay or refusal."""
        fingerprint = payload_fingerprint(payload)
        if recall(self.outcomes.get(key), key, fingerprint) is not None:
            return False
        try:
            # perform works on a copy: a refused call leaves the world as it was.
            after, batch = self.perform(payload)
        except (FailedPrecondition, ResourceExhausted):
            return False
        self.world = after
        self.last_batch = batch
        self.outcomes[key] = IdempotentOutcome(key, fingerprint, True)
        self.done.append((key, payload))
        return True

    def perform(self, payload: dict[str, object]) -> tuple[World, tuple[Transfer, ...]]:
        """Apply one operation to a copy of the world; raise and change nothing if refused."""
        world = self.world.copy()
        op = payload["op"]
        contract = self.contract
        cid = contract.contract_id
        if op == "grant":
            pool_id = str(payload["pool_id"])
            amount = D(str(payload["amount"]))
            expires = payload["expires_in_days"]
            scope = payload["scope"]
            pool = Pool(
                pool_id,
                cid,
                CommitmentKind.CREDIT,
                int(str(payload["priority"])),
                D(str(payload["cost_basis"])),
                frozenset(str(key) for key in scope) if isinstance(scope, list) else None,
                self.now,
                None if expires is None else self.now + timedelta(days=int(str(expires))),
                self.serial,
                amount,
                amount,
            )
            batch = grant_transfers(
                reference=f"grant:{pool_id}",
                contract_id=cid,
                pool_id=pool_id,
                amount=amount,
                cost_basis=pool.cost_basis,
            )
            world.ledger = world.ledger.open(
                [open_account(pool_account_id(pool_id), AccountKind.POOL, "USD")]
            ).apply(batch)
            world.pools[pool_id] = pool
            return world, batch
        if op == "top_up":
            pool_id, amount = str(payload["pool_id"]), D(str(payload["amount"]))
            batch = top_up_transfers(
                reference=f"topup:{payload['top_up_id']}",
                contract_id=cid,
                pool_id=pool_id,
                amount=amount,
            )
            world.ledger = world.ledger.apply(batch)
            world.pools = apply_movements(
                world.pools, [PoolMovement(pool_id, MovementAction.FUND, amount)]
            )
            return world, batch
        if op == "debit":
            product = str(payload["product"])
            plan = plan_debit(
                contract=contract,
                pools=list(world.pools.values()),
                product_key=product,
                charge=D(str(payload["charge"])),
                at=self.now,
                reference=f"event:{payload['event_id']}",
                period_draws=world.draws[product],
                period_overage=world.overage[product],
            )
            world.ledger = world.ledger.apply(plan.transfers)
            world.pools = {pool.pool_id: pool for pool in plan.pools_after}
            world.record_draws(product, plan.allocation.parts, plan.allocation.overage)
            return world, plan.transfers
        reservation_id = str(payload["reservation_id"])
        if op == "authorize":
            step = authorize(
                reservation_id=reservation_id,
                contract=contract,
                pools=list(world.pools.values()),
                product_key=str(payload["product"]),
                estimate=D(str(payload["estimate"])),
                at=self.now,
                ttl=TTL,
                existing=world.reservations.get(reservation_id),
            )
        else:
            reservation = world.reservations[reservation_id]
            if op == "capture":
                product = reservation.product_key
                step = capture(
                    reservation,
                    amount=D(str(payload["amount"])),
                    contract=contract,
                    pools=list(world.pools.values()),
                    at=self.now,
                    period_draws=world.draws[product],
                    period_overage=world.overage[product],
                )
                posted = tuple(
                    (m.pool_id, m.amount) for m in step.movements if m.action is MovementAction.POST
                )
                extra = step.allocation
                world.record_draws(
                    product,
                    posted + (extra.parts if extra else ()),
                    extra.overage if extra else ZERO,
                )
            elif op == "void":
                step = void(reservation)
            else:
                step = expire(reservation, at=self.now)
        world.ledger = world.ledger.apply(step.transfers)
        world.pools = apply_movements(world.pools, step.movements)
        world.reservations[reservation_id] = step.reservation
        return world, step.transfers

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}_{self.serial}"

    # Rules.

    @initialize(policy=st.sampled_from(list(OveragePolicy)))
    def choose_policy(self, policy: OveragePolicy) -> None:
        self.contract = a_contract(policy=policy)

    @rule(
        amount=amounts,
        cost_basis=st.sampled_from(["0", "0.8", "1"]),
        priority=st.integers(0, 2),
        scope=scopes,
        expires_in_days=st.one_of(st.none(), st.integers(1, 5)),
    )
    def grant(
        self,
        amount: Decimal,
        cost_basis: str,
        priority: int,
        scope: frozenset[str] | None,
        expires_in_days: int | None,
    ) -> None:
        pool_id = self.next_id("pool")
        self.submit(
            f"grant:{pool_id}",
            {
                "op": "grant",
                "pool_id": pool_id,
                "amount": amount,
                "cost_basis": cost_basis,
                "priority": priority,
                "scope": None if scope is None else sorted(scope),
                "expires_in_days": expires_in_days,
            },
        )

    @precondition(lambda self: any(p.is_active_at(self.now) for p in self.world.pools.values()))
    @rule(data=st.data(), amount=amounts)
    def top_up(self, data: st.DataObject, amount: Decimal) -> None:
        active = sorted(p.pool_id for p in self.world.pools.values() if p.is_active_at(self.now))
        pool_id = data.draw(st.sampled_from(active))
        top_up_id = self.next_id("topup")
        self.submit(
            f"topup:{top_up_id}",
            {"op": "top_up", "top_up_id": top_up_id, "pool_id": pool_id, "amount": amount},
        )

    @rule(product=st.sampled_from(PRODUCTS), charge=charges)
    def debit(self, product: str, charge: Decimal) -> None:
        event_id = self.next_id("evt")
        self.submit(
            f"event:{event_id}",
            {"op": "debit", "event_id": event_id, "product": product, "charge": charge},
        )

    @rule(product=st.sampled_from(PRODUCTS), estimate=amounts)
    def authorize(self, product: str, estimate: Decimal) -> None:
        reservation_id = self.next_id("res")
        self.submit(
            f"authorize:{reservation_id}",
            {
                "op": "authorize",
                "reservation_id": reservation_id,
                "product": product,
                "estimate": estimate,
            },
        )

    def open_reservations(self) -> list[str]:
        return sorted(
            r.reservation_id
            for r in self.world.reservations.values()
            if r.status is ReservationStatus.AUTHORIZED and self.now < r.expires_at
        )

    @precondition(lambda self: bool(self.open_reservations()))
    @rule(data=st.data(), amount=st.one_of(amounts, st.just(ZERO), st.decimals(-5, 0, places=2)))
    def capture(self, data: st.DataObject, amount: Decimal) -> None:
        reservation_id = data.draw(st.sampled_from(self.open_reservations()))
        self.submit(
            f"capture:{reservation_id}",
            {"op": "capture", "reservation_id": reservation_id, "amount": amount},
        )

    @precondition(lambda self: bool(self.open_reservations()))
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        reservation_id = data.draw(st.sampled_from(self.open_reservations()))
        self.submit(f"void:{reservation_id}", {"op": "void", "reservation_id": reservation_id})

    @rule(minutes=st.integers(1, 3 * 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule()
    def sweep_reservations(self) -> None:
        for reservation in list(self.world.reservations.values()):
            if (
                reservation.status is ReservationStatus.AUTHORIZED
                and self.now >= reservation.expires_at
            ):
                rid = reservation.reservation_id
                self.submit(f"expire:{rid}", {"op": "expire", "reservation_id": rid})

    @rule()
    def sweep_expired_pools(self) -> None:
        # Move what an expired pool has left (not what its holds keep back) to breakage.
        for pool in list(self.world.pools.values()):
            if pool.expires_at is None or self.now < pool.expires_at or not pool.available:
                continue
            world = self.world.copy()
            batch = expiry_transfers(
                reference=f"expiry:{self.next_id(pool.pool_id)}",
                contract_id=self.contract.contract_id,
                pool_id=pool.pool_id,
                amount=pool.available,
            )
            world.ledger = world.ledger.apply(batch)
            world.pools = apply_movements(
                world.pools, [PoolMovement(pool.pool_id, MovementAction.EXPIRE, pool.available)]
            )
            self.world = world

    @rule(
        data=st.data(),
        percent=st.sampled_from([D(0), D(50), D(100)]),
        cap=st.one_of(st.none(), amounts),
    )
    def roll_over(self, data: st.DataObject, percent: Decimal, cap: Decimal | None) -> None:
        # A renewal carries part of what a pool has left into a new pool, pool to pool.
        left = sorted(
            (p for p in self.world.pools.values() if p.available), key=lambda p: p.pool_id
        )
        if not left:
            return
        pool = data.draw(st.sampled_from(left))
        carried = Renewal(rollover_percent=percent, rollover_cap=cap).rollover(pool.available)
        if not carried:
            return
        world = self.world.copy()
        credit_id = self.next_id("rolled")
        batch = rollover_transfers(
            reference=f"rollover:{credit_id}", parts=[(pool.pool_id, carried)], to_pool_id=credit_id
        )
        world.ledger = world.ledger.open(
            [open_account(pool_account_id(credit_id), AccountKind.POOL, "USD")]
        ).apply(batch)
        world.pools[pool.pool_id] = replace(pool, balance=pool.balance - carried)
        world.pools[credit_id] = Pool(
            credit_id,
            self.contract.contract_id,
            CommitmentKind.CREDIT,
            pool.priority,
            pool.cost_basis,
            pool.scope,
            self.now,
            None,
            self.serial,
            carried,
            carried,
        )
        self.world = world

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        # The same key with the same payload: a replay, nothing changes.
        key, payload = data.draw(st.sampled_from(self.done))
        before = self.world
        assert self.submit(key, dict(payload)) is False
        assert self.world is before

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data())
    def retry_with_another_payload(self, data: st.DataObject) -> None:
        key, payload = data.draw(st.sampled_from(self.done))
        before = self.world
        with pytest.raises(AlreadyExists):
            self.submit(key, {**payload, "tampered": True})
        assert self.world is before

    @precondition(lambda self: bool(self.last_batch))
    @rule()
    def replay_the_last_batch_into_the_ledger(self) -> None:
        # Transfers already journaled are skipped, as TigerBeetle answers `exists`.
        assert self.world.ledger.apply(self.last_batch) is self.world.ledger

    @precondition(
        lambda self: any(
            r.status is ReservationStatus.CAPTURED for r in self.world.reservations.values()
        )
    )
    @rule(data=st.data())
    def capture_a_captured_reservation_again(self, data: st.DataObject) -> None:
        captured = sorted(
            (r for r in self.world.reservations.values() if r.status is ReservationStatus.CAPTURED),
            key=lambda r: r.reservation_id,
        )
        reservation = data.draw(st.sampled_from(captured))
        assert reservation.captured_amount is not None
        step = capture(
            reservation,
            amount=reservation.captured_amount,
            contract=self.contract,
            pools=list(self.world.pools.values()),
            at=self.now,
        )
        assert step.replay and not step.movements and not step.transfers

    # Invariants.

    @invariant()
    def the_ledger_is_sound(self) -> None:
        ledger = self.world.ledger
        assert invariant_breaches(ledger.accounts, ledger.transfers) == ()

    @invariant()
    def pools_match_their_accounts_and_never_go_negative(self) -> None:
        for pool in self.world.pools.values():
            account = self.world.ledger.accounts[pool_account_id(pool.pool_id)]
            assert pool.balance == account.credit_balance
            assert pool.pending == account.debits_pending
            assert pool.available >= 0
            assert account.available_credit >= 0

    @invariant()
    def a_credit_back_never_gives_a_pool_more_than_it_gave(self) -> None:
        for parts in self.world.draws.values():
            assert all(net >= 0 for net in parts.values()), parts

    @invariant()
    def open_holds_match_open_reservations(self) -> None:
        held = sum(
            (
                r.held
                for r in self.world.reservations.values()
                if r.status is ReservationStatus.AUTHORIZED
            ),
            ZERO,
        )
        assert held == sum((p.pending for p in self.world.pools.values()), ZERO)
        assert held == sum((t.amount for t in self.world.ledger.pending.values()), ZERO)


LedgerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_ledger_state_machine = LedgerMachine.TestCase
