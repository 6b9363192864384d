"""One settings object, read from `RATING_*` environment variables; nothing here connects."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rating_service.core.encryption import EncryptionKeys
from rating_service.core.errors import InvalidArgument
from rating_service.core.portal import MIN_SECRET_BYTES
from rating_service.failpoints import Failpoints

PREFIX = "RATING_"


def _setting(default: Any, doc: str, *, empty_means_off: bool = False, secret: bool = False) -> Any:
    """Declare a setting with its default and the one line the README's table shows.

    An empty variable means "use the default", unless `empty_means_off`: then it is the
    empty value, which turns the feature off. A `secret` is kept out of the settings' repr,
    and so out of log lines and tracebacks.
    """
    return field(
        default=default,
        repr=not secret,
        metadata={"doc": doc, "empty_means_off": empty_means_off},
    )


@dataclass(frozen=True)
class Settings:
    """Process configuration; each field `x` is read from `RATING_X`."""

    database_url: str | None = _setting(
        None, "PostgreSQL URL; unset under `rating dev` means the embedded server"
    )
    database_pool_size: int = _setting(10, "connections per process in the database pool")
    temporal_address: str | None = _setting(
        None, "Temporal frontend host:port; unset under `rating dev` means the embedded dev server"
    )
    temporal_namespace: str = _setting("default", "Temporal namespace")
    temporal_task_queue: str = _setting("rating", "task queue the worker polls")
    worker_cached_workflows: int = _setting(
        4000,
        "workflow runs the worker keeps in memory between their tasks (about 0.1 MB each); a"
        " run not kept is replayed from its history when its next task comes",
    )
    worker_workflow_tasks: int = _setting(100, "workflow tasks the worker runs at once")
    worker_activities: int = _setting(100, "activities the worker runs at once")
    worker_local_activities: int = _setting(
        100, "local activities (the invoice's database steps) the worker runs at once"
    )
    worker_workflow_task_pollers: int = _setting(
        5, "workflow task polls the worker keeps open on Temporal at once"
    )
    worker_activity_task_pollers: int = _setting(
        5, "activity task polls the worker keeps open on Temporal at once"
    )
    listen_address: str = _setting("127.0.0.1:50051", "gRPC listen address")
    api_address: str = _setting(
        "127.0.0.1:50051",
        "where the `rating` operator commands (invoices, contracts, credits, webhooks, …) reach"
        " the gRPC API, host:port",
    )
    api_tls_ca_file: Path | None = _setting(
        None,
        "CA bundle (PEM) the `rating` operator commands verify the server's certificate with;"
        " set: they dial TLS (a server with RATING_TLS_CERT_FILE)",
    )
    api_key: str = _setting(
        "",
        "the API key the `rating` operator commands act with: its tenant is the tenant they act"
        " on, its role what they may do (`rating tenants create` prints an admin key, `rating"
        " dev` the demo tenant's)",
        secret=True,
    )
    metrics_address: str = _setting(
        "127.0.0.1:9464", "Prometheus /metrics listen address (empty: off)", empty_means_off=True
    )
    tls_cert_file: Path | None = _setting(None, "server certificate (PEM); enables TLS")
    tls_key_file: Path | None = _setting(None, "server private key (PEM)")
    tls_client_ca_file: Path | None = _setting(
        None, "CA bundle for client certificates; enables mTLS"
    )
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting("json", "`json` (one object per line) or `text`")
    max_message_bytes: int = _setting(
        4 * 1024 * 1024,
        "largest request accepted, in bytes (larger: `RESOURCE_EXHAUSTED` / `MESSAGE_TOO_LARGE`)",
    )
    max_concurrent_rpcs: int = _setting(
        1000, "RPCs in flight per server process before new ones wait"
    )
    server_processes: int = _setting(
        0,
        "`rating serve` processes sharing the listen port (SO_REUSEPORT), each with its own"
        " database pool; 0: one per CPU core the server may use (affinity and cgroup limit)",
    )
    stream_window: int = _setting(
        256,
        "events in flight per `StreamRateAndDebit` stream; the server reads no more of it"
        " until answers free the window",
    )
    gc_threshold: int = _setting(
        50_000,
        "allocations between collections of the youngest generation in server and worker"
        " processes, which also freeze what startup built (0: Python's default, 700)",
    )
    shutdown_grace_seconds: float = _setting(10.0, "drain time for in-flight RPCs on SIGTERM")
    health_check_interval_seconds: float = _setting(
        2.0, "how often the server checks that the database answers"
    )
    debit_committers: int = _setting(
        1, "debit batches in flight at once (each one transaction of many events)"
    )
    reservation_sweep_seconds: float = _setting(
        1.0, "how often expired reservation holds are released"
    )
    invoice_grace_seconds: float = _setting(
        3600.0,
        "how long after a period ends late events are still rated into it, before its invoice",
    )
    billing_dates_per_run: int = _setting(
        12,
        "billing dates a contract's billing workflow bills before it continues as new (a new"
        " contract's workflow; one that runs keeps its own)",
    )
    outbox_poll_seconds: float = _setting(
        1.0, "how often the worker delivers the outbox (workflow starts, notifications)"
    )
    export_destination: str = _setting(
        "",
        "where the worker writes every tenant's rated events as hourly Parquet files, exactly"
        " once each (a directory or fsspec URL; a tenant's under `tenant=<id>/`); empty: off"
        " ([exporting](README.md#exporting-to-a-warehouse))",
        empty_means_off=True,
    )
    export_poll_seconds: float = _setting(
        60.0, "how often the worker's exporter looks for newly rated events"
    )
    export_batch_size: int = _setting(
        10_000, "most rated events the exporter writes per batch (files per batch: one per hour)"
    )
    gateway_timeout_seconds: float = _setting(
        5.0, "how long the simulated gateway's `pm_timeout` method takes to time out"
    )
    gateway_latency_seconds: float = _setting(
        0.0, "how long the simulated gateway takes to answer a charge it has made"
    )
    webhook_timeout_seconds: float = _setting(
        5.0, "how long a webhook endpoint has to answer one delivery attempt"
    )
    webhook_retry_initial_seconds: float = _setting(
        30.0, "wait before retrying a failed webhook delivery; doubles after each attempt"
    )
    webhook_retry_max_seconds: float = _setting(
        3600.0, "longest wait between two attempts to deliver a webhook"
    )
    webhook_max_attempts: int = _setting(
        20, "attempts to deliver a notification to an endpoint before giving up (each one logged)"
    )
    webhook_secret_keys: str = _setting(
        "",
        "keys encrypting webhook signing secrets at rest, `id:base64url-key,…`: the first"
        " encrypts, all decrypt. Needed by the server (to seal a new endpoint's secret), the"
        " worker, `rating webhooks reencrypt` and `rating db upgrade` once an endpoint exists;"
        " `rating webhooks new-key` makes one; unset under"
        " `rating dev` means a key kept in `.rating/webhook-secret-keys`"
        " ([rotation](docs/credit-lifecycle.md#webhook-secrets-at-rest))",
        secret=True,
    )
    expiry_warning_seconds: float = _setting(
        7 * 86400.0, "how long before a credit pool expires its `expiry.warning` is sent"
    )
    settlement_poll_seconds: float = _setting(
        300.0, "how often credit expiry and renewal check that the invoice they wait for is final"
    )
    failpoints: str = _setting(
        "", "testing only: failpoints to arm, `name=times,…` (see rating_service/failpoints.py)"
    )
    contract_cache_customers: int = _setting(
        100_000,
        "customers whose contracts and pool terms a server keeps in memory (least recent out)",
    )
    auth_cache_seconds: float = _setting(
        5.0, "how long a verified API key is trusted from memory (bounds revocation delay)"
    )
    portal_secret: str = _setting(
        "",
        "key signing customer-portal links (`CreatePortalSession`), at least 32 bytes, the same"
        " on every server; empty: no portal links; unset under `rating dev` means a key kept in"
        " `.rating/portal-secret`",
        secret=True,
    )
    portal_link_seconds: int = _setting(
        900, "how long a portal link lives when `CreatePortalSession` does not say"
    )
    console_address: str = _setting(
        "127.0.0.1:8080", "web console (`rating console`) listen address"
    )
    console_public_url: str = _setting(
        "",
        "the console's URL as browsers reach it, for the portal links `CreatePortalSession`"
        " returns (empty: `http://` + the console address)",
    )
    console_api_target: str = _setting(
        "", "gRPC host:port the console calls (empty: the server's listen address)"
    )
    console_metrics_url: str = _setting(
        "",
        "the server's Prometheus /metrics URL the operator console reads its live rates from"
        " (empty: `http://` + the metrics address)",
    )
    temporal_ui_url: str = _setting(
        "http://127.0.0.1:8233", "Temporal web UI, linked from the operator console's workflows"
    )
    otel_exporter_otlp_endpoint: str = _setting(
        "",
        "OpenTelemetry OTLP/HTTP endpoint for traces, e.g. `http://127.0.0.1:4318` (empty:"
        " tracing off)",
        empty_means_off=True,
    )
    worker_metrics_address: str = _setting(
        "",
        "the worker's Prometheus /metrics listen address, e.g. `127.0.0.1:9465` (empty: off;"
        " `rating dev` serves it on :9465, docker-compose on the worker's :9465)",
        empty_means_off=True,
    )
    data_dir: Path = _setting(Path(".rating"), "where `rating dev` keeps embedded data")
    bench_baselines: bool = _setting(
        False, "serve BenchService (no-op and naive-debit baselines) for the benchmark"
    )

    @property
    def console_url(self) -> str:
        """The console's base URL as browsers reach it."""
        if self.console_public_url:
            return self.console_public_url.rstrip("/")
        host, _, port = self.console_address.rpartition(":")
        if host in ("", "0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from the environment, refusing values that do not parse."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(env_name(f.name))
            if raw is None or (raw == "" and not f.metadata["empty_means_off"]):
                continue
            try:
                values[f.name] = _PARSERS[_base_type(f.type)](raw)
            except ValueError as exc:
                raise InvalidArgument.of_field(
                    env_name(f.name), f"cannot parse {raw!r}: {exc}"
                ) from exc
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise InvalidArgument.of_field(
                env_name("tls_key_file"), "TLS needs both RATING_TLS_CERT_FILE and the key file"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise InvalidArgument.of_field(
                env_name("tls_client_ca_file"), "mTLS needs the server certificate as well"
            )
        if self.portal_secret and len(self.portal_secret.encode()) < MIN_SECRET_BYTES:
            raise InvalidArgument.of_field(
                env_name("portal_secret"), f"at least {MIN_SECRET_BYTES} bytes"
            )
        Failpoints.parse(self.failpoints)  # a typo is refused at start, not at the first hit
        if self.log_format not in ("json", "text"):
            raise InvalidArgument.of_field(env_name("log_format"), "must be `json` or `text`")
        # A worker that caches workflows takes two workflow task slots and polls at least: one
        # for its own (sticky) queue.
        sticky = 2 if self.worker_cached_workflows else 1
        least = {
            "billing_dates_per_run": 1,
            "worker_cached_workflows": 0,
            "worker_workflow_tasks": sticky,
            "worker_activities": 1,
            "worker_local_activities": 1,
            "worker_workflow_task_pollers": sticky,
            "worker_activity_task_pollers": 1,
        }
        for name, minimum in least.items():
            if getattr(self, name) < minimum:
                raise InvalidArgument.of_field(env_name(name), f"must be at least {minimum}")
        # Temporal reads 0 attempts as "retry forever": an endpoint down must not mean that.
        if self.server_processes < 0:
            raise InvalidArgument.of_field(
                env_name("server_processes"), "must be 0 (one per core) or more"
            )
        if self.gc_threshold < 0:
            raise InvalidArgument.of_field(env_name("gc_threshold"), "must be 0 (default) or more")
        if self.stream_window < 1:
            raise InvalidArgument.of_field(env_name("stream_window"), "must be at least 1")
        if self.webhook_max_attempts < 1:
            raise InvalidArgument.of_field(env_name("webhook_max_attempts"), "must be at least 1")
        try:
            EncryptionKeys.parse(self.webhook_secret_keys)
        except ValueError as exc:
            raise InvalidArgument.of_field(env_name("webhook_secret_keys"), str(exc)) from exc

    def to_env(self) -> dict[str, str]:
        """The `RATING_*` variables that `from_env` reads back as these settings (unset: None)."""
        return {
            env_name(f.name): str(value)
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name)) is not None
        }

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (used by `rating dev` and tests)."""
        return dataclasses.replace(self, **changes)


def env_name(setting: str) -> str:
    """The environment variable a setting is read from."""
    return PREFIX + setting.upper()


def documented_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, for docs and consistency checks."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = "" if f.default is None else str(f.default)
        rows.append((env_name(f.name), default, str(f.metadata["doc"])))
    return rows


def _base_type(annotation: object) -> str:
    # Annotations are strings under `from __future__ import annotations`: "int", "Path | None".
    return str(annotation).replace(" | None", "").strip()


def _parse_bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "Path": Path,
}
