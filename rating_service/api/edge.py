"""The server's edge: authentication, role checks, error mapping, metrics and access logs, once.

Unary RPCs and bidirectional streams alike. A stream of ours answers each request with one
response, in order: the edge authenticates it once, holds its servicer to a window of
requests read but not yet answered (flow control), counts each answer, and on a drain stops
reading it, so the servicer answers what it has read and the stream ends UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram

from rating_client.errors import STATUS_DETAILS_KEY, error_info
from rating_service.api import limits
from rating_service.api.errors import rich_status, status_code
from rating_service.core.auth import KEY_ROLES, Caller, Role
from rating_service.core.errors import DomainError, InvalidArgument, PermissionDenied
from rating_service.faults import shutting_down, unexpected_failure
from rating_service.services.auth import KeyRing

log = logging.getLogger("rating.rpc")

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")

# Standard services that generic clients (buf curl, grpcurl, load balancers) reach without a key.
PUBLIC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

ALL_ROLES = frozenset(KEY_ROLES)
"""`allow()`: every API key's role; a portal link reaches only methods that name it."""

CUT_SHORT_SECONDS = 1.0
"""How long RPCs cut short at the end of a drain have to send their UNAVAILABLE."""

ARRIVALS_SETTLE_SECONDS = 0.25
"""A drain ends only after this long without a new call, so calls received before it began
have come through the server's queue (and been refused) rather than being cancelled by gRPC."""

DRAIN_POLL_SECONDS = 0.01

MALFORMED_STREAM = "MALFORMED_STREAM"
"""A stream carried bytes that parse as no request: it ends INVALID_ARGUMENT."""

MALFORMED_REQUEST = "MALFORMED_REQUEST"
"""A unary call's bytes parse as no request of its method: INVALID_ARGUMENT."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What a unary call carried when its bytes were no request: answered by the guard."""

    error: str


STREAM_WINDOW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

Behavior = TypeVar("Behavior", bound=Callable[..., Any])
StreamBehavior = Callable[[AsyncIterator[Any], aio.ServicerContext], AsyncGenerator[Any, None]]


def allow(*roles: Role) -> Callable[[Behavior], Behavior]:
    """Declare which roles may call a servicer method; a method without it refuses everyone."""

    def mark(method: Behavior) -> Behavior:
        method.allowed_roles = frozenset(roles) if roles else ALL_ROLES  # type: ignore[attr-defined]
        return method

    return mark


def current_caller() -> Caller:
    """The authenticated caller of the RPC being served."""
    return _caller.get()


class RpcMetrics:
    """Prometheus series for every RPC: count by method and code, latency by method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "rating_grpc_requests",
            "RPCs finished, by method and status code",
            ["method", "code"],
            registry=registry,
        )
        self.errors = Counter(
            "rating_grpc_errors",
            "RPCs that failed, by method, status code and ErrorInfo reason",
            ["method", "code", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "rating_grpc_request_seconds",
            "RPC latency in seconds, by method (a stream's: each request's, read to answer)",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.stream_answers = Counter(
            "rating_grpc_stream_answers",
            "Requests of streams answered, by method, status code and ErrorInfo reason",
            ["method", "code", "reason"],
            registry=registry,
        )
        self.stream_in_flight = Histogram(
            "rating_grpc_stream_in_flight",
            "Requests of a stream read and not yet answered, observed at each read (≤ the window)",
            ["method"],
            buckets=STREAM_WINDOW_BUCKETS,
            registry=registry,
        )


class RequestWindow:
    """A stream's requests as its servicer reads them: a bounded window, closed by a drain.

    At most `size` requests are read and not yet answered; while the window is full the
    servicer's next read waits, nothing more is taken from the client, and gRPC's flow control
    holds the client back. A drain ends the requests early: a read in progress stops, and the
    servicer sees the end of the stream.
    """

    def __init__(
        self,
        requests: AsyncIterator[Any],
        size: int,
        in_flight: Histogram,
        latency: Histogram,
    ) -> None:
        self._requests = requests
        self._size = size
        self._in_flight = in_flight
        self._latency = latency
        self._read = 0
        self._read_at: deque[float] = deque()
        """When each unanswered request was read, oldest first (answers come in order)."""
        self._room = asyncio.Event()
        self._reading: asyncio.Task[Any] | None = None
        self.drained = False
        """The drain ended the requests: the stream ends UNAVAILABLE once its answers are out."""

    def __aiter__(self) -> RequestWindow:
        return self

    async def __anext__(self) -> Any:
        while len(self._read_at) >= self._size and not self.drained:
            self._room.clear()
            await self._room.wait()
        if self.drained:
            raise StopAsyncIteration
        reader = self._reading = asyncio.current_task()
        assert reader is not None  # read by a task: the servicer's
        try:
            request = await anext(self._requests)
        except DecodeError as error:
            # Bytes that are no request at all: the stream itself is malformed, not one event.
            raise InvalidArgument(
                f"request {self._read + 1} of the stream cannot be parsed: {error}",
                reason=MALFORMED_STREAM,
            ) from None
        except asyncio.CancelledError:
            if not self.drained:
                raise  # the caller went away, or gRPC gave up
            # The drain stopped this read: a request taken in that instant is dropped
            # unanswered, so the client resends it with the others it has no answer for.
            reader.uncancel()
            raise StopAsyncIteration from None
        finally:
            self._reading = None
        self._read += 1
        self._read_at.append(time.perf_counter())
        self._in_flight.observe(len(self._read_at))
        return request

    def answered(self) -> None:
        """The oldest request's answer is out: room for one more."""
        self._latency.observe(time.perf_counter() - self._read_at.popleft())
        self._room.set()

    def drain(self) -> None:
        """Read no more: the servicer sees the end of the requests and answers those it read."""
        self.drained = True
        self._room.set()
        if self._reading is not None:
            self._reading.cancel()


