"""Settings from the environment and the domain-error → gRPC status mapping (pure)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from rating_client.errors import field_violations
from rating_service.api.errors import rich_status, status_code
from rating_service.core import errors
from rating_service.settings import Settings


def test_settings_read_and_type_every_variable() -> None:
    settings = Settings.from_env(
        {
            "RATING_DATABASE_URL": "postgresql://u@h/db",
            "RATING_DATABASE_POOL_SIZE": "3",
            "RATING_SHUTDOWN_GRACE_SECONDS": "2.5",
            "RATING_TLS_CERT_FILE": "/c.pem",
            "RATING_TLS_KEY_FILE": "/k.pem",
            "RATING_LOG_FORMAT": "text",
            "UNRELATED": "x",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.database_pool_size == 3
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.tls_cert_file == Path("/c.pem")
    assert settings.temporal_task_queue == "rating"  # default kept


def test_a_worker_without_a_cache_may_run_one_workflow_task_at_a_time() -> None:
    settings = Settings.from_env(
        {"RATING_WORKER_CACHED_WORKFLOWS": "0", "RATING_WORKER_WORKFLOW_TASKS": "1"}
    )
    assert (settings.worker_cached_workflows, settings.worker_workflow_tasks) == (0, 1)


def test_an_empty_metrics_address_turns_metrics_off() -> None:
    assert Settings.from_env({}).metrics_address == "127.0.0.1:9464"
    assert Settings.from_env({"RATING_METRICS_ADDRESS": ""}).metrics_address == ""
    # Elsewhere an empty variable still means "the default" (an empty listen address is no use).
    unset = Settings.from_env({"RATING_LISTEN_ADDRESS": "", "RATING_LOG_LEVEL": ""})
    assert (unset.listen_address, unset.log_level) == ("127.0.0.1:50051", "INFO")


def test_settings_written_to_the_environment_read_back_the_same() -> None:
    """What a supervisor hands its server processes: every setting, None ones left unset."""
    settings = Settings(
        database_url="postgresql://u@h/db",
        metrics_address="",
        tls_cert_file=Path("/c.pem"),
        tls_key_file=Path("/k.pem"),
        shutdown_grace_seconds=2.5,
        server_processes=1,
        bench_baselines=True,
    )
    environ = settings.to_env()
    assert "RATING_TLS_CLIENT_CA_FILE" not in environ
    assert environ["RATING_METRICS_ADDRESS"] == ""
    assert Settings.from_env(environ) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"RATING_DATABASE_POOL_SIZE": "ten"}, "RATING_DATABASE_POOL_SIZE"),
        ({"RATING_TLS_CERT_FILE": "/c.pem"}, "RATING_TLS_KEY_FILE"),
        ({"RATING_TLS_CLIENT_CA_FILE": "/ca.pem"}, "RATING_TLS_CLIENT_CA_FILE"),
        ({"RATING_LOG_FORMAT": "xml"}, "RATING_LOG_FORMAT"),
        ({"RATING_SERVER_PROCESSES": "-1"}, "RATING_SERVER_PROCESSES"),
        ({"RATING_BILLING_DATES_PER_RUN": "0"}, "RATING_BILLING_DATES_PER_RUN"),
        ({"RATING_WORKER_CACHED_WORKFLOWS": "-1"}, "RATING_WORKER_CACHED_WORKFLOWS"),
        ({"RATING_WORKER_LOCAL_ACTIVITIES": "0"}, "RATING_WORKER_LOCAL_ACTIVITIES"),
        # A worker that caches workflows needs two slots: one for its sticky queue.
        ({"RATING_WORKER_WORKFLOW_TASKS": "1"}, "RATING_WORKER_WORKFLOW_TASKS"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        Settings.from_env(environ)
    assert [v.field for v in refused.value.violations] == [field]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.DomainError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_has_one_status_code(
    error: errors.DomainError, code: grpc.StatusCode
) -> None:
    assert status_code(error) == code
    assert rich_status(error).code == code.value[0]


def test_rich_status_carries_reason_fields_and_preconditions() -> None:
    collector = errors.ViolationCollector()
    collector.add("tiers[1].up_to", "must be above 5")
    collector.add("currency", "unknown")
    with pytest.raises(errors.InvalidArgument) as bad:
        collector.raise_if_any()
    status = rich_status(bad.value)
    assert field_violations(status) == {"tiers[1].up_to": "must be above 5", "currency": "unknown"}

    refused = errors.FailedPrecondition(
        "no credit",
        reason="INSUFFICIENT_CREDIT",
        violations=[errors.PreconditionViolation("BALANCE", "pool_1", "0 left")],
    )
    status = rich_status(refused)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "INSUFFICIENT_CREDIT"
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[1].Unpack(failure)
    assert failure.violations[0].subject == "pool_1"
