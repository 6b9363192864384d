"""The server's edge: authentication, role checks, error mapping, metrics and access logs, once."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram

from rating_client.errors import STATUS_DETAILS_KEY
from rating_service.api import limits
from rating_service.api.errors import rich_status, status_code
from rating_service.core.auth import Caller, Role
from rating_service.core.errors import DomainError, PermissionDenied
from rating_service.faults import shutting_down, unexpected_failure
from rating_service.services.auth import KeyRing

log = logging.getLogger("rating.rpc")

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller")

# Standard services that generic clients (buf curl, grpcurl, load balancers) reach without a key.
PUBLIC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

ALL_ROLES = frozenset(Role)

CUT_SHORT_SECONDS = 1.0
"""How long RPCs cut short at the end of a drain have to send their UNAVAILABLE."""

ARRIVALS_SETTLE_SECONDS = 0.25
"""A drain ends only after this long without a new call, so calls received before it began
have come through the server's queue (and been refused) rather than being cancelled by gRPC."""

DRAIN_POLL_SECONDS = 0.01

Behavior = TypeVar("Behavior", bound=Callable[..., Awaitable[Any]])


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
            "RPC latency in seconds, by method",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )


class EdgeInterceptor(aio.ServerInterceptor):
    """Wraps each unary method of our services so servicers see only authorised, valid calls."""

    def __init__(self, keyring: KeyRing, metrics: RpcMetrics, max_message_bytes: int) -> None:
        self._keyring = keyring
        self._metrics = metrics
        self._max_message_bytes = max_message_bytes
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self._in_flight: set[asyncio.Task[Any]] = set()
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
        server) with the same ids; so are RPCs still running when the grace ends. The drain
        ends once nothing is in flight and no call has arrived for a moment. Returns how many
        RPCs were cut short.
        """
        loop = asyncio.get_running_loop()
        self._refusing = True
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
        if handler is None or method.startswith(PUBLIC_SERVICES) or handler.unary_unary is None:
            return handler
        # The handler of a method never changes, so each is wrapped once and reused.
        # grpc-stubs types handlers as synchronous; on an aio server they are coroutines.
        behavior: Callable[[Any, aio.ServicerContext], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._guard(method, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _guard(
        self, method: str, behavior: Callable[[Any, aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, aio.ServicerContext], Awaitable[Any]]:
        allowed: frozenset[Role] = getattr(behavior, "allowed_roles", frozenset())
        short = method.rsplit("/", 1)[-1]
        requests, errors_, latency = (
            self._metrics.requests,
            self._metrics.errors,
            self._metrics.latency,
        )
        latency_child = latency.labels(short)

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
            code = status_code(failure)
            requests.labels(short, code.name).inc()
            errors_.labels(short, code.name, failure.reason).inc()
            log.info(
                "rpc refused",
                extra={"method": short, "code": code.name, "reason": failure.reason},
            )
            status = rich_status(failure)
            await context.abort(
                code,
                failure.message,
                trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
            )

        return guarded


def _authorization(context: aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return str(value)
    return None
