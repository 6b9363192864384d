"""OpenTelemetry: off by default; with one setting, `rating serve` exports its RPCs' traces."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from rating_client import RatingClient
from rating_client.gen.rating.v1 import rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually
from tests.integration.api.serving import separate_channel, serve_process
from tests.integration.billing import open_account


@contextmanager
def otlp_collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP endpoint on a free port that keeps every trace export it is sent."""
    received: list[ExportTraceServiceRequest] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/v1/traces":
                received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def span_names(received: list[ExportTraceServiceRequest]) -> dict[str, set[str]]:
    """service.name → the names of the spans it exported."""
    names: dict[str, set[str]] = {}
    for request in received:
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                names.setdefault(service, set()).update(span.name for span in scope.spans)
    return names


def test_tracing_is_off_by_default() -> None:
    assert Settings.from_env({}).otel_exporter_otlp_endpoint == ""


async def test_a_served_rpc_and_its_database_statements_are_exported(
    acme: TenantKeys, database_url: str, client: RatingClient
) -> None:
    account = await open_account(client, "cus-traced")
    await account.grant("10", grant_id="g-traced")
    with otlp_collector() as (endpoint, received):
        async with serve_process(
            RATING_DATABASE_URL=database_url,
            RATING_SERVER_PROCESSES="1",
            RATING_OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        ) as served:
            channel = separate_channel(served.port)
            try:
                stub = rating_pb2_grpc.RatingServiceStub(channel)
                await stub.RateAndDebit(
                    rating_pb2.RateAndDebitRequest(event=account.event("traced-1", "api.call")),
                    metadata=acme.metadata(Role.RATER),
                    timeout=30,
                )
            finally:
                await channel.close(None)
            assert await served.terminate() == 0, served.lines
        # The exporter flushes as the server stops.
        await eventually(lambda: bool(span_names(received)), timeout_seconds=10)
        names = span_names(received)["rating-server"]
        assert "/rating.v1.RatingService/RateAndDebit" in names
        # asyncpg's spans are named by the statement's verb (SELECT, INSERT, …).
        assert any(name.split()[0] in ("SELECT", "INSERT", "UPDATE", "BEGIN") for name in names)
