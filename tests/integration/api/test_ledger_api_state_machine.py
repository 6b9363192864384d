"""Property: through the real API and PostgreSQL, every answer is the one a pure model predicts.

A Hypothesis state machine plays a customer's contract over real gRPC against a real server and
database: grants (free and paid credit, commits, priorities, scopes, windows in the past and
future), top-ups, RateAndDebit and BatchRateAndDebit at several event times (so expired and
not-yet-started pools are in play), Authorize / Capture / Void, the expiry sweep of holds,
retries with the same id and payload, the same id with another payload, and concurrent twins
(one request sent twice at once). Before each call the model in `ledger_model.py` says what the
server must answer: accepted with which charge, draws, holds and overage, or refused with which
code and reason, or a replay. After every step it checks GetBalances (every pool's remaining and
pending, the available total, the overage) against the model, and in SQL the contract's
accounts: Σ debits = Σ credits (posted and pending), every account equals the sum of its
transfers, no pool below zero, every pool account equal to the model's pool.

It runs in a worker thread with blocking stubs, so the server's event loop serves meanwhile;
database reads go back to the loop. Every example opens its own customer and contract.
`RATING_LEDGER_PROFILE=long` (`make ledger-long`) runs thousands of examples instead of CI's few.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import asyncpg
import grpc
import hypothesis
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from rating_client.gen.rating.v1 import contract_pb2, contract_pb2_grpc, rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys
from tests.integration.api.ledger_api_operations import (
    CODE_NAMES,
    OFFSETS,
    Authorize,
    Capture,
    D,
    Event,
    Grant,
    Op,
    Rate,
    Void,
    World,
    amounts,
    calls,
    check_contract_ledger,
    contract_ledger,
    estimates,
    event_times,
    same_refusal,
    token_uses,
    usages,
    when,
)
from tests.integration.api.test_rate_and_debit import ledger_is_balanced
from tests.integration.billing import load_catalog
from tests.integration.ledger_model import ContractModel, Debit, Expected, Refusal, Release, Replay

pytestmark = pytest.mark.integration

PROFILE = os.environ.get("RATING_LEDGER_PROFILE", "ci")
"""`ci` (the default, part of `make test`) or `long` (`make ledger-long`)."""

_COMMON = hypothesis.settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILES = {
    "ci": hypothesis.settings(_COMMON, max_examples=30, stateful_step_count=20),
    "long": hypothesis.settings(_COMMON, max_examples=2000, stateful_step_count=30),
}
if "RATING_LEDGER_EXAMPLES" in os.environ:  # e.g. a quick look at a change, or a longer soak
    PROFILES[PROFILE] = hypothesis.settings(
        PROFILES[PROFILE], max_examples=int(os.environ["RATING_LEDGER_EXAMPLES"])
    )


class LedgerApiMachine(RuleBasedStateMachine):
    """One customer's contract over the real API, against the pure model."""

    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        self.base = datetime.now(UTC)
        self.tag = uuid.uuid4().hex[:10]
        self.customer_id = f"sm-{self.tag}"
        self.contract_id = ""
        self.model = ContractModel("block", None)
        self.sent: list[Op] = []
        self.first: dict[str, Any] = {}
        self.products: dict[str, str] = {}
        self.serial = 0
        self.world.stats["examples"] += 1

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.tag}-{self.serial}"

    def at(self, offset: str) -> datetime:
        moment = datetime.now(UTC) if offset == "now" else self.base + OFFSETS[offset]
        return when(moment)

    def count(self, what: str, expected: Expected) -> None:
        outcome = type(expected).__name__
        if isinstance(expected, Refusal):
            outcome = expected.reason or expected.code
        elif isinstance(expected, Debit) and expected.overage:
            outcome = "Debit with overage"
        elif isinstance(expected, Debit) and len(expected.draws) > 1:
            outcome = "Debit from several pools"
        self.world.stats[f"{what} {outcome}"] += 1

    # Sending and checking.

    def check(self, op: Op, expected: Expected, answer: Message | Refusal) -> None:
        """One answer against what the model expected of it."""
        if isinstance(expected, Refusal):
            assert same_refusal(expected, answer), f"{op}: expected {expected}, got {answer}"
            return
        assert not isinstance(answer, Refusal), f"{op}: expected {expected}, refused {answer}"
        if isinstance(expected, Replay):
            assert op.replayed(answer), f"{op}: expected a replay, got {answer}"
            op.same_answer(self, self.first[op.key], answer)
            return
        op.check_fresh(self, expected, answer)
        self.first.setdefault(op.key, answer)

    def perform(self, op: Op) -> Expected:
        expected = op.expect(self)
        method, request = op.rpc(self.world)
        self.check(op, expected, self.world.call(method, request))
        self.sent.append(op)
        self.count(type(op).__name__, expected)
        return expected

    def perform_twice_at_once(self, op: Op) -> None:
        """Exactly one fresh answer and one replay of it (or the same refusal twice)."""
        expected = op.expect(self)
        method, request = op.rpc(self.world)
        answers = self.world.call_twice(method, request)
        self.sent.append(op)
        self.count(f"twins {type(op).__name__}", expected)
        if isinstance(expected, Refusal | Replay):
            for answer in answers:
                self.check(op, expected, answer)
            return
        assert not any(isinstance(a, Refusal) for a in answers), (op, expected, answers)
        if isinstance(expected, Release) and expected.replay:
            for answer in answers:
                self.check(op, expected, answer)
            return
        fresh = [a for a in answers if not op.replayed(a)]
        assert len(fresh) == 1, f"{op}: {len(fresh)} fresh answers of twins: {answers}"
        [again] = [a for a in answers if op.replayed(a)]
        op.check_fresh(self, expected, fresh[0])
        self.first.setdefault(op.key, fresh[0])
        op.same_answer(self, fresh[0], again)

    def send(self, op: Op, twice_at_once: bool) -> None:
        if twice_at_once:
            self.perform_twice_at_once(op)
        else:
            self.perform(op)

    # Setup: a fresh customer and contract for each example.

    @initialize(
        policy=st.sampled_from(["block", "arrears"]),
        spend_cap=st.sampled_from([None, None, D(8), D(25)]),
        opening_credit=st.decimals(min_value=D(5), max_value=D(60), places=1),
    )
    def open_contract(
        self, policy: str, spend_cap: Decimal | None, opening_credit: Decimal
    ) -> None:
        world = self.world
        world.contracts.CreateCustomer(
            contract_pb2.CreateCustomerRequest(customer_id=self.customer_id, name=self.tag),
            metadata=world.metadata,
            timeout=30,
        )
        terms: dict[str, object] = {
            "customer_id": self.customer_id,
            "term_start": (self.base - timedelta(days=1)).isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            # One period from a day before B to a month after: every event here falls in it.
            "billing_interval_seconds": 30 * 86400,
            "invoice_currency": "USD",
            "rate_card_key": "list",
            "overage_policy": policy,
        }
        if spend_cap is not None:
            terms["spend_cap"] = str(spend_cap)
        reply = world.contracts.CreateContract(
            contract_pb2.CreateContractRequest(
                contract=json_format.ParseDict(terms, contract_pb2.Contract())
            ),
            metadata=world.metadata,
            timeout=30,
        )
        self.contract_id = reply.contract.contract_id
        self.model = ContractModel(policy, spend_cap)
        # Credit from before every event time, so backdated usage and holds find a pool too.
        opening = Grant(
            self.next_id("grant"),
            self.contract_id,
            False,
            "credit",
            opening_credit,
            1,
            None,
            (),
            self.at("-3h"),
            None,
        )
        self.perform(opening)

    # Money in.

    @rule(
        kind=st.sampled_from(["credit", "credit", "credit", "prepaid_commit", "postpaid_commit"]),
        amount=amounts,
        priority=st.integers(0, 2),
        cost_basis=st.sampled_from([None, "0", "0.5", "1"]),
        scope=st.sampled_from([(), ("calls",), ("tokens",), ("calls", "tokens")]),
        starts=st.sampled_from([None, "-3h"]),
        expires=st.sampled_from([None, None, "+3h", "-30m", "-70m"]),
        twice_at_once=st.booleans(),
    )
    def add_commitment(
        self,
        kind: str,
        amount: Decimal,
        priority: int,
        cost_basis: str | None,
        scope: tuple[str, ...],
        starts: str | None,
        expires: str | None,
        twice_at_once: bool,
    ) -> None:
        op = Grant(
            self.next_id("grant"),
            self.contract_id,
            False,
            kind,
            amount,
            priority,
            cost_basis,
            scope,
            None if starts is None else self.at(starts),
            None if expires is None else self.at(expires),
        )
        self.send(op, twice_at_once)

    @rule(
        amount=amounts,
        priority=st.integers(0, 2),
        cost_basis=st.sampled_from([None, "0.8"]),
        expires=st.sampled_from([None, "+3h"]),
        twice_at_once=st.booleans(),
    )
    def top_up(
        self,
        amount: Decimal,
        priority: int,
        cost_basis: str | None,
        expires: str | None,
        twice_at_once: bool,
    ) -> None:
        op = Grant(
            self.next_id("topup"),
            self.contract_id,
            True,
            "credit",
            amount,
            priority,
            cost_basis,
            (),
            None,
            None if expires is None else self.at(expires),
        )
        self.send(op, twice_at_once)

    # Usage.

    def event(self, usage: tuple[str, tuple[tuple[str, str], ...]], time: str) -> Event:
        event_type, properties = usage
        return Event(self.next_id("evt"), self.customer_id, event_type, properties, self.at(time))

    @rule(usage=usages, time=event_times, twice_at_once=st.booleans())
    def rate_and_debit(
        self, usage: tuple[str, tuple[tuple[str, str], ...]], time: str, twice_at_once: bool
    ) -> None:
        op = Rate(self.event(usage, time))
        self.send(op, twice_at_once)

    @rule(data=st.data(), size=st.integers(1, 5))
    def batch_rate_and_debit(self, data: st.DataObject, size: int) -> None:
        """Events debited in order; some retry an earlier event, some repeat one of the batch."""
        events: list[Event] = []
        earlier = [op.event for op in self.sent if isinstance(op, Rate)]
        for _ in range(size):
            source = data.draw(st.sampled_from(["fresh", "fresh", "fresh", "retry", "twin"]))
            # Not an id the batch already has with another payload: that one waits for the
            # first and is then rated on its own, after the batch.
            taken = {e.event_id: e for e in events}
            retries = [e for e in earlier if taken.get(e.event_id, e) == e]
            if source == "retry" and retries:
                events.append(data.draw(st.sampled_from(retries)))
            elif source == "twin" and events:
                events.append(data.draw(st.sampled_from(events)))
            else:
                events.append(self.event(data.draw(usages), data.draw(event_times)))
        expected: list[Expected] = []
        for n, event in enumerate(events):
            twin = next((i for i in range(n) if events[i] == event), None)
            if twin is None:
                expected.append(event.rated(self))
            elif isinstance(expected[twin], Refusal):
                expected.append(expected[twin])  # the same request waits for it: its answer
            else:
                expected.append(Replay())
        request = rating_pb2.BatchRateAndDebitRequest(events=[e.message() for e in events])
        reply = self.world.call(self.world.rating.BatchRateAndDebit, request)
        assert not isinstance(reply, Refusal), reply
        assert len(reply.results) == len(events)  # type: ignore[attr-defined]
        for event, want, result in zip(events, expected, reply.results, strict=True):  # type: ignore[attr-defined]
            answer: Message | Refusal
            if result.WhichOneof("result") == "error":
                answer = Refusal(CODE_NAMES[result.error.code], result.error.reason)
            else:
                answer = result.response
            self.check(Rate(event), want, answer)
            self.sent.append(Rate(event))
            self.count("batch item", want)

    # Reservations.

    @rule(
        product=st.sampled_from(["calls", "tokens"]),
        amount=estimates,
        time=st.sampled_from(["now", "now", "-90m"]),
        ttl_seconds=st.sampled_from([900, 86400]),
        twice_at_once=st.booleans(),
    )
    def authorize(
        self, product: str, amount: Decimal, time: str, ttl_seconds: int, twice_at_once: bool
    ) -> None:
        # Held at B − 90 min for 15 min, a hold is past its TTL from the start: the sweep's.
        op = Authorize(
            self.next_id("res"), self.customer_id, product, amount, self.at(time), ttl_seconds
        )
        self.products[op.reservation_id] = product
        self.send(op, twice_at_once)

    def reservation(self, data: st.DataObject) -> str:
        known = sorted(self.products)
        return data.draw(st.sampled_from([*known, *known, *known, f"res-{self.tag}-unknown"]))

    @rule(data=st.data(), time=st.sampled_from(["now", "-50m"]), twice_at_once=st.booleans())
    def capture(self, data: st.DataObject, time: str, twice_at_once: bool) -> None:
        reservation_id = self.reservation(data)
        product = self.products.get(reservation_id, "calls")
        usage = data.draw(calls if product == "calls" else token_uses)
        op = Capture(reservation_id, self.event(usage, time))
        self.send(op, twice_at_once)

    @rule(data=st.data(), twice_at_once=st.booleans())
    def void(self, data: st.DataObject, twice_at_once: bool) -> None:
        op = Void(self.reservation(data))
        self.send(op, twice_at_once)

    @rule()
    def sweep_expired_holds(self) -> None:
        """The server's sweep, run now: holds past their TTL are given back."""
        now = datetime.now(UTC)
        due = self.model.sweep(now)
        released = self.world.db(self.world.server.components.reservations.expire_due(limit=10_000))
        # Other examples' holds may be due too; ours all are released.
        assert released >= len(due)
        self.world.stats["sweep released"] += len(due)

    # Retries.

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """An earlier request again, same id, same payload: a replay (or, if refused, afresh)."""
        if self.sent:
            self.perform(data.draw(st.sampled_from(self.sent)))

    @rule(data=st.data(), twice_at_once=st.booleans())
    def retry_with_another_payload(self, data: st.DataObject, twice_at_once: bool) -> None:
        """An earlier id with another payload: ALREADY_EXISTS if it was stored."""
        tampered = [t for op in self.sent for t in op.tamperings()]
        if tampered:
            op = data.draw(st.sampled_from(tampered))
            self.send(op, twice_at_once)

    # Invariants.

    @invariant()
    def balances_match_the_model(self) -> None:
        now = datetime.now(UTC)
        reply = self.world.rating.GetBalances(
            rating_pb2.GetBalancesRequest(customer_id=self.customer_id),
            metadata=self.world.metadata,
            timeout=30,
        )
        pools = {p.pool_id: (D(p.remaining), D(p.pending)) for p in reply.pools}
        assert pools == self.model.balances(), (pools, self.model.balances())
        assert D(reply.available) == self.model.available(now), (reply.available, now)
        assert D(reply.overage) == self.model.overage
        self.world.stats["invariant GetBalances"] += 1

    @invariant()
    def the_contract_ledger_is_sound(self) -> None:
        accounts, transfers, pools = self.world.db(
            contract_ledger(self.world.conn, self.contract_id)
        )
        check_contract_ledger(accounts, transfers, pools, self.model)
        self.world.stats["invariant SQL ledger"] += 1


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Holds are released only by the machine's own sweep rule, when the model says so."""
    return replace(settings, reservation_sweep_seconds=10.0**9)


@pytest.mark.timeout(0 if PROFILE == "long" else 300)
async def test_every_answer_and_balance_is_the_models(
    server: RunningServer, acme: TenantKeys, database_url: str
) -> None:
    await load_catalog(database_url, acme.tenant_id)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stats: Counter[str] = Counter()
    LedgerApiMachine.world = World(
        rating_pb2_grpc.RatingServiceStub(channel),
        contract_pb2_grpc.ContractServiceStub(channel),
        acme.metadata(Role.ADMIN),
        asyncio.get_running_loop(),
        conn,
        server,
        stats,
    )
    started = time.monotonic()
    try:
        await asyncio.to_thread(
            run_state_machine_as_test, LedgerApiMachine, settings=PROFILES[PROFILE]
        )
    finally:
        channel.close()
        await conn.close()
    seconds = time.monotonic() - started
    print(f"\nledger state machine, profile {PROFILE}: {seconds:.0f} s")
    for what, n in sorted(stats.items()):
        print(f"  {what}: {n}")
    await ledger_is_balanced(database_url)
