"""A server whose PostgreSQL goes away answers UNAVAILABLE, never INTERNAL, and heals by itself."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from functools import partial
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rating_client import RatingClient
from rating_client.gen.rating.v1 import admin_pb2, admin_pb2_grpc, rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.runtime.embedded import EmbeddedPostgres
from rating_service.runtime.server import RunningServer, start_server
from rating_service.runtime.worker import run_worker
from rating_service.settings import Settings
from rating_service.store import migrations
from rating_service.store.database import asyncpg_dsn, with_database
from tests.conftest import TenantKeys, eventually, make_tenant, status_of
from tests.integration.billing import load_catalog, open_account

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class OwnPostgres:
    """A PostgreSQL of this test's own, which the test stops and starts (the session's stays up)."""

    def __init__(self, data_dir: Path) -> None:
        self._server = EmbeddedPostgres(data_dir)
        self.url = ""

    async def start(self) -> None:
        """Start it (again: same data, same socket, same URL)."""
        base = await asyncio.to_thread(self._server.start)
        self.url = with_database(base, "rating")

    async def stop(self) -> None:
        """Stop it; clients see their connections close and new ones refused."""
        await asyncio.to_thread(self._server.stop)


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    """A migrated database `rating` on a PostgreSQL of the test's own."""
    postgres = OwnPostgres(tmp_path / "pg")
    await postgres.start()
    admin = await asyncpg.connect(asyncpg_dsn(with_database(postgres.url, "postgres")))
    try:
        await admin.execute('CREATE DATABASE "rating"')
    finally:
        await admin.close()
    await asyncio.to_thread(migrations.upgrade, postgres.url)
    yield postgres
    await postgres.stop()


async def health_is(channel: aio.Channel, wanted: int) -> None:
    """Wait until the server's health service reports `wanted` (fails after 15 s)."""
    stub = health_pb2_grpc.HealthStub(channel)

    async def reported() -> bool:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return bool(reply.status == wanted)

    await eventually(reported, timeout_seconds=15)


def health_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The health transitions logged so far, in order."""
    return [r.getMessage() for r in caplog.records if r.name == "rating.health"]


async def test_calls_answer_unavailable_while_postgres_is_down_and_heal_when_it_returns(
    own_postgres: OwnPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    # Both transitions at WARNING: an operator filtering there sees an outage end as well as begin.
    caplog.set_level(logging.WARNING, logger="rating.health")
    caplog.set_level(logging.INFO, logger="rating.rpc")
    acme: TenantKeys = await make_tenant(own_postgres.url, "acme")
    await load_catalog(own_postgres.url, acme.tenant_id)
    await own_postgres.stop()

    settings = Settings(
        database_url=own_postgres.url,
        listen_address="127.0.0.1:0",
        metrics_address="",
        health_check_interval_seconds=0.1,
        # Keys stay trusted from memory, so calls get past authentication to the servicers.
        auth_cache_seconds=300.0,
        database_pool_size=4,
    )
    running: RunningServer = await start_server(settings)
    try:
        assert health_messages(caplog) == ["database unreachable; NOT_SERVING"]
        await own_postgres.start()
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await health_is(channel, SERVING)
            assert health_messages(caplog) == [
                "database unreachable; NOT_SERVING",
                "database reachable again; SERVING",
            ]
            async with RatingClient(
                f"127.0.0.1:{running.port}", acme.tokens[Role.ADMIN], timeout_seconds=10
            ) as client:
                account = await open_account(client, "cus-outage")
                await account.grant("10", grant_id="g-outage")
            rating = rating_pb2_grpc.RatingServiceStub(channel)
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            as_admin = acme.metadata(Role.ADMIN)

            events = {n: account.event(n, "api.call") for n in ("before", "after")}

            async def debit(event_id: str) -> rating_pb2.RateAndDebitResponse:
                event = events.get(event_id) or account.event(event_id, "api.call")
                request = rating_pb2.RateAndDebitRequest(event=event)
                reply: rating_pb2.RateAndDebitResponse = await rating.RateAndDebit(
                    request, metadata=as_admin, timeout=10
                )
                return reply

            async def balances() -> rating_pb2.GetBalancesResponse:
                reply: rating_pb2.GetBalancesResponse = await rating.GetBalances(
                    rating_pb2.GetBalancesRequest(customer_id="cus-outage"),
                    metadata=as_admin,
                    timeout=10,
                )
                return reply

            async def keys() -> admin_pb2.ListApiKeysResponse:
                reply: admin_pb2.ListApiKeysResponse = await admin.ListApiKeys(
                    admin_pb2.ListApiKeysRequest(), metadata=as_admin, timeout=10
                )
                return reply

            assert Decimal((await debit("before")).charge) == 1

            await own_postgres.stop()
            await health_is(channel, NOT_SERVING)
            # Logged once per transition, however many polls found the database away.
            assert health_messages(caplog)[2:] == ["database unreachable; NOT_SERVING"]
            caplog.clear()
            # Each twice: the first call may meet a pooled connection that died, the second
            # a fresh connection refused; both are the same outage to the caller.
            calls: list[Callable[[], Awaitable[object]]] = [
                partial(debit, "during-1"),
                partial(debit, "during-2"),
                balances,
                balances,
                keys,
                keys,
            ]
            for call in calls:
                with pytest.raises(aio.AioRpcError) as refused:
                    await call()
                assert status_of(refused.value) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "DEPENDENCY_UNAVAILABLE",
                ), refused.value.details()
                incident = re.search(r"incident (\w+)", refused.value.details() or "")
                assert incident is not None
                assert "retry" in (refused.value.details() or "")
                logged = [getattr(r, "incident", None) for r in caplog.records]
                assert incident.group(1) in logged

            await own_postgres.start()
            await health_is(channel, SERVING)
            assert health_messages(caplog) == ["database reachable again; SERVING"]
            assert Decimal((await debit("after")).charge) == 1
            assert (await debit("before")).replay
            reply = await balances()
            assert [Decimal(p.remaining) for p in reply.pools] == [8]
            assert len((await keys()).keys) == 3
    finally:
        await running.stop(0.5)


async def test_a_worker_waits_for_its_database_instead_of_exiting(
    own_postgres: OwnPostgres, temporal_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    await own_postgres.stop()
    settings = Settings(
        database_url=own_postgres.url,
        temporal_address=temporal_address,
        temporal_task_queue="worker-waits",
    )
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="rating.worker")
    running = asyncio.create_task(run_worker(settings, stop))

    def said(message: str) -> bool:
        return any(r.getMessage() == message for r in caplog.records if r.name == "rating.worker")

    await eventually(lambda: said("database unreachable; waiting to start"), timeout_seconds=20)
    assert not running.done()  # it waits, it does not exit
    await own_postgres.start()
    await eventually(lambda: said("worker polling"), timeout_seconds=30)
    stop.set()
    await asyncio.wait_for(running, 30)
