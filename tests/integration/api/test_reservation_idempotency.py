"""Authorize's idempotency key covers the whole request: the TTL too, not only the amount."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from rating_client import IdempotencyKeyMismatch, RatingClient
from tests.integration.billing import open_account

pytestmark = pytest.mark.integration


async def test_authorizing_again_with_another_ttl_is_refused_not_replayed(
    client: RatingClient,
) -> None:
    # Found by the API state machine: the retry used to be answered as a replay carrying the
    # first expiry, so a caller that asked for a longer hold silently got the shorter one.
    account = await open_account(client, "cus-ttl")
    pool = await account.grant("10", grant_id="g-ttl")
    at = datetime.now(UTC)

    async def hold(ttl_seconds: int) -> bool:
        reply = await client.authorize(
            reservation_id="r-ttl",
            customer_id="cus-ttl",
            product_key="calls",
            amount=Decimal(2),
            ttl_seconds=ttl_seconds,
            timestamp=at,
        )
        return reply.replay

    assert await hold(900) is False
    with pytest.raises(IdempotencyKeyMismatch) as mismatch:
        await hold(960)
    assert (mismatch.value.code.name, mismatch.value.reason) == (
        "ALREADY_EXISTS",
        "IDEMPOTENCY_KEY_MISMATCH",
    )
    assert await hold(900) is True  # the same request is still a replay
    balances = await client.balances("cus-ttl")
    assert [(p.pool_id, p.remaining, p.pending) for p in balances.pools] == [(pool, "10", "2")]
