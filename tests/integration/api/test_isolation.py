"""A group commit shares a commit, never a fate: what one event does cannot fail another's call."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from rating_client import (
    IdempotencyKeyMismatch,
    InsufficientCredit,
    InvalidRequest,
    RatingClient,
    RequestTooLarge,
)
from rating_client.gen.rating.v1 import rating_pb2
from rating_service.core.auth import Role
from rating_service.core.errors import DomainError
from rating_service.core.pricing.meter import UsageEvent
from rating_service.runtime.server import RunningServer, start_server
from rating_service.services.rating.engine import Outcome
from rating_service.settings import Settings
from tests.conftest import TenantKeys
from tests.integration.api.test_rate_and_debit import ledger_is_balanced
from tests.integration.billing import Account, open_account

pytestmark = pytest.mark.integration


def _call(at: datetime | None = None) -> UsageEvent:
    return UsageEvent("api.call", at or datetime.now(UTC), {})


async def test_an_event_the_database_refuses_fails_alone_and_new_accounts_survive(
    server: RunningServer,
    acme: TenantKeys,
    globex: TenantKeys,
    client: RatingClient,
    neighbour: RatingClient,
    database_url: str,
) -> None:
    mine = await open_account(client, "cus-a")
    await mine.grant("100", grant_id="g")
    # A fresh contract: its revenue and overage accounts are opened by its first batch.
    theirs = await open_account(neighbour, "cus-b")
    pool = await theirs.grant("100", grant_id="g")
    # The engine trusts the edge; past it, a NUL byte is what PostgreSQL refuses to store.
    batch = server.components.debits.rate_in_order(
        acme.tenant_id,
        [("cus-a", "ok-1", _call()), ("cus-a", "bad\x00id", _call()), ("cus-a", "ok-2", _call())],
    )
    beside = [
        server.components.debits.rate(globex.tenant_id, "cus-b", f"b-{n}", _call())
        for n in range(5)
    ]
    answers, others = await asyncio.gather(batch, asyncio.gather(*beside))
    assert [type(a) for a in answers] == [Outcome, DomainError, Outcome]
    refused = answers[1]
    assert isinstance(refused, DomainError)
    assert refused.reason == "INTERNAL" and "incident" in refused.message
    assert "cus-b" not in refused.message and theirs.contract_id not in refused.message
    assert all(isinstance(o, Outcome) and not o.replay for o in others)
    # The accounts its first batch opened are real: later calls of that contract succeed.
    for n in range(5, 10):
        await theirs.call(f"b-{n}")
    assert await theirs.balances() == {pool: Decimal(90)}
    await ledger_is_balanced(database_url)


async def test_the_same_event_id_twice_in_one_batch_debits_once_and_answers_both(
    client: RatingClient,
    neighbour: RatingClient,
) -> None:
    account = await open_account(client, "cus-twice")
    pool = await account.grant("10", grant_id="g")
    event = account.event("twice", "api.call")
    reply = await client.call(
        client.rating.BatchRateAndDebit,
        rating_pb2.BatchRateAndDebitRequest(events=[event, event]),
    )
    first, again = (r.response for r in reply.results)
    assert (first.replay, again.replay) == (False, True)
    assert first.charge == again.charge == "1"
    assert await account.balances() == {pool: Decimal(9)}
    # The id is settled, not stuck: a later call replays it.
    assert (await client.call(client.rating.RateAndDebit, _request(event))).replay


async def test_a_twin_with_another_payload_waits_for_the_first_and_is_rated_if_it_failed(
    client: RatingClient,
    neighbour: RatingClient,
) -> None:
    account = await open_account(client, "cus-twin")  # overage policy: block
    pool = await account.grant("5", grant_id="g")
    at = datetime.now(UTC)
    # 600 tokens of the large model cost 6 > 5: refused. 100 cost 1: fine.
    too_big = _tokens(account, "twin", "600", at)
    fits = _tokens(account, "twin", "100", at)
    big, small = await asyncio.gather(
        client.call(client.rating.RateAndDebit, _request(too_big)),
        client.call(client.rating.RateAndDebit, _request(fits)),
        return_exceptions=True,
    )
    assert isinstance(big, InsufficientCredit)
    assert isinstance(small, rating_pb2.RateAndDebitResponse) and not small.replay
    assert await account.balances() == {pool: Decimal(4)}
    with pytest.raises(IdempotencyKeyMismatch):
        await client.call(client.rating.RateAndDebit, _request(too_big))


async def test_two_servers_racing_on_the_same_ids_debit_each_once_and_never_fail(
    settings: Settings,
    server: RunningServer,
    acme: TenantKeys,
    client: RatingClient,
    database_url: str,
) -> None:
    account = await open_account(client, "cus-race")
    pool = await account.grant("1000", grant_id="g")
    # Another customer, another contract: twins of another payload meet only on the event key.
    other_account = await open_account(client, "cus-race-other")
    other_pool = await other_account.grant("1000", grant_id="g-other")
    other = await start_server(settings)
    try:
        async with RatingClient(
            f"127.0.0.1:{other.port}", acme.tokens[Role.RATER], timeout_seconds=10
        ) as second:
            same = [account.event(f"race-{n}", "api.call") for n in range(150)]
            answers = await asyncio.gather(
                *(
                    rating.call(rating.rating.RateAndDebit, _request(event))
                    for event in same
                    for rating in (client, second)
                )
            )
            mine = [account.event(f"clash-{n}", "api.call") for n in range(50)]
            theirs = [other_account.event(f"clash-{n}", "api.call") for n in range(50)]
            clashes = await asyncio.gather(
                *(
                    rating.call(rating.rating.RateAndDebit, _request(event))
                    for pair in zip(mine, theirs, strict=True)
                    for rating, event in zip((client, second), pair, strict=True)
                ),
                return_exceptions=True,
            )
    finally:
        await other.stop(0.5)
    fresh = [a for a in answers if not a.replay]
    assert len(fresh) == 150 and len(answers) == 300
    # Each clashing id is rated once, for whichever payload came first; the other is refused.
    kinds = Counter(type(c).__name__ for c in clashes)
    assert kinds == {"RateAndDebitResponse": 50, "IdempotencyKeyMismatch": 50}, [
        repr(c) for c in clashes if type(c).__name__ == "RatingError"
    ]
    spent = (await account.balances())[pool] + (await other_account.balances())[other_pool]
    assert spent == Decimal(2000 - 150 - 50)
    await ledger_is_balanced(database_url)


def _request(event: rating_pb2.UsageEvent) -> rating_pb2.RateAndDebitRequest:
    return rating_pb2.RateAndDebitRequest(event=event)


def _tokens(account: Account, event_id: str, tokens: str, at: datetime) -> rating_pb2.UsageEvent:
    event = account.event(event_id, "llm.completion", tokens=tokens, model="large")
    event.timestamp.FromDatetime(at)
    return event


async def test_bad_input_is_refused_at_the_edge_naming_each_field(
    settings: Settings, client: RatingClient
) -> None:
    account = await open_account(client, "cus-edge")
    await account.grant("10", grant_id="g")
    bad = account.event("x" * 256, "api.call", note="a\x00b")
    bad.timestamp.nanos = -1
    with pytest.raises(InvalidRequest) as refused:
        await client.call(client.rating.RateAndDebit, _request(bad))
    assert set(refused.value.fields) == {
        "event.event_id",
        "event.properties['note']",
        "event.timestamp",
    }
    # In a batch, the bad event fails alone, its fields named under its index.
    reply = await client.call(
        client.rating.BatchRateAndDebit,
        rating_pb2.BatchRateAndDebitRequest(events=[account.event("fine", "api.call"), bad]),
    )
    fine, refused_item = reply.results
    assert fine.WhichOneof("result") == "response"
    assert refused_item.error.reason == "INVALID_ARGUMENT"
    assert "events[1].event_id" in refused_item.error.message
    huge = account.event("huge", "api.call", note="x" * 4000)
    many = rating_pb2.BatchRateAndDebitRequest(
        events=[huge] * (settings.max_message_bytes // 4000 + 1)
    )
    with pytest.raises(RequestTooLarge) as too_large:
        await client.call(client.rating.BatchRateAndDebit, many)
    assert too_large.value.reason == "MESSAGE_TOO_LARGE"
