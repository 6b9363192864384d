"""StreamRateAndDebit over real gRPC and PostgreSQL: the answers of RateAndDebit, one per event.

A stream must answer every event exactly as a RateAndDebit call would (same charges, same
replays, same errors down to the BadRequest fields), let a refused event fail alone, hold a fast
producer to its window, refuse a bad key or role for the whole stream, and end cleanly when the
server drains, its events either answered or left for the client to send elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import hypothesis
import pytest
from google.protobuf import json_format
from grpc import aio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from rating_client import (
    EventResult,
    IdempotencyKeyMismatch,
    NotAllowed,
    RatingClient,
    RatingError,
    usage_event,
)
from rating_client.errors import RETRYABLE, status_error
from rating_client.gen.rating.v1 import rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.api.test_rate_and_debit import ledger_is_balanced
from tests.integration.billing import Account, open_account

pytestmark = pytest.mark.integration

MAX_MESSAGE_BYTES = 64 * 1024
"""Small, so that one event of a stream can be over the size limit and the next one not."""

WINDOW = 8


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A small message limit and window, so both are reached with a few events."""
    return replace(settings, max_message_bytes=MAX_MESSAGE_BYTES, stream_window=WINDOW)


def _requests(
    events: list[rating_pb2.UsageEvent],
) -> Iterator[rating_pb2.StreamRateAndDebitRequest]:
    return (rating_pb2.StreamRateAndDebitRequest(event=event) for event in events)


async def _stream(
    client: RatingClient, events: list[rating_pb2.UsageEvent]
) -> list[rating_pb2.StreamRateAndDebitResponse]:
    """Every answer of one stream of `events`, straight from the stub (no client retries)."""
    call = client.rating.StreamRateAndDebit(_requests(events), metadata=client._metadata)
    return [answer async for answer in call]


async def _unary(
    client: RatingClient, event: rating_pb2.UsageEvent
) -> rating_pb2.RateAndDebitResponse | RatingError:
    """RateAndDebit's answer to one event, or its error (no retries)."""
    try:
        return await client.call(
            client.rating.RateAndDebit, rating_pb2.RateAndDebitRequest(event=event)
        )
    except RatingError as refused:
        return refused


_CLOCK = re.compile(r"ahead of \S+")


def _described(answer: rating_pb2.RateAndDebitResponse | RatingError) -> dict[str, Any]:
    """An answer as plain data, errors with everything a caller can read of them."""
    if isinstance(answer, RatingError):
        return {
            "code": answer.code.name,
            "reason": answer.reason,
            # The server's clock in EVENT_IN_FUTURE's message moves on between two calls.
            "message": _CLOCK.sub("<now>", answer.message),
            "fields": answer.fields,
            "metadata": answer.metadata,
        }
    return json_format.MessageToDict(answer)


def _streamed(answer: rating_pb2.StreamRateAndDebitResponse) -> dict[str, Any]:
    if answer.HasField("error"):
        return _described(status_error(answer.error))
    return _described(answer.response)


async def test_a_bad_event_fails_alone_with_the_error_rate_and_debit_gives(
    client: RatingClient,
) -> None:
    account = await open_account(client, "cus-mixed")
    pool = await account.grant("3", grant_id="g")
    at = datetime.now(UTC)
    events = [
        account.event("m-0", "api.call"),
        account.event("m-1", "no.such.type"),
        account.event("m-\x00", "api.call"),  # a control character in an id
        usage_event("m-3", account.customer_id, "api.call", {"note": "x" * MAX_MESSAGE_BYTES}),
        rating_pb2.UsageEvent(event_id="m-4", customer_id=account.customer_id),
        usage_event("m-5", "cus-nobody", "api.call", {}),
        usage_event("m-6", account.customer_id, "api.call", {}, at + timedelta(minutes=10)),
        account.event("m-7", "api.call"),
        account.event("m-8", "api.call"),
        account.event("m-9", "api.call"),  # the pool held 3
    ]
    answers = await _stream(client, events)
    assert [a.event_id for a in answers] == [e.event_id for e in events]
    assert [a.position for a in answers] == list(range(len(events)))
    kinds = [a.WhichOneof("result") for a in answers]
    assert kinds == ["response"] + ["error"] * 6 + ["response"] * 2 + ["error"]
    reasons = [status_error(a.error).reason for a in answers if a.HasField("error")]
    assert reasons == [
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "MESSAGE_TOO_LARGE",
        "INVALID_ARGUMENT",
        "NO_CONTRACT_IN_FORCE",
        "EVENT_IN_FUTURE",
        "INSUFFICIENT_CREDIT",
    ]
    assert await account.balances() == {pool: Decimal(0)}
    # Each error is the one RateAndDebit gives the same event (refused events stored nothing).
    for event, answer in zip(events, answers, strict=True):
        if answer.HasField("error"):
            assert _streamed(answer) == _described(await _unary(client, event)), event.event_id


