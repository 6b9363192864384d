"""OpenTelemetry traces, off unless RATING_OTEL_EXPORTER_OTLP_ENDPOINT names a collector.

On, a process exports its spans over OTLP/HTTP: each RPC the server handles (the gRPC
instrumentation's server span), the PostgreSQL statements it runs inside it (asyncpg's), and
the worker's workflows and activities (Temporal's tracing interceptor). Off, nothing is
imported or patched: tracing costs the hot path nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from rating_service.settings import Settings

log = logging.getLogger("rating.tracing")

_started = False


def start_tracing(settings: Settings, service_name: str) -> Callable[[], None] | None:
    """Export this process's traces when configured; the function that flushes and stops them.

    Call it before the gRPC server is built: the instrumentation wraps `grpc.aio.server`.
    """
    global _started
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint or _started:
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    )
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _started = True
    log.info("tracing on", extra={"endpoint": endpoint, "service": service_name})
    return provider.shutdown


def worker_interceptors(settings: Settings) -> Sequence[Any]:
    """Temporal's tracing interceptor when traces are exported, else none."""
    if not settings.otel_exporter_otlp_endpoint:
        return ()
    from temporalio.contrib.opentelemetry import TracingInterceptor

    # A workflow started by the outbox has no client span above it: make its spans anyway.
    return (TracingInterceptor(always_create_workflow_spans=True),)
