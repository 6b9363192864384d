"""The /metrics endpoint: a Prometheus registry served over HTTP (no gRPC, so quick to import)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server


def start_metrics(address: str, registry: CollectorRegistry) -> tuple[int | None, Any]:
    """Serve /metrics on `host:port` (port 0 picks one; an empty address turns metrics off)."""
    if not address:
        return None, None
    host, _, port = address.rpartition(":")
    try:
        http_server, _thread = start_http_server(
            int(port), addr=host or "0.0.0.0", registry=registry
        )
    except OSError as exc:
        raise SystemExit(
            f"cannot serve metrics on {address}: {exc}; set RATING_METRICS_ADDRESS to another "
            "address, or to empty to turn metrics off"
        ) from exc
    return int(http_server.server_address[1]), http_server