async def test_a_retried_event_replays_and_another_payload_is_a_mismatch(
    client: RatingClient,
) -> None:
    account = await open_account(client, "cus-idem")
    await account.grant("10", grant_id="g")
    first = account.event("i-1", "api.call")
    other = rating_pb2.UsageEvent()
    other.CopyFrom(first)
    other.properties["note"] = "another payload"
    # The twin in flight on the same stream, then retries on a second stream and by RateAndDebit.
    answers = await _stream(client, [first, first, other])
    again = await _stream(client, [first, other])
    unary = await _unary(client, first)
    assert [a.WhichOneof("result") for a in answers + again] == [
        "response",
        "response",
        "error",
        "response",
        "error",
    ]
    rated = answers[0].response
    assert not rated.replay
    for replayed in (answers[1].response, again[0].response, unary):
        assert isinstance(replayed, rating_pb2.RateAndDebitResponse)
        assert replayed.replay
        replayed.replay = False
        assert replayed == rated
    for mismatch in (answers[2], again[1]):
        error = status_error(mismatch.error)
        assert isinstance(error, IdempotencyKeyMismatch)
        assert (error.code.name, error.reason, error.metadata) == (
            "ALREADY_EXISTS",
            "IDEMPOTENCY_KEY_MISMATCH",
            {"event_id": "i-1"},
        )
    assert await account.balances() == {rated.draws[0].pool_id: Decimal(9)}


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (None, ("UNAUTHENTICATED", "MISSING_API_KEY")),
        (Role.OPS, ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")),
    ],
)
async def test_a_bad_key_or_role_ends_the_stream(
    server: RunningServer,
    client: RatingClient,
    acme: TenantKeys,
    database_url: str,
    role: Role | None,
    expected: tuple[str, str],
) -> None:
    account = await open_account(client, "cus-refused")
    await account.grant("10", grant_id="g")
    metadata = () if role is None else acme.metadata(role)
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = rating_pb2_grpc.RatingServiceStub(channel)
        call = stub.StreamRateAndDebit(
            _requests([account.event("r-1", "api.call")]), metadata=metadata, timeout=10
        )
        with pytest.raises(aio.AioRpcError) as refused:
            [answer async for answer in call]
    code, reason = status_of(refused.value)
    assert (code.name, reason) == expected
    token = "" if role is None else acme.tokens[role]
    async with RatingClient(f"127.0.0.1:{server.port}", token) as stranger:
        with pytest.raises(NotAllowed):
            [r async for r in stranger.stream_rate_and_debit([account.event("r-2", "api.call")])]
    assert await _rated_event_ids(database_url) == set()


