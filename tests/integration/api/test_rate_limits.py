"""Rate limits over real gRPC: one limit for the two processes of a port, refused from memory
with QuotaFailure and RetryInfo, not rated, and admitting again once the bucket refills."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc import aio

from rating_client import RatingClient
from rating_client.errors import decode_rich_status
from rating_client.gen.rating.v1 import admin_pb2, admin_pb2_grpc, rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually, refusal, status_of
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


async def test_a_key_s_own_limit_counts_its_events_and_no_other_key_s(
    acme: TenantKeys, client: RatingClient, channel: aio.Channel
) -> None:
    """A key of 3 events a minute: its 4th event is refused, a batch's beyond the 3rd too;
    another key of the tenant rates on."""
    account = await open_account(client, "cus-key-limited", overage_policy="arrears")
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    rating = rating_pb2_grpc.RatingServiceStub(channel)

    async def limited_key() -> tuple[tuple[str, str]]:
        request = json_format.ParseDict(
            {
                "role": "ROLE_RATER",
                "name": "metered-service",
                "rate_limit": {"limit_id": "key", "limit": "3", "per": "minute"},
            },
            admin_pb2.CreateApiKeyRequest(),
        )
        created = await admin.CreateApiKey(request, metadata=acme.metadata(Role.ADMIN))
        assert created.key.rate_limit.limit == "3" and created.key.rate_limit.per == "minute"
        return (("authorization", f"Bearer {created.secret}"),)

    key = await limited_key()
    for n in range(3):
        event = account.event(f"key-{n}", "api.call")
        await rating.RateAndDebit(rating_pb2.RateAndDebitRequest(event=event), metadata=key)
    fourth = rating_pb2.RateAndDebitRequest(event=account.event("key-3", "api.call"))
    code, reason, _ = await refusal(rating.RateAndDebit(fourth, metadata=key))
    assert (code, reason) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
    # Another key of the tenant is not held back by this one's limit.
    await rating.RateAndDebit(fourth, metadata=acme.metadata(Role.RATER))

    batch_key = await limited_key()
    batch = rating_pb2.BatchRateAndDebitRequest(
        events=[account.event(f"batch-{n}", "api.call") for n in range(5)]
    )
    results = (await rating.BatchRateAndDebit(batch, metadata=batch_key)).results
    assert [r.WhichOneof("result") for r in results] == ["response"] * 3 + ["error"] * 2
    assert {r.error.reason for r in results[3:]} == {"RATE_LIMITED"}
