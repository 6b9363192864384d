"""The server's standard surface: health, reflection, limits, metrics, graceful drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.request
import uuid

import asyncpg
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rating_service.api.server import RunningServer, start_server
from rating_service.domain.auth import Role
from rating_service.embedded import free_port
from rating_service.gen.rating.v1 import admin_pb2, admin_pb2_grpc
from rating_service.settings import Settings
from rating_service.store.database import with_database
from tests.conftest import TenantKeys, status_of

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
        "rating.v1.InvoiceService",
        "rating.v1.OpsService",
        "rating.v1.RatingService",
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
    from rating_service.api.errors import decode_rich_status, field_violations

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


async def test_rating_serve_drains_and_exits_cleanly_on_sigterm(database_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RATING_DATABASE_URL": database_url,
        "RATING_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "RATING_METRICS_ADDRESS": "",
        "RATING_SHUTDOWN_GRACE_SECONDS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rating_service.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(20):
                while True:
                    try:
                        await wait_for_health(health, SERVING)
                        break
                    except aio.AioRpcError:
                        await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()
        assert b'"msg": "draining"' in output
        assert b'"msg": "stopped"' in output
    finally:
        if process.returncode is None:
            process.kill()