async def _rated_event_ids(database_url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT event_id FROM rated_events")
    finally:
        await conn.close()
    return {row["event_id"] for row in rows}


# --- The property: a stream answers as RateAndDebit calls made one after another -------------

EXAMPLES = 25

_KINDS = ("call", "tokens", "embedding", "unknown", "nobody", "future", "bad_id", "bad_quantity")


@st.composite
def _steps(draw: st.DrawFn) -> tuple[int, str, str, str]:
    """(event id number, kind of event, its quantity, payload variant)."""
    return (
        draw(st.integers(0, 3)),  # few ids, so replays and mismatches are frequent
        draw(st.sampled_from(_KINDS)),
        draw(st.sampled_from(["1", "60", "100", "150"])),
        draw(st.sampled_from(["a", "b"])),
    )


def _plan_event(
    step: tuple[int, str, str, str], customer_id: str, at: datetime
) -> rating_pb2.UsageEvent:
    """The event a step describes, for one customer; ids are the customer's own."""
    number, kind, quantity, variant = step
    event_id = f"{customer_id}-e{number}" + ("\x00" if kind == "bad_id" else "")
    properties = {"variant": variant}
    event_type = {"tokens": "llm.completion", "embedding": "embedding.created"}.get(
        kind, "no.such.type" if kind == "unknown" else "api.call"
    )
    if kind in ("tokens", "embedding"):
        properties["tokens"] = quantity
    if kind == "tokens":
        properties["model"] = "large" if variant == "a" else "small"
    if kind == "bad_quantity":
        event_type, properties["tokens"] = "embedding.created", "-" + quantity
    when = at + timedelta(minutes=10) if kind == "future" else at
    return usage_event(
        event_id, "cus-nobody" if kind == "nobody" else customer_id, event_type, properties, when
    )


async def _twin_accounts(
    client: RatingClient, tag: str, policy: str, grant: str, cap: str | None
) -> tuple[Account, Account]:
    """Two customers on the same terms: one rated by calls, one by a stream."""
    pair = []
    for side in ("u", "s"):
        account = await open_account(client, f"{tag}-{side}", overage_policy=policy, spend_cap=cap)
        await account.grant(grant, grant_id=f"g-{account.customer_id}")
        pair.append(account)
    return pair[0], pair[1]


def _normalised(answers: list[dict[str, Any]], account: Account, pool: str) -> str:
    """Answers with what is the customer's own blanked: ids (customer, events, contract, pool)
    and its first period, which starts when its contract began."""
    text = json.dumps(
        [{k: v for k, v in a.items() if k not in ("periodStart", "periodEnd")} for a in answers],
        sort_keys=True,
    )
    for own in (account.customer_id, account.contract_id, pool):
        text = text.replace(own, "<own>")
    return text


async def test_a_stream_answers_exactly_as_rate_and_debit_calls_one_after_another(
    server: RunningServer, client: RatingClient
) -> None:
    loop = asyncio.get_running_loop()
    examples = iter(range(10**6))

    async def example(
        steps: list[tuple[int, str, str, str]], policy: str, grant: str, cap: str | None
    ) -> bool:
        """Whether the example compared (False: a transient refusal made it moot)."""
        tag = f"p{next(examples)}"
        by_calls, by_stream = await _twin_accounts(client, tag, policy, grant, cap)
        at = datetime.now(UTC)  # after the grants: their pools have started
        unary = [
            _described(await _unary(client, _plan_event(step, by_calls.customer_id, at)))
            for step in steps
        ]
        events = [_plan_event(step, by_stream.customer_id, at) for step in steps]
        # The stub itself, not the client: the server's answers, with no retries in between.
        answers = await _stream(client, events)
        assert [a.position for a in answers] == list(range(len(steps)))
        streamed = [_streamed(a) for a in answers]
        # A dependency's hiccup on a busy machine (a deadline, an outage) is not an answer
        # to compare; the client retries those.
        transient = {code.name for code in RETRYABLE}
        if any(a.get("code") in transient for a in unary + streamed):
            return False
        pools = [next(iter(await account.balances())) for account in (by_calls, by_stream)]
        assert _normalised(streamed, by_stream, pools[1]) == _normalised(unary, by_calls, pools[0])
        assert await by_stream.balances() == {pools[1]: (await by_calls.balances())[pools[0]]}
        return True

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    # Found by this property: a refused event's twin, rated afresh, must keep its place (the
    # last call then finds the pool empty, as it does when calls come one after another).
    @hypothesis.example(
        steps=[(1, "embedding", "60", "a"), (1, "call", "1", "a"), (0, "call", "1", "a")],
        policy="block",
        grant="1",
        cap=None,
    )
    @given(
        steps=st.lists(_steps(), min_size=1, max_size=12),
        policy=st.sampled_from(["block", "arrears"]),
        grant=st.sampled_from(["1", "3", "20"]),
        cap=st.sampled_from([None, "4"]),
    )
    def property_(
        steps: list[tuple[int, str, str, str]], policy: str, grant: str, cap: str | None
    ) -> None:
        compared = asyncio.run_coroutine_threadsafe(example(steps, policy, grant, cap), loop)
        hypothesis.assume(compared.result(120))

    await asyncio.to_thread(property_)


# --- Flow control ------------------------------------------------------------------------------


async def _stream_metrics(server: RunningServer) -> dict[str, float]:
    """The stream-window histogram of StreamRateAndDebit: `count` and `le=N` buckets."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name != "rating_grpc_stream_in_flight":
            continue
        for sample in family.samples:
            if sample.labels.get("method") != "StreamRateAndDebit":
                continue
            if sample.name.endswith("_count"):
                found["count"] = sample.value
            elif sample.name.endswith("_bucket"):
                found[f"le={float(sample.labels['le']):g}"] = sample.value
    return found


class _PoolLock:
    """A transaction holding a pool's account row, so debits of that pool wait in their commit."""

    def __init__(self, database_url: str, pool: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._pool = pool
        self._held = False

    async def __aenter__(self) -> _PoolLock:
        self._conn = await asyncpg.connect(self._dsn)
        self._transaction = self._conn.transaction()
        await self._transaction.start()
        await self._conn.execute(
            "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", f"pool:{self._pool}"
        )
        self._held = True
        return self

    async def release(self) -> None:
        """Let the waiting debits commit."""
        if self._held:
            self._held = False
            await self._transaction.rollback()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
        await self._conn.close()


async def test_a_fast_producer_is_held_to_the_window(
    server: RunningServer, client: RatingClient, database_url: str
) -> None:
    account = await open_account(client, "cus-flood")
    pool = await account.grant("1000", grant_id="g")
    total, client_window = 300, 64
    produced = 0
    results: list[EventResult] = []

    async def events() -> AsyncIterator[rating_pb2.UsageEvent]:
        nonlocal produced
        for n in range(total):
            produced += 1
            yield account.event(f"flood-{n}", "api.call")

    async def consume() -> None:
        async for result in client.stream_rate_and_debit(events(), window=client_window):
            results.append(result)

    async with _PoolLock(database_url, pool) as lock:
        consuming = asyncio.create_task(consume())
        # The first commit waits on the lock: the server reads a window's worth, then no more.
        await eventually(lambda: _read_count(server, WINDOW))
        metrics = await _stream_metrics(server)
        assert metrics["count"] == WINDOW
        assert produced <= client_window  # taken from the caller only as the client has room
        await lock.release()
        await asyncio.wait_for(consuming, 60)
    assert [r.position for r in results] == list(range(total))
    assert all(r.ok for r in results)
    metrics = await _stream_metrics(server)
    # Every read saw at most WINDOW events unanswered, and the window did fill.
    assert metrics["count"] == metrics[f"le={WINDOW}"] == total
    assert metrics[f"le={WINDOW // 2}"] < total
    assert await account.balances() == {pool: Decimal(1000 - total)}


async def _read_count(server: RunningServer, wanted: int) -> bool:
    return (await _stream_metrics(server)).get("count") == wanted


# --- Drain ---------------------------------------------------------------------------------------


async def _answers_until_the_end(
    call: Any, answers: list[rating_pb2.StreamRateAndDebitResponse]
) -> tuple[str, str]:
    """Collect a stream's answers; (status code, reason) it ended with."""
    try:
        async for answer in call:
            answers.append(answer)
    except aio.AioRpcError as ended:
        code, reason = status_of(ended)
        return code.name, reason
    return "OK", ""


async def test_a_drain_answers_what_each_stream_read_then_ends_it_unavailable(
    settings: Settings, acme: TenantKeys, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.billing import load_catalog
    from tests.integration.cycles import admin_client

    await load_catalog(database_url, acme.tenant_id)
    running = await start_server(settings)
    stopping: asyncio.Task[None] | None = None
    try:
        async with admin_client(running, acme) as rating:
            busy_account = await open_account(rating, "cus-busy")
            pool = await busy_account.grant("100", grant_id="g-busy")
            idle_account = await open_account(rating, "cus-idle")
            await idle_account.grant("100", grant_id="g-idle")
            never = asyncio.Event()

            async def idle_events() -> AsyncIterator[rating_pb2.StreamRateAndDebitRequest]:
                yield rating_pb2.StreamRateAndDebitRequest(
                    event=idle_account.event("idle-0", "api.call")
                )
                await never.wait()  # a caller with nothing more to say, for now

            busy = [busy_account.event(f"busy-{n}", "api.call") for n in range(50)]
            metadata = acme.metadata(Role.RATER)
            idle_answers: list[rating_pb2.StreamRateAndDebitResponse] = []
            busy_answers: list[rating_pb2.StreamRateAndDebitResponse] = []
            idle = asyncio.create_task(
                _answers_until_the_end(
                    rating.rating.StreamRateAndDebit(idle_events(), metadata=metadata),
                    idle_answers,
                )
            )
            await eventually(lambda: len(idle_answers) == 1)
            async with _PoolLock(database_url, pool) as lock:
                streaming = asyncio.create_task(
                    _answers_until_the_end(
                        rating.rating.StreamRateAndDebit(_requests(busy), metadata=metadata),
                        busy_answers,
                    )
                )
                # A window's worth read and waiting on the lock, besides the idle stream's one.
                await eventually(lambda: _read_count(running, 1 + WINDOW))
                with caplog.at_level(logging.WARNING, logger="rating.server"):
                    stopping = asyncio.create_task(running.stop(10.0))
                    # The idle stream ends at once: it has nothing in flight.
                    assert await asyncio.wait_for(idle, 10) == ("UNAVAILABLE", "SHUTTING_DOWN")
                    assert not streaming.done()
                    await lock.release()
                    ended = await asyncio.wait_for(streaming, 20)
                    await asyncio.wait_for(stopping, 20)
            assert ended == ("UNAVAILABLE", "SHUTTING_DOWN")
            # Everything read was answered, and rated; nothing else was.
            assert [a.event_id for a in busy_answers] == [e.event_id for e in busy[:WINDOW]]
            assert all(a.HasField("response") for a in busy_answers + idle_answers)
            assert await _rated_event_ids(database_url) == {
                a.event_id for a in busy_answers + idle_answers
            }
            assert not [r for r in caplog.records if "cut short" in r.getMessage()]
    finally:
        if stopping is None:
            await running.stop(0.5)


async def test_the_client_resends_what_a_draining_server_left_to_another_server(
    settings: Settings,
    server: RunningServer,
    acme: TenantKeys,
    client: RatingClient,
    database_url: str,
) -> None:
    account = await open_account(client, "cus-moving")
    pool = await account.grant("1000", grant_id="g")
    first = await start_server(settings)  # `server` is the other one, on the same database
    total = 300
    results: list[EventResult] = []
    stopping: asyncio.Task[None] | None = None
    try:
        # pick_first: the stream goes to `first` while it serves, then to `server`.
        target = f"ipv4:127.0.0.1:{first.port},127.0.0.1:{server.port}"
        async with RatingClient(
            target, acme.tokens[Role.RATER], attempts=10, backoff_seconds=0.1
        ) as rater:
            events = (account.event(f"move-{n}", "api.call") for n in range(total))
            async for result in rater.stream_rate_and_debit(events):
                results.append(result)
                if len(results) == 50:
                    assert (await _stream_metrics(first))["count"] >= 50  # `first` serves it
                    stopping = asyncio.create_task(first.stop(1.0))
        assert stopping is not None
        await stopping
    finally:
        if stopping is None:
            await first.stop(0.5)
    assert sorted(r.position for r in results) == list(range(total))
    assert all(r.ok for r in results), [r.answer for r in results if not r.ok]
    assert (await _stream_metrics(server))["count"] > 0  # and the other server finished it
    assert await account.balances() == {pool: Decimal(1000 - total)}
    assert len(await _rated_event_ids(database_url)) == total
    await ledger_is_balanced(database_url)


def _as_sent(raw: bytes) -> bytes:
    return raw


async def test_bytes_that_are_no_request_end_the_stream_after_what_came_before(
    server: RunningServer, client: RatingClient, acme: TenantKeys
) -> None:
    account = await open_account(client, "cus-garbled")
    await account.grant("10", grant_id="g")
    good = rating_pb2.StreamRateAndDebitRequest(event=account.event("g-1", "api.call"))
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stream = channel.stream_stream(
            "/rating.v1.RatingService/StreamRateAndDebit", _as_sent, _as_sent
        )
        call = stream(
            iter([good.SerializeToString(), b"\xff\xff\xff"]),
            metadata=acme.metadata(Role.RATER),
            timeout=10,
        )
        answers: list[bytes] = []
        with pytest.raises(aio.AioRpcError) as ended:
            async for answer in call:
                answers.append(answer)
    # The event read before is answered; the stream then ends as malformed, not as a bug.
    [first] = [rating_pb2.StreamRateAndDebitResponse.FromString(raw) for raw in answers]
    assert first.HasField("response")
    code, reason = status_of(ended.value)
    assert (code.name, reason) == ("INVALID_ARGUMENT", "MALFORMED_STREAM")
