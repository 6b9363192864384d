"""Rate limits over real gRPC: one limit for the two processes of a port, refused from memory
with QuotaFailure and RetryInfo, not rated, and admitting again once the bucket refills."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from google.rpc import error_details_pb2
from grpc import aio

from rating_client import RatingClient
from rating_client.errors import decode_rich_status
from rating_client.gen.rating.v1 import rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.api.serving import separate_channel, serve_process
from tests.integration.api.test_rate_and_debit import _count, handled_by
from tests.integration.billing import open_account


async def test_ten_a_second_holds_across_two_server_processes_and_refills(
    acme: TenantKeys, database_url: str, client: RatingClient, settings: Settings
) -> None:
    """20 calls at once over 16 connections to `rating serve --processes 2`, 10/s, burst 10.

    Buckets per process would admit all 20 (10 each); the shared bucket admits its 10 and
    what it refilled meanwhile (10 per second of the burst's duration), and refuses the rest.
    """
    account = await open_account(
        client,
        "cus-limited",
        overage_policy="arrears",
        rate_limits=[{"limit_id": "calls", "limit": "10", "per": "second"}],
    )
    async with serve_process(
        RATING_DATABASE_URL=database_url, RATING_SERVER_PROCESSES="2"
    ) as served:
        channels = [separate_channel(served.port) for _ in range(16)]
        await asyncio.gather(*(channel.channel_ready() for channel in channels))
        refusals: list[aio.AioRpcError] = []
        try:

            async def call(name: str, n: int) -> object:
                stub = rating_pb2_grpc.RatingServiceStub(channels[n % len(channels)])
                request = rating_pb2.RateAndDebitRequest(
                    event=account.event(f"{name}-{n}", "api.call")
                )
                try:
                    await stub.RateAndDebit(request, metadata=acme.metadata(Role.RATER), timeout=30)
                except aio.AioRpcError as refused:
                    refusals.append(refused)
                    return status_of(refused)[1]
                return "OK"

            started = time.monotonic()
            burst = Counter(await asyncio.gather(*(call("burst", n) for n in range(20))))
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.1)  # a second refills the whole burst
            again = Counter(await asyncio.gather(*(call("again", n) for n in range(5))))
        finally:
            await asyncio.gather(*(channel.close(None) for channel in channels))
        assert await served.terminate() == 0, served.lines
        await eventually(served.every_server_process_stopped)
    assert set(burst) <= {"OK", "RATE_LIMITED"}
    assert 10 <= burst["OK"] <= 10 + math.ceil(elapsed * 10), (burst, elapsed)
    assert burst["RATE_LIMITED"] == 20 - burst["OK"] > 0
    assert again == {"OK": 5}
    handled = handled_by(served)
    assert len(handled) == 2 and all(handled.values()), handled
    # Refused calls were not rated.
    rated = await _count(
        database_url, "SELECT count(*) FROM rated_events WHERE event_id LIKE 'burst-%'"
    )
    assert rated == burst["OK"]
    status = decode_rich_status(refusals[0].trailing_metadata())
    assert status is not None
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    details = {detail.type_url.rsplit("/", 1)[-1]: detail for detail in status.details}
    details["google.rpc.QuotaFailure"].Unpack(quota)
    details["google.rpc.RetryInfo"].Unpack(retry)
    assert quota.violations[0].subject == f"contracts/{account.contract_id}/rate_limits/calls"
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 0.1
