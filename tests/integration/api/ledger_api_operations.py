"""The ledger API state machine's stateless parts: its inputs, operations and SQL check.

test_ledger_api_state_machine.py plays a contract over the real API with these: the Hypothesis
strategies and event times it draws from, the `World` it sends through, one operation per RPC
(what the model says of it, how to send it, how to read the answer), and the check of a
contract's accounts and transfers in SQL against the model.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import asyncpg
import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from rating_client.errors import decode_rich_status, error_info
from rating_client.gen.rating.v1 import contract_pb2, contract_pb2_grpc, rating_pb2, rating_pb2_grpc
from rating_service.runtime.server import RunningServer
from tests.integration.ledger_model import (
    ContractModel,
    Debit,
    Expected,
    GrantTerms,
    Holding,
    NewPool,
    Refusal,
    Release,
)

T = TypeVar("T")
D = Decimal
ZERO = D(0)

CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

# Times relative to the example's start B: events, holds and pool windows are placed on them,
# far enough apart that the seconds an example takes never move a pool in or out of its window.
OFFSETS = {
    "-4h": timedelta(hours=-4),
    "-3h": timedelta(hours=-3),
    "-90m": timedelta(minutes=-90),
    "-70m": timedelta(minutes=-70),
    "-50m": timedelta(minutes=-50),
    "-30m": timedelta(minutes=-30),
    "+3h": timedelta(hours=3),
}

# Small pools too, so one charge often spans several of them.
amounts = st.one_of(
    st.decimals(min_value=D("0.5"), max_value=D(3), places=2),
    st.decimals(min_value=D("0.5"), max_value=D(20), places=2),
)
estimates = st.decimals(min_value=D("0.01"), max_value=D(12), places=2)
calls = st.just(("api.call", ()))
token_uses = st.builds(
    lambda n, size: ("llm.completion", (("model", size), ("tokens", str(n)))),
    st.integers(1, 900),
    st.sampled_from(["small", "large"]),
)
usages = st.one_of(calls, token_uses)
event_times = st.sampled_from(["now", "now", "now", "-50m", "-90m", "-4h"])


def ts(at: datetime) -> Timestamp:
    """A datetime as the protobuf Timestamp sent."""
    message = Timestamp()
    message.FromDatetime(at)
    return message


def when(moment: datetime | None) -> datetime:
    """A Timestamp's round trip: what the server will read."""
    assert moment is not None
    return ts(moment).ToDatetime(tzinfo=UTC)


