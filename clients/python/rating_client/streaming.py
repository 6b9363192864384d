"""StreamRateAndDebit for callers: events in, one result per event out, retried like a call.

The server answers each streamed event exactly as RateAndDebit would, in the order sent, and
ends a stream with an error only for what concerns all of it. This side keeps the client's
conventions: a result per event, never raised (a refused event does not end the caller's loop);
an event answered UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED is sent again with the same id,
after a jittered pause, up to the client's attempts; a stream that fails that way (the server
draining, a lost connection, an event unanswered for the client's timeout) is opened again and
every event not yet answered is sent again, which the server's idempotency makes safe. At most
`window` events are unanswered at once, so a fast producer is held back rather than buffered.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from rating_client.errors import RETRYABLE, RatingError, Unavailable, status_error, typed_error
from rating_client.gen.rating.v1 import rating_pb2

DEFAULT_WINDOW = 256
"""Events unanswered at once on one stream, as the server's default window."""


@dataclass(frozen=True, slots=True)
class EventResult:
    """One streamed event's result: the RateAndDebit answer, or the typed error it would raise."""

    position: int
    """The event's index in the events given."""
    event_id: str
    answer: rating_pb2.RateAndDebitResponse | RatingError

    @property
    def ok(self) -> bool:
        """Whether the event was rated (now, or before: `answer.replay`)."""
        return not isinstance(self.answer, RatingError)


OpenStream = Callable[[], Any]
"""Opens the RPC: a grpc.aio StreamStreamCall of StreamRateAndDebit, with metadata set."""


class _Stalled(Exception):
    """An event sent was not answered within the deadline."""


