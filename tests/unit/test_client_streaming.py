"""The client's stream_rate_and_debit against a scripted server: retries, resends, deadlines.

The real server is tested in tests/integration/api/test_stream_rate_and_debit.py; here a
RatingService of a few lines answers each event as a test's script says (rated, refused,
told to retry, never, or the stream ended), so each of the client's conventions is seen alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from rating_client import (
    EventResult,
    InsufficientCredit,
    NotAllowed,
    RatingClient,
    Unavailable,
    usage_event,
)
from rating_client.errors import ERROR_DOMAIN
from rating_client.gen.rating.v1 import rating_pb2, rating_pb2_grpc

OK = "ok"
HOLD = "hold"
"""Never answer (the servicer stops reading too)."""

Action: TypeAlias = str | status_pb2.Status | grpc.StatusCode
"""OK, HOLD, an error answer for the event, or a status that ends the stream."""

Script = Callable[[int, str, int], Action]
"""(stream number, event id, times the server has seen that id) → what to do."""


def refusal(code: grpc.StatusCode, reason: str) -> status_pb2.Status:
    """A per-event error as the server writes it."""
    status = status_pb2.Status(code=code.value[0], message=f"{reason} for this test")
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    status.details.append(detail)
    return status


class ScriptedRating(rating_pb2_grpc.RatingServiceServicer):
    """StreamRateAndDebit answering as the script says; what each stream received is kept."""

    def __init__(self, script: Script, refuse: grpc.StatusCode | None) -> None:
        self.script = script
        self.refuse = refuse
        self.streams: list[list[str]] = []

    async def StreamRateAndDebit(  # noqa: N802 (the RPC's name)
        self, request_iterator: AsyncIterator[Any], context: aio.ServicerContext
    ) -> AsyncIterator[rating_pb2.StreamRateAndDebitResponse]:
        number = len(self.streams)
        received: list[str] = []
        self.streams.append(received)
        if self.refuse is not None:  # the stream itself refused, as the edge does
            await context.abort(self.refuse, "refused by the script")
        await context.send_initial_metadata(())  # accepted: as the real server, headers first
        async for request in request_iterator:
            event_id = request.event.event_id
            seen = 1 + sum(stream.count(event_id) for stream in self.streams)
            received.append(event_id)
            action = self.script(number, event_id, seen)
            answer = rating_pb2.StreamRateAndDebitResponse(
                event_id=event_id, position=len(received) - 1
            )
            if action == OK:
                answer.response.CopyFrom(
                    rating_pb2.RateAndDebitResponse(event_id=event_id, charge="1")
                )
            elif action == HOLD:
                await asyncio.Event().wait()
            elif isinstance(action, grpc.StatusCode):
                await context.abort(action, "ended by the script")
            else:
                assert isinstance(action, status_pb2.Status)
                answer.error.CopyFrom(action)
            yield answer


@asynccontextmanager
async def scripted(
    script: Script, refuse: grpc.StatusCode | None = None, **client_options: Any
) -> AsyncIterator[tuple[Any, Any]]:
    """(servicer, client) of a scripted server on a free port; `refuse`: every stream so."""
    server = aio.server()
    servicer = ScriptedRating(script, refuse)  # type: ignore[abstract]  # one RPC is enough
    rating_pb2_grpc.add_RatingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = {"timeout_seconds": 2.0, "backoff_seconds": 0.01, **client_options}
    try:
        async with RatingClient(f"127.0.0.1:{port}", "key", **options) as client:
            yield servicer, client
    finally:
        await server.stop(0)


def events(count: int) -> Iterator[rating_pb2.UsageEvent]:
    """e0, e1, … for one customer."""
    return (usage_event(f"e{n}", "cus", "api.call", {}) for n in range(count))


async def collect(client: RatingClient, source: Any, **options: Any) -> list[EventResult]:
    """Every result of one stream_rate_and_debit."""
    return [result async for result in client.stream_rate_and_debit(source, **options)]


async def test_results_come_in_order_and_a_refusal_is_a_result_not_raised() -> None:
    def script(stream: int, event_id: str, seen: int) -> Action:
        if event_id == "e1":
            return refusal(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDIT")
        return OK

    async with scripted(script) as (_, client):
        results = await collect(client, events(4))
    assert [(r.position, r.event_id, r.ok) for r in results] == [
        (0, "e0", True),
        (1, "e1", False),
        (2, "e2", True),
        (3, "e3", True),
    ]
    refused = results[1].answer
    assert isinstance(refused, InsufficientCredit)
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_CREDIT",
    )


async def test_an_event_told_to_retry_is_sent_again_with_the_same_id() -> None:
    def script(stream: int, event_id: str, seen: int) -> Action:
        if event_id == "e1" and seen <= 2:
            return refusal(grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
        return OK

    async with scripted(script) as (servicer, client):
        results = await collect(client, events(4))
    assert [r.event_id for r in results] == ["e0", "e2", "e3", "e1"]  # e1 when answered
    assert all(r.ok for r in results)
    assert servicer.streams == [["e0", "e1", "e2", "e3", "e1", "e1"]]


async def test_an_event_still_told_to_retry_after_every_attempt_is_a_result() -> None:
    def script(stream: int, event_id: str, seen: int) -> Action:
        if event_id == "e0":
            return refusal(grpc.StatusCode.ABORTED, "WRITE_CONFLICT")
        return OK

    async with scripted(script, attempts=3) as (servicer, client):
        results = await collect(client, events(2))
    assert [(r.event_id, r.ok) for r in results] == [("e1", True), ("e0", False)]
    assert isinstance(results[1].answer, Unavailable)
    assert servicer.streams[0].count("e0") == 3


async def test_a_stream_the_server_ends_is_opened_again_with_every_unanswered_event() -> None:
    def script(stream: int, event_id: str, seen: int) -> Action:
        if stream == 0 and event_id == "e2":
            return grpc.StatusCode.UNAVAILABLE  # a draining server
        return OK

    async with scripted(script) as (servicer, client):
        results = await collect(client, events(5))
    assert sorted(r.position for r in results) == [0, 1, 2, 3, 4]
    assert all(r.ok for r in results)
    assert servicer.streams[0][:3] == ["e0", "e1", "e2"]
    assert servicer.streams[1] == ["e2", "e3", "e4"]


async def test_an_event_unanswered_past_the_deadline_opens_a_new_stream() -> None:
    def script(stream: int, event_id: str, seen: int) -> Action:
        return HOLD if stream == 0 and event_id == "e1" else OK

    async with scripted(script, timeout_seconds=0.2) as (servicer, client):
        results = await collect(client, events(3))
    assert [(r.event_id, r.ok) for r in results] == [("e0", True), ("e1", True), ("e2", True)]
    assert servicer.streams[1][0] == "e1"


async def test_a_refused_stream_raises_and_is_not_retried() -> None:
    async with scripted(lambda *_: OK, grpc.StatusCode.PERMISSION_DENIED) as (servicer, client):
        with pytest.raises(NotAllowed):
            await collect(client, events(3))
    assert len(servicer.streams) == 1


async def test_a_stream_failing_past_every_attempt_raises() -> None:
    def script(stream: int, event_id: str, seen: int) -> Action:
        return grpc.StatusCode.UNAVAILABLE  # each stream ends at its first event

    async with scripted(script, attempts=3) as (servicer, client):
        with pytest.raises(Unavailable):
            await collect(client, events(3))
    assert len(servicer.streams) == 3


async def test_what_the_callers_events_raise_is_raised() -> None:
    async def failing() -> AsyncIterator[rating_pb2.UsageEvent]:
        for event in events(2):
            yield event
        raise LookupError("the caller's queue broke")

    async with scripted(lambda *_: OK) as (_, client):
        with pytest.raises(LookupError):
            await collect(client, failing())


async def test_the_callers_events_are_taken_only_as_the_window_has_room() -> None:
    taken = 0
    results: list[EventResult] = []

    async def counted() -> AsyncIterator[rating_pb2.UsageEvent]:
        nonlocal taken
        for event in events(40):
            # Never more than the window ahead of the results the caller has received.
            assert taken - len(results) <= 4
            taken += 1
            yield event

    async with scripted(lambda *_: OK) as (_, client):
        async for result in client.stream_rate_and_debit(counted(), window=4):
            results.append(result)
            await asyncio.sleep(0)  # a caller slower than the server
    assert [r.position for r in results] == list(range(40))