@dataclass
class World:
    """What every example shares: stubs to the test's server, its loop and a database connection."""

    rating: rating_pb2_grpc.RatingServiceStub
    contracts: contract_pb2_grpc.ContractServiceStub
    metadata: tuple[tuple[str, str]]
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection
    server: RunningServer
    stats: Counter[str]

    def db(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(60)

    def call(self, method: Callable[..., Any], request: Message) -> Message | Refusal:
        """An answer, or the refusal as (status code, ErrorInfo reason)."""
        try:
            answer: Message = method(request, metadata=self.metadata, timeout=30)
        except grpc.RpcError as error:
            return refusal_of(error)
        return answer

    def call_twice(self, method: Any, request: Message) -> tuple[Any, ...]:
        """The same request sent twice at once."""
        futures = [method.future(request, metadata=self.metadata, timeout=30) for _ in range(2)]
        answers: list[Any] = []
        for future in futures:
            try:
                answers.append(future.result())
            except grpc.RpcError as error:
                answers.append(refusal_of(error))
        return tuple(answers)


def refusal_of(error: grpc.RpcError) -> Refusal:
    """A failed call as the model writes a refusal; never INTERNAL or UNKNOWN."""
    code = error.code()
    status = decode_rich_status(error.trailing_metadata())
    info = None if status is None else error_info(status)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error
    return Refusal(code.name, "" if info is None else info.reason)


def same_refusal(expected: Refusal, answer: Message | Refusal) -> bool:
    """Whether an answer is the refusal expected (of any reason, when none is expected)."""
    return (
        isinstance(answer, Refusal)
        and answer.code == expected.code
        and (not expected.reason or answer.reason == expected.reason)
    )


def amounts_of(parts: Any) -> dict[str, Decimal]:
    """Pool id → amount, of an answer's draws or holds."""
    return {part.pool_id: D(part.amount) for part in parts}


def balances_of(parts: Any) -> dict[str, tuple[Decimal, Decimal]]:
    """Pool id → (remaining, pending), of an answer's balances."""
    return {part.pool_id: (D(part.remaining), D(part.pending)) for part in parts}


class Machine(Protocol):
    """The state machine as an operation sees it: the pure model it predicts answers with."""

    @property
    def model(self) -> ContractModel:
        """The model of the example's contract."""


class Op(Protocol):
    """An operation: its RPC, what the model says of it, and how to read the answer."""

    @property
    def key(self) -> str:
        """The idempotency key, with its namespace (event, reservation, grant, top-up, void)."""

    def rpc(self, world: World) -> tuple[Any, Message]: ...
    def expect(self, machine: Machine) -> Expected: ...
    def replayed(self, answer: Message) -> bool: ...
    def check_fresh(self, machine: Machine, expected: Expected, answer: Any) -> None: ...
    def same_answer(self, machine: Machine, first: Any, answer: Any) -> None: ...
    def tamperings(self) -> tuple[Op, ...]: ...


@dataclass(frozen=True)
class Event:
    """A usage event as sent, timestamp included (a retry resends exactly this)."""

    event_id: str
    customer_id: str
    event_type: str
    properties: tuple[tuple[str, str], ...]
    at: datetime

    def message(self) -> rating_pb2.UsageEvent:
        return rating_pb2.UsageEvent(
            event_id=self.event_id,
            customer_id=self.customer_id,
            event_type=self.event_type,
            timestamp=ts(self.at),
            properties=dict(self.properties),
        )

    def payload(self, capture: str | None) -> Hashable:
        return (self.event_type, self.properties, self.at, capture)

    def rated(self, machine: Machine, capture: str | None = None) -> Expected:
        return machine.model.rate(
            self.event_id,
            self.payload(capture),
            self.event_type,
            dict(self.properties),
            self.at,
            datetime.now(UTC),
            capture,
        )

    def with_note(self) -> Event:
        return replace(self, properties=(*self.properties, ("note", "another payload")))

    def shifted(self) -> Event:
        return replace(self, at=self.at - timedelta(seconds=1))


def check_debit(machine: Machine, expected: Expected, answer: Any) -> None:
    """A RateAndDebitResponse against the model's Debit."""
    assert isinstance(expected, Debit), expected
    assert not answer.replay
    got = (D(answer.charge), amounts_of(answer.draws), D(answer.overage))
    assert got == (expected.charge, expected.draws, expected.overage), (got, expected)
    assert balances_of(answer.balances) == expected.balances, (answer.balances, expected)


def same_debit(first: Any, answer: Any) -> None:
    """A replayed debit answers as the first did, but for its replay flag."""
    copy = type(answer)()
    copy.CopyFrom(answer)
    copy.replay = first.replay
    assert copy == first, (first, answer)


@dataclass(frozen=True)
class Rate:
    """RateAndDebit of one event."""

    event: Event

    @property
    def key(self) -> str:
        return f"event:{self.event.event_id}"

    def rpc(self, world: World) -> tuple[Any, Message]:
        return world.rating.RateAndDebit, rating_pb2.RateAndDebitRequest(event=self.event.message())

    def expect(self, machine: Machine) -> Expected:
        return self.event.rated(machine)

    def replayed(self, answer: Any) -> bool:
        return bool(answer.replay)

    def check_fresh(self, machine: Machine, expected: Expected, answer: Any) -> None:
        check_debit(machine, expected, answer)

    def same_answer(self, machine: Machine, first: Any, answer: Any) -> None:
        same_debit(first, answer)

    def tamperings(self) -> tuple[Op, ...]:
        return (Rate(self.event.with_note()), Rate(self.event.shifted()))


@dataclass(frozen=True)
class Capture:
    """Capture of a reservation with the event that used it."""

    reservation_id: str
    event: Event

    @property
    def key(self) -> str:
        return f"event:{self.event.event_id}"

    def rpc(self, world: World) -> tuple[Any, Message]:
        request = rating_pb2.CaptureRequest(
            reservation_id=self.reservation_id, event=self.event.message()
        )
        return world.rating.Capture, request

    def expect(self, machine: Machine) -> Expected:
        return self.event.rated(machine, capture=self.reservation_id)

    def replayed(self, answer: Any) -> bool:
        return bool(answer.debit.replay)

    def check_fresh(self, machine: Machine, expected: Expected, answer: Any) -> None:
        check_debit(machine, expected, answer.debit)
        assert isinstance(expected, Debit)
        assert D(answer.released) == expected.released, (answer.released, expected)

    def same_answer(self, machine: Machine, first: Any, answer: Any) -> None:
        same_debit(first.debit, answer.debit)
        assert answer.released == first.released

    def tamperings(self) -> tuple[Op, ...]:
        return (Capture(self.reservation_id, self.event.with_note()),)


@dataclass(frozen=True)
class Authorize:
    """Authorize: hold an estimate on the customer's pools until a TTL."""

    reservation_id: str
    customer_id: str
    product: str
    amount: Decimal
    at: datetime
    ttl_seconds: int

    @property
    def key(self) -> str:
        return f"reservation:{self.reservation_id}"

    def rpc(self, world: World) -> tuple[Any, Message]:
        request = rating_pb2.AuthorizeRequest(
            reservation_id=self.reservation_id,
            customer_id=self.customer_id,
            product_key=self.product,
            amount=str(self.amount),
            timestamp=ts(self.at),
            ttl_seconds=self.ttl_seconds,
        )
        return world.rating.Authorize, request

    def expect(self, machine: Machine) -> Expected:
        return machine.model.authorize(
            self.reservation_id,
            (self.product, self.amount, self.at, self.ttl_seconds),
            self.product,
            self.amount,
            self.at,
            timedelta(seconds=self.ttl_seconds),
        )

    def replayed(self, answer: Any) -> bool:
        return bool(answer.replay)

    def check_fresh(self, machine: Machine, expected: Expected, answer: Any) -> None:
        assert isinstance(expected, Holding), expected
        holds = tuple((h.pool_id, D(h.amount)) for h in answer.holds)
        assert holds == expected.holds, (holds, expected.holds)  # in draw-down order
        assert answer.expire_time.ToDatetime(tzinfo=UTC) == expected.expires_at
        assert balances_of(answer.balances) == expected.balances, (answer.balances, expected)

    def same_answer(self, machine: Machine, first: Any, answer: Any) -> None:
        assert (answer.holds, answer.expire_time) == (first.holds, first.expire_time)
        # A replay shows the hold's pools as they are now.
        now = {
            pool_id: machine.model.remaining(pool_id)
            for pool_id, _ in amounts_of(first.holds).items()
        }
        assert balances_of(answer.balances) == now, (answer.balances, now)

    def tamperings(self) -> tuple[Op, ...]:
        return (
            replace(self, amount=self.amount + 1),
            replace(self, ttl_seconds=self.ttl_seconds - 60),
        )


@dataclass(frozen=True)
class Void:
    """Void of a reservation: its holds given back."""

    reservation_id: str

    @property
    def key(self) -> str:
        return f"void:{self.reservation_id}"

    def rpc(self, world: World) -> tuple[Any, Message]:
        return world.rating.Void, rating_pb2.VoidRequest(reservation_id=self.reservation_id)

    def expect(self, machine: Machine) -> Expected:
        return machine.model.void(self.reservation_id)

    def replayed(self, answer: Any) -> bool:
        return bool(answer.replay)

    def check_fresh(self, machine: Machine, expected: Expected, answer: Any) -> None:
        assert isinstance(expected, Release), expected
        assert (D(answer.released), answer.replay) == (expected.released, expected.replay)

    def same_answer(self, machine: Machine, first: Any, answer: Any) -> None:
        assert answer.released == first.released

    def tamperings(self) -> tuple[Op, ...]:
        return ()  # a void has no payload to change


@dataclass(frozen=True)
class Grant:
    """AddCommitment (top_up False) or TopUp (top_up True)."""

    grant_id: str
    contract_id: str
    top_up: bool
    kind: str
    amount: Decimal
    priority: int
    cost_basis: str | None
    scope: tuple[str, ...]
    starts_at: datetime | None
    expires_at: datetime | None

    @property
    def key(self) -> str:
        return f"{'top_up' if self.top_up else 'grant'}:{self.grant_id}"

    def terms(self) -> GrantTerms:
        default = "1" if self.top_up or self.kind != "credit" else "0"
        return GrantTerms(
            self.kind,
            self.amount,
            self.priority,
            D(self.cost_basis or default),
            frozenset(self.scope) or None,
            self.starts_at,
            self.expires_at,
        )

    def payload(self) -> Hashable:
        return (self.kind, self.amount, self.priority, self.cost_basis, self.scope)

    def rpc(self, world: World) -> tuple[Any, Message]:
        request: Any
        method: Any
        if self.top_up:
            request = contract_pb2.TopUpRequest(
                top_up_id=self.grant_id,
                contract_id=self.contract_id,
                amount=str(self.amount),
                priority=self.priority,
            )
            method = world.contracts.TopUp
        else:
            request = contract_pb2.AddCommitmentRequest(
                grant_id=self.grant_id,
                contract_id=self.contract_id,
                kind=self.kind,
                amount=str(self.amount),
                priority=self.priority,
                scope=list(self.scope),
            )
            if self.starts_at is not None:
                request.starts_at.CopyFrom(ts(self.starts_at))
            method = world.contracts.AddCommitment
        if self.cost_basis is not None:
            request.cost_basis = self.cost_basis
        if self.expires_at is not None:
            request.expires_at.CopyFrom(ts(self.expires_at))
        return method, request

    def expect(self, machine: Machine) -> Expected:
        payload = (self.payload(), self.starts_at, self.expires_at)
        return machine.model.grant(self.key, payload, self.terms(), datetime.now(UTC))

    def replayed(self, answer: Any) -> bool:
        return bool(answer.replay)

    def check_fresh(self, machine: Machine, expected: Expected, answer: Any) -> None:
        assert isinstance(expected, NewPool), expected
        made = answer.commitment
        terms = self.terms()
        balance = ZERO if terms.kind == "postpaid_commit" else terms.amount
        assert (made.kind, D(made.amount), D(made.balance), D(made.pending)) == (
            terms.kind,
            terms.amount,
            balance,
            ZERO,
        ), made
        assert (made.priority, D(made.cost_basis)) == (terms.priority, terms.cost_basis), made
        starts = made.starts_at.ToDatetime(tzinfo=UTC)
        if self.starts_at is not None:
            assert starts == self.starts_at
        payload = (self.payload(), self.starts_at, self.expires_at)
        machine.model.open_pool(self.key, payload, terms, made.pool_id, starts)

    def same_answer(self, machine: Machine, first: Any, answer: Any) -> None:
        assert answer.commitment.pool_id == machine.model.pool_of(self.key)

    def tamperings(self) -> tuple[Op, ...]:
        return (replace(self, amount=self.amount + 1),)


PENDING, POST_PENDING = 1, 2
"""Transfer flags as stored (TigerBeetle's two-phase transfers)."""


async def contract_ledger(
    conn: asyncpg.Connection, contract_id: str
) -> tuple[dict[str, asyncpg.Record], list[asyncpg.Record], dict[str, str | None]]:
    """A contract's accounts, every transfer touching them, and pool id → account id."""
    accounts = {
        row["account_id"]: row
        for row in await conn.fetch(
            "SELECT account_id, kind, debits_posted, credits_posted, debits_pending,"
            " credits_pending FROM accounts WHERE contract_id = $1",
            contract_id,
        )
    }
    transfers = await conn.fetch(
        "SELECT transfer_id, debit_account_id, credit_account_id, amount, flags, pending_id"
        " FROM transfers WHERE debit_account_id = ANY($1::text[])"
        " OR credit_account_id = ANY($1::text[])",
        list(accounts),
    )
    pools = {
        row["pool_id"]: row["account_id"]
        for row in await conn.fetch(
            "SELECT pool_id, account_id FROM pools WHERE contract_id = $1", contract_id
        )
    }
    return accounts, transfers, pools


def check_contract_ledger(
    accounts: dict[str, asyncpg.Record],
    transfers: list[asyncpg.Record],
    pools: dict[str, str | None],
    model: ContractModel,
) -> None:
    """A contract's ledger in SQL: balanced, each account its transfers' sum, pools as modelled."""
    ids = set(accounts)
    posted = {a: [ZERO, ZERO] for a in ids}
    pending = {a: [ZERO, ZERO] for a in ids}
    resolved = {t["pending_id"] for t in transfers if t["pending_id"] is not None}
    for t in transfers:
        # Money of a contract moves between its own accounts.
        assert t["debit_account_id"] in ids and t["credit_account_id"] in ids, dict(t)
        flags, amount = t["flags"], t["amount"]
        if flags in (0, POST_PENDING):
            totals = posted
        elif flags == PENDING and t["transfer_id"] not in resolved:
            totals = pending
        else:
            continue  # a void, or a pending transfer already posted or voided
        totals[t["debit_account_id"]][0] += amount
        totals[t["credit_account_id"]][1] += amount
    for account_id, row in accounts.items():
        assert [row["debits_posted"], row["credits_posted"]] == posted[account_id], row
        assert [row["debits_pending"], row["credits_pending"]] == pending[account_id], row
        if row["kind"] == "pool":
            left = row["credits_posted"] - row["debits_posted"] - row["debits_pending"]
            assert left >= 0, row
    assert sum(r["debits_posted"] for r in accounts.values()) == sum(
        r["credits_posted"] for r in accounts.values()
    )
    assert sum(r["debits_pending"] for r in accounts.values()) == sum(
        r["credits_pending"] for r in accounts.values()
    )
    for pool_id, (remaining, held) in model.balances().items():
        pool_account = pools[pool_id]
        if pool_account is None:  # a postpaid commit has no balance, so no account
            assert (remaining, held) == (ZERO, ZERO)
            continue
        row = accounts[pool_account]
        assert row["credits_posted"] - row["debits_posted"] == remaining, (pool_id, row)
        assert row["debits_pending"] == held, (pool_id, row)
    assert set(pools) == set(model.pools)