class EdgeInterceptor(aio.ServerInterceptor):
    """Wraps each method of our services so servicers see only authorised, valid calls."""

    def __init__(
        self, keyring: KeyRing, metrics: RpcMetrics, max_message_bytes: int, stream_window: int
    ) -> None:
        self._keyring = keyring
        self._metrics = metrics
        self._max_message_bytes = max_message_bytes
        self._stream_window = stream_window
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._streams: set[RequestWindow] = set()
        self._cut_short: set[asyncio.Task[Any]] = set()
        self._refusing = False
        self._last_arrival = 0.0
        self.handled = 0
        """RPCs of our services handled so far (the `stopped` log line says how many)."""

    async def drain(self, grace_seconds: float) -> int:
        """Refuse new RPCs, wait up to the grace for those in flight, cut the rest short.

        Runs before gRPC's own stop, which cancels every call it has received but not yet
        handed to a handler (the aio server takes them one at a time, so a burst leaves
        many): the caller would see CANCELLED, which it must not retry blindly. Here those
        calls come through and are refused with UNAVAILABLE, which callers retry (on another
        server) with the same ids; so are RPCs still running when the grace ends. Streams
        stop reading at once: each answers the requests it has read, then ends UNAVAILABLE, and
        its client resends the rest elsewhere. The drain ends once nothing is in flight and no
        call has arrived for a moment. Returns how many RPCs were cut short.
        """
        loop = asyncio.get_running_loop()
        self._refusing = True
        for window in self._streams:
            window.drain()
        deadline = loop.time() + grace_seconds
        while loop.time() < deadline:
            quiet = loop.time() - self._last_arrival >= ARRIVALS_SETTLE_SECONDS
            if quiet and not self._in_flight:
                break
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        # Only handlers still inside the edge: one that has returned is sending its answer.
        late = set(self._in_flight)
        for task in late:
            self._cut_short.add(task)
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=CUT_SHORT_SECONDS)
        return len(late)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(PUBLIC_SERVICES):
            return handler
        # The handler of a method never changes, so each is wrapped once and reused.
        # grpc-stubs types handlers as synchronous; on an aio server they are coroutines and
        # async generators.
        if handler.unary_unary is not None:
            behavior: Callable[[Any, aio.ServicerContext], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._guard(method, behavior),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream is not None:
            streaming: StreamBehavior = handler.stream_stream  # type: ignore[assignment]
            wrapped = grpc.stream_stream_rpc_method_handler(
                self._guard_stream(method, streaming),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            # A server-streaming or client-streaming method has no guard: served unguarded it
            # would skip authentication, so it is not served at all (UNIMPLEMENTED).
            log.error("no guard for the kind of method %s: not served", method)
            return None  # type: ignore[return-value]
        self._wrapped[method] = wrapped
        return wrapped

    def _guard(
        self, method: str, behavior: Callable[[Any, aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, aio.ServicerContext], Awaitable[Any]]:
        allowed: frozenset[Role] = getattr(behavior, "allowed_roles", frozenset())
        short = method.rsplit("/", 1)[-1]
        requests = self._metrics.requests
        latency_child = self._metrics.latency.labels(short)

        async def guarded(request: Any, context: aio.ServicerContext) -> Any:
            started = time.perf_counter()
            failure: DomainError | None = None
            task = asyncio.current_task()
            assert task is not None  # a gRPC aio handler always runs in a task
            self._in_flight.add(task)
            self._last_arrival = asyncio.get_running_loop().time()
            try:
                if self._refusing:
                    raise shutting_down()
                caller = await self._keyring.authenticate(_authorization(context))
                if not allowed:
                    raise PermissionDenied(f"{short} is not open to any role", reason="NO_POLICY")
                caller.require(allowed)
                if isinstance(request, Undecodable):
                    raise InvalidArgument(
                        f"the request cannot be parsed as {short}'s: {request.error}",
                        reason=MALFORMED_REQUEST,
                    )
                limits.check(request, self._max_message_bytes)
                _caller.set(caller)
                response = await behavior(request, context)
            except DomainError as error:
                failure = error
            except Exception as error:
                failure = unexpected_failure(short, error)
            except asyncio.CancelledError:
                if task not in self._cut_short:
                    raise  # the caller went away, or gRPC itself gave up: nobody to answer
                task.uncancel()
                failure = shutting_down()
            finally:
                latency_child.observe(time.perf_counter() - started)
                self.handled += 1
                self._in_flight.discard(task)
                self._cut_short.discard(task)
            if failure is None:
                requests.labels(short, "OK").inc()
                return response
            await self._refuse(short, failure, context)

        return guarded

    def _guard_stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        """The stream's guard: authorised once, a window of requests, each answer counted."""
        allowed: frozenset[Role] = getattr(behavior, "allowed_roles", frozenset())
        short = method.rsplit("/", 1)[-1]
        metrics = self._metrics
        in_flight = metrics.stream_in_flight.labels(short)
        latency = metrics.latency.labels(short)
        answered_ok = metrics.stream_answers.labels(short, "OK", "")

        async def guarded(
            requests: AsyncIterator[Any], context: aio.ServicerContext
        ) -> AsyncGenerator[Any, None]:
            failure: DomainError | None = None
            task = asyncio.current_task()
            assert task is not None  # a gRPC aio handler always runs in a task
            self._in_flight.add(task)
            self._last_arrival = asyncio.get_running_loop().time()
            window: RequestWindow | None = None
            try:
                if self._refusing:
                    raise shutting_down()
                caller = await self._keyring.authenticate(_authorization(context))
                if not allowed:
                    raise PermissionDenied(f"{short} is not open to any role", reason="NO_POLICY")
                caller.require(allowed)
                if self._refusing:  # the drain began while the key was checked
                    raise shutting_down()
                _caller.set(caller)
                window = RequestWindow(requests, self._stream_window, in_flight, latency)
                self._streams.add(window)
                # Headers now, before any answer: the client knows the stream was accepted
                # and writes only then, so a refusal reaches it intact (grpc/grpc#36066).
                await context.send_initial_metadata(())
                async with contextlib.aclosing(behavior(window, context)) as answers:
                    async for answer in answers:
                        yield answer  # returns once gRPC has sent it
                        window.answered()
                        refused = _answer_failure(answer)
                        if refused is None:
                            answered_ok.inc()
                        else:
                            metrics.stream_answers.labels(short, *refused).inc()
                if window.drained:
                    failure = shutting_down()
            except DomainError as error:
                failure = error
            except Exception as error:
                failure = unexpected_failure(short, error)
            except asyncio.CancelledError:
                if task not in self._cut_short:
                    raise  # the caller went away, or gRPC itself gave up: nobody to answer
                task.uncancel()
                failure = shutting_down()
            finally:
                self._in_flight.discard(task)
                self._cut_short.discard(task)
                if window is not None:
                    self._streams.discard(window)
            if failure is None:
                metrics.requests.labels(short, "OK").inc()
                return
            await self._refuse(short, failure, context)

        return guarded

    async def _refuse(
        self, method: str, failure: DomainError, context: aio.ServicerContext
    ) -> None:
        """End the RPC with the failure's status and details, counted and logged."""
        code = status_code(failure)
        self._metrics.requests.labels(method, code.name).inc()
        self._metrics.errors.labels(method, code.name, failure.reason).inc()
        log.info(
            "rpc refused",
            extra={"method": method, "code": code.name, "reason": failure.reason},
        )
        status = rich_status(failure)
        await context.abort(
            code,
            failure.message,
            trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
        )


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A request deserializer that hands bytes which are no request to the guard to answer.

    grpc-python answers a deserializer's exception itself, with UNKNOWN and no details, before
    any authentication: the guard answers INVALID_ARGUMENT MALFORMED_REQUEST instead, after it.
    """
    if deserialize is None:
        return None

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return Undecodable(str(error) or type(error).__name__)

    return tolerant


def _answer_failure(answer: Any) -> tuple[str, str] | None:
    """(code, reason) of a streamed answer that carries an error, a google.rpc.Status `error`."""
    if "error" not in answer.DESCRIPTOR.fields_by_name or not answer.HasField("error"):
        return None
    status = answer.error
    info = error_info(status)
    code = _CODES.get(status.code)
    return str(status.code) if code is None else code.name, "" if info is None else info.reason


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _authorization(context: aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return str(value)
    return None