class EventStream:
    """One caller's events over as many StreamRateAndDebit RPCs as it takes to answer them all."""

    def __init__(
        self,
        open_stream: OpenStream,
        events: AsyncIterable[rating_pb2.UsageEvent] | Iterable[rating_pb2.UsageEvent],
        *,
        timeout_seconds: float,
        attempts: int,
        backoff_seconds: float,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._open = open_stream
        self._events = events
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._room = asyncio.Semaphore(window)
        self._unanswered: dict[int, rating_pb2.UsageEvent] = {}
        """Events taken from the caller and not yet given a final result, by position."""
        self._failures: dict[int, int] = {}
        """Retryable answers each unanswered event has had so far."""
        self._pausing: set[int] = set()
        """Events waiting out a pause before they are sent again."""
        self._outbox: asyncio.Queue[int | None] = asyncio.Queue()
        """Positions to send on the current RPC; None: the caller has no more, close it."""
        self._all_taken = False
        self._call: Any = None
        self._interrupted: BaseException | None = None
        self._pauses: set[asyncio.Task[None]] = set()

    async def results(self) -> AsyncIterator[EventResult]:
        """Each event's result, in the order answered: the order sent, but for events resent."""
        loop = asyncio.get_running_loop()
        feeder = asyncio.create_task(self._take_events())
        feeder.add_done_callback(self._caller_failed)
        failed = 0
        try:
            while True:
                if self._interrupted is not None:
                    raise self._interrupted  # the caller's events raised between two RPCs
                call = self._call = self._open()
                sent: deque[tuple[int, float]] = deque()
                waiting_since: list[float | None] = [None]
                self._refill_outbox()
                writer = asyncio.create_task(self._write(call, sent))
                watchdog = asyncio.create_task(self._watch(call, sent, waiting_since))
                error: RatingError | None = None
                try:
                    while True:
                        waiting_since[0] = loop.time()
                        response = await call.read()
                        waiting_since[0] = None
                        if response is aio.EOF:  # type: ignore[attr-defined]
                            break
                        position, _ = sent.popleft()
                        failed = 0
                        result = self._settle(position, response)
                        if result is not None:
                            yield result
                    if self._finished():
                        return
                    error = _unavailable("the stream ended with events unanswered")
                except aio.AioRpcError as failure:
                    error = self._interruption() or _ended(failure)
                except asyncio.CancelledError:
                    error = self._interruption()
                    if error is None:
                        raise
                finally:
                    waiting_since[0] = None
                    for task in (writer, watchdog):
                        task.cancel()
                    call.cancel()
                if self._finished():
                    return
                failed += 1
                if error.code not in RETRYABLE or failed >= self._attempts:
                    raise error
                await asyncio.sleep(random.uniform(0, self._backoff * 2 ** (failed - 1)))
        finally:
            # Not awaited: what the caller's events raised has been raised above (`_interrupted`).
            feeder.cancel()
            for pause in list(self._pauses):
                pause.cancel()

    async def _take_events(self) -> None:
        """Take the caller's events while the window has room, each queued to be sent."""
        events = _async(self._events)
        position = 0
        while True:
            await self._room.acquire()
            try:
                event = await anext(events)
            except StopAsyncIteration:
                self._room.release()
                break
            self._unanswered[position] = event
            self._failures[position] = 0
            self._outbox.put_nowait(position)
            position += 1
        self._all_taken = True
        if not self._unanswered:
            self._outbox.put_nowait(None)

    def _caller_failed(self, feeder: asyncio.Task[None]) -> None:
        """The caller's events raised: stop the RPC, and the loop raises it."""
        if feeder.cancelled() or feeder.exception() is None:
            return
        self._interrupted = feeder.exception()
        if self._call is not None:
            self._call.cancel()

    def _interruption(self) -> RatingError | None:
        """Why this side cut the RPC short (None: it did not); raises what the events raised."""
        reason, self._interrupted = self._interrupted, None
        if reason is None:
            return None
        if isinstance(reason, _Stalled):
            return Unavailable(grpc.StatusCode.DEADLINE_EXCEEDED, "", str(reason), {}, {})
        raise reason

    def _refill_outbox(self) -> None:
        """A new RPC sends every event still unanswered first, in order, then the rest."""
        while not self._outbox.empty():
            self._outbox.get_nowait()
        for position in sorted(self._unanswered):
            if position not in self._pausing:
                self._outbox.put_nowait(position)
        if self._finished():
            self._outbox.put_nowait(None)

    async def _write(self, call: Any, sent: deque[tuple[int, float]]) -> None:
        """Send queued events on the RPC until told the caller has no more."""
        loop = asyncio.get_running_loop()
        try:
            # The server sends its headers once it has accepted the stream: writing before
            # could turn its refusal into grpc's "Internal error from Core" (grpc/grpc#36066).
            await call.initial_metadata()
            while (position := await self._outbox.get()) is not None:
                event = self._unanswered.get(position)
                if event is None:
                    continue
                sent.append((position, loop.time()))
                await call.write(rating_pb2.StreamRateAndDebitRequest(event=event))
            await call.done_writing()
        except (aio.AioRpcError, asyncio.InvalidStateError):
            return  # the RPC has ended; reading it says how

    async def _watch(
        self, call: Any, sent: deque[tuple[int, float]], waiting_since: list[float | None]
    ) -> None:
        """Cut the RPC short when the oldest event sent is unanswered for the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._timeout / 4)
            since = waiting_since[0]
            # Counted only while we wait for an answer: a caller slow to take results is not
            # the server's delay.
            if since is not None and sent and loop.time() - max(since, sent[0][1]) > self._timeout:
                self._interrupted = _Stalled(
                    f"event {self._unanswered[sent[0][0]].event_id!r} was not answered within"
                    f" {self._timeout:g}s"
                )
                call.cancel()
                return

    def _settle(
        self, position: int, response: rating_pb2.StreamRateAndDebitResponse
    ) -> EventResult | None:
        """The event's final result, or None when it is to be sent again."""
        answer: rating_pb2.RateAndDebitResponse | RatingError
        if response.HasField("error"):
            answer = status_error(response.error)
            self._failures[position] += 1
            if answer.code in RETRYABLE and self._failures[position] < self._attempts:
                self._pause_then_resend(position, self._failures[position])
                return None
        else:
            answer = response.response
        event = self._unanswered.pop(position)
        del self._failures[position]
        self._room.release()
        if self._finished():
            self._outbox.put_nowait(None)
        return EventResult(position, event.event_id, answer)

    def _pause_then_resend(self, position: int, failures: int) -> None:
        async def resend() -> None:
            # Full jitter, as the client's calls: events refused together do not return together.
            await asyncio.sleep(random.uniform(0, self._backoff * 2 ** (failures - 1)))
            self._pausing.discard(position)
            self._outbox.put_nowait(position)

        self._pausing.add(position)
        task = asyncio.create_task(resend())
        self._pauses.add(task)
        task.add_done_callback(self._pauses.discard)

    def _finished(self) -> bool:
        return self._all_taken and not self._unanswered


def _ended(failure: aio.AioRpcError) -> RatingError:
    """What ended the RPC, as a typed error.

    grpc's asyncio client reports a stream that ended while an event was being written as
    INTERNAL "Internal error from Core", losing the server's status (grpc/grpc#36066): the
    server was ending the stream (draining, say), so it is retried like UNAVAILABLE; a
    refusal that concerns every stream comes back intact at the start of the next one.
    """
    if failure.code() == grpc.StatusCode.INTERNAL and "execute_batch" in (
        failure.debug_error_string() or ""
    ):
        return _unavailable(f"the stream ended while an event was sent: {failure.details()}")
    return typed_error(failure)


def _unavailable(message: str) -> RatingError:
    return Unavailable(grpc.StatusCode.UNAVAILABLE, "", message, {}, {})


async def _async(
    events: AsyncIterable[rating_pb2.UsageEvent] | Iterable[rating_pb2.UsageEvent],
) -> AsyncIterator[rating_pb2.UsageEvent]:
    if isinstance(events, AsyncIterable):
        async for event in events:
            yield event
    else:
        for event in events:
            yield event
