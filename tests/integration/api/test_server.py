"""The server's standard surface: health, reflection, limits, metrics, graceful drain."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rating_client import RatingClient
from rating_client.gen.rating.v1 import admin_pb2, admin_pb2_grpc, rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.runtime.embedded import port_in_use
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn, with_database
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.api.serving import (
    listening_ports,
    listening_ports_of_tree,
    separate_channel,
    serve_process,
)
from tests.integration.billing import load_catalog, open_account

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def wait_for_health(stub: health_pb2_grpc.HealthStub, wanted: int, service: str = "") -> None:
    """Poll the health service until it reports `wanted` (fails after 10 s)."""
    async with asyncio.timeout(10):
        while True:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            if reply.status == wanted:
                return
            await asyncio.sleep(0.05)


async def test_health_flips_while_the_database_is_away(
    postgres_url: str, template_database: str
) -> None:
    name = f"rating_health_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(with_database(postgres_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    settings = Settings(
        database_url=with_database(postgres_url, name),
        listen_address="127.0.0.1:0",
        metrics_address="",
        health_check_interval_seconds=0.1,
    )
    running = await start_server(settings)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await wait_for_health(health, SERVING)
            await wait_for_health(health, SERVING, "rating.v1.AdminService")
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await wait_for_health(health, NOT_SERVING)
            await wait_for_health(health, NOT_SERVING, "rating.v1.AdminService")
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
            await wait_for_health(health, SERVING)
    finally:
        await running.stop(0.1)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_reflection_lists_every_service(channel: aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> object:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    services = set()
    async for reply in stub.ServerReflectionInfo(ask()):
        services = {s.name for s in reply.list_services_response.service}
    assert services == {
        "rating.v1.AdminService",
        "rating.v1.CatalogService",
        "rating.v1.ContractService",
        "rating.v1.DiscountService",
        "rating.v1.InvoiceService",
        "rating.v1.OpsService",
        "rating.v1.PortalService",
        "rating.v1.RatingService",
        "rating.v1.WebhookService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_an_oversized_request_is_refused(database_url: str, acme: TenantKeys) -> None:
    settings = Settings(
        database_url=database_url,
        listen_address="127.0.0.1:0",
        metrics_address="",
        max_message_bytes=1024,
    )
    running = await start_server(settings)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.CreateApiKey(
                    admin_pb2.CreateApiKeyRequest(role=admin_pb2.ROLE_RATER, name="x" * 4096),
                    metadata=acme.metadata(Role.ADMIN),
                )
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            listed = await stub.ListApiKeys(
                admin_pb2.ListApiKeysRequest(), metadata=acme.metadata(Role.ADMIN)
            )
            assert len(listed.keys) == 3
    finally:
        await running.stop(0.1)


async def test_invalid_input_names_the_field(channel: aio.Channel, acme: TenantKeys) -> None:
    from rating_client.errors import decode_rich_status, field_violations

    stub = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(aio.AioRpcError) as refused:
        await stub.CreateApiKey(admin_pb2.CreateApiKeyRequest(), metadata=acme.metadata(Role.ADMIN))
    assert status_of(refused.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    status = decode_rich_status(refused.value.trailing_metadata())
    assert status is not None
    assert set(field_violations(status)) == {"role"}


async def test_metrics_count_requests_by_method_and_code(
    server: RunningServer, channel: aio.Channel, acme: TenantKeys
) -> None:
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=acme.metadata(Role.RATER))
    with pytest.raises(aio.AioRpcError):
        await stub.WhoAmI(admin_pb2.WhoAmIRequest())
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'rating_grpc_requests_total{code="OK",method="WhoAmI"} 1.0' in body
    assert 'rating_grpc_requests_total{code="UNAUTHENTICATED",method="WhoAmI"} 1.0' in body
    refused = 'code="UNAUTHENTICATED",method="WhoAmI",reason="MISSING_API_KEY"'
    assert f"rating_grpc_errors_total{{{refused}}} 1.0" in body
    assert 'rating_grpc_request_seconds_count{method="WhoAmI"} 2.0' in body


@pytest.fixture
def default_ports_taken() -> Iterator[None]:
    """Something listens on the default gRPC and metrics ports, as a running `make run` does."""
    held = []
    for port in DEFAULT_PORTS:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen()
        except OSError:
            listener.close()  # taken already, by a stack that is running: just as good
        else:
            held.append(listener)
    try:
        assert all(port_in_use(port) for port in DEFAULT_PORTS)
        yield
    finally:
        for listener in held:
            listener.close()


DEFAULT_PORTS = (50051, 9464)


@pytest.mark.parametrize("processes", [1, 2])
async def test_rating_serve_drains_and_exits_cleanly_on_sigterm(
    database_url: str, processes: int
) -> None:
    async with serve_process(
        RATING_DATABASE_URL=database_url,
        RATING_SHUTDOWN_GRACE_SECONDS="1",
        RATING_SERVER_PROCESSES=str(processes),
    ) as served:
        async with aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            await wait_for_health(health_pb2_grpc.HealthStub(channel), SERVING)
        assert len(served.server_pids) == processes
        assert await served.terminate() == 0, served.lines
        assert served.logged("draining")
        assert served.logged("stopped")
        # Each server process drained, not only the supervisor that was signalled.
        await eventually(served.every_server_process_stopped)
        assert all(served.logged_by(pid, "draining") for pid in served.server_pids)


async def test_a_server_process_that_dies_is_noticed_and_the_others_drain(
    database_url: str,
) -> None:
    async with serve_process(
        RATING_DATABASE_URL=database_url,
        RATING_SHUTDOWN_GRACE_SECONDS="1",
        RATING_SERVER_PROCESSES="2",
    ) as served:
        killed, survivor = served.server_pids
        os.kill(killed, signal.SIGKILL)
        async with asyncio.timeout(30):
            exit_code = await served.process.wait()
        await eventually(lambda: bool(served.logged_by(survivor, "stopped")))
    assert exit_code == 1, served.lines
    [noticed] = [
        line
        for line in served.lines
        if line.get("msg") == "server process ended unexpectedly; draining the others"
    ]
    assert (noticed["pid"], noticed["exit_code"]) == (killed, -signal.SIGKILL)
    assert served.logged_by(survivor, "draining")


async def test_the_metrics_of_every_server_process_add_up_on_one_port(
    database_url: str, acme: TenantKeys, tmp_path: Path
) -> None:
    async with serve_process(
        RATING_DATABASE_URL=database_url,
        RATING_SERVER_PROCESSES="2",
        RATING_METRICS_ADDRESS="127.0.0.1:0",
        TMPDIR=str(tmp_path),  # where the supervisor keeps the processes' metrics
    ) as served:
        [directory] = await asyncio.to_thread(lambda: list(tmp_path.glob("rating-metrics-*")))
        assert listening_ports_of_tree(served.process.pid) == {
            served.port,
            served.serving["metrics_port"],
        }
        channels = [separate_channel(served.port) for _ in range(16)]
        try:
            await asyncio.gather(
                *(
                    admin_pb2_grpc.AdminServiceStub(channel).WhoAmI(
                        admin_pb2.WhoAmIRequest(), metadata=acme.metadata(Role.RATER)
                    )
                    for channel in channels
                    for _ in range(3)
                )
            )
        finally:
            await asyncio.gather(*(channel.close(None) for channel in channels))
        url = f"http://127.0.0.1:{served.serving['metrics_port']}/metrics"
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        assert await served.terminate() == 0, served.lines
        await eventually(served.every_server_process_stopped)
    handled = {
        pid: served.logged_by(pid, "stopped")[0]["rpcs_handled"] for pid in served.server_pids
    }
    # Both processes served some of the 48 calls, and /metrics counts all 48 of them.
    assert len(handled) == 2 and all(handled.values()), handled
    assert sum(handled.values()) == 48
    assert sample(body, "rating_grpc_requests_total", method="WhoAmI", code="OK") == 48
    assert sample(body, "rating_grpc_request_seconds_count", method="WhoAmI") == 48
    assert not directory.exists()


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    raise AssertionError(f"no {name}{labels} in:\n{exposition}")


async def test_an_empty_metrics_address_opens_no_port_beside_a_running_stack(
    default_ports_taken: None, database_url: str
) -> None:
    async with serve_process(RATING_DATABASE_URL=database_url, RATING_METRICS_ADDRESS="") as served:
        assert served.serving["metrics_port"] is None
        # Every process of the server: one, or a supervisor and those it started.
        assert listening_ports_of_tree(served.process.pid) == {served.port}
        assert served.port not in DEFAULT_PORTS
        assert await served.terminate() == 0, served.lines


async def test_a_server_on_port_zero_starts_beside_a_running_stack_and_frees_its_ports(
    default_ports_taken: None, settings: Settings
) -> None:
    running = await start_server(settings)
    try:
        assert running.metrics_port is not None
        assert {running.port, running.metrics_port}.isdisjoint(DEFAULT_PORTS)
        assert listening_ports(os.getpid()) >= {running.port, running.metrics_port}
    finally:
        await running.stop(0.1)
    assert running.metrics_port not in listening_ports(os.getpid())
    assert running.port not in listening_ports(os.getpid())


@pytest.mark.parametrize("commit_unblocked", ["within the grace", "after the grace"])
async def test_sigterm_answers_every_debit_in_flight_and_loses_none(
    database_url: str, acme: TenantKeys, commit_unblocked: str
) -> None:
    """200 debits on one contract wait in the group-commit queue when SIGTERM arrives."""
    await load_catalog(database_url, acme.tenant_id)
    async with serve_process(
        RATING_DATABASE_URL=database_url, RATING_SHUTDOWN_GRACE_SECONDS="3"
    ) as served:
        async with RatingClient(
            f"127.0.0.1:{served.port}", acme.tokens[Role.ADMIN], timeout_seconds=10
        ) as client:
            account = await open_account(client, "cus-drain")
            pool = await account.grant("1000", grant_id="g-drain")
        dsn = asyncpg_dsn(database_url)
        blocker = await asyncpg.connect(dsn)
        observer = await asyncpg.connect(dsn)
        try:
            # Hold the pool's row lock, so the first batch blocks in its commit and the other
            # debits queue up behind it in the engine: all in flight when SIGTERM arrives.
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute(
                "SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", f"pool:{pool}"
            )
            async with aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
                stub = rating_pb2_grpc.RatingServiceStub(channel)

                async def debit(n: int) -> tuple[str, str]:
                    event_id = f"drain-{n}"
                    request = rating_pb2.RateAndDebitRequest(
                        event=account.event(event_id, "api.call")
                    )
                    try:
                        await stub.RateAndDebit(
                            request, metadata=acme.metadata(Role.RATER), timeout=30
                        )
                    except aio.AioRpcError as refused:
                        return event_id, refused.code().name
                    return event_id, "OK"

                calls = [asyncio.create_task(debit(n)) for n in range(200)]

                async def a_commit_waits_on_the_lock() -> bool:
                    waiting = await observer.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    return bool(waiting)

                await eventually(a_commit_waits_on_the_lock)
                served.process.send_signal(signal.SIGTERM)
                await eventually(lambda: served.logged("draining"))
                if commit_unblocked == "within the grace":
                    await blocking.rollback()
                async with asyncio.timeout(20):
                    exit_code = await served.process.wait()
                answers = dict(await asyncio.gather(*calls))
            if commit_unblocked == "after the grace":
                await blocking.rollback()
            debited = {
                row["event_id"]
                for row in await observer.fetch(
                    "SELECT event_id FROM rated_events WHERE tenant_id = $1", acme.tenant_id
                )
            }
        finally:
            await blocker.close()
            await observer.close()
    assert exit_code == 0, served.lines
    # Never CANCELLED or INTERNAL: a caller either has its answer or is told to retry.
    assert set(answers.values()) <= {"OK", "UNAVAILABLE"}, Counter(answers.values())
    succeeded = {event_id for event_id, code in answers.items() if code == "OK"}
    assert succeeded <= debited
    if commit_unblocked == "within the grace":
        # Everything that reached the engine before SIGTERM was answered with its debit.
        assert len(succeeded) > 0
        assert debited == succeeded
    else:
        # Cut short at the end of the grace: told to retry, and nothing half-done stayed.
        assert succeeded == set() and debited == set()
        assert any(line.get("msg") == "RPCs cut short by the drain" for line in served.lines)
