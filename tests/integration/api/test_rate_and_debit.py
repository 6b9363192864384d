"""RateAndDebit over real gRPC and PostgreSQL: concurrency, idempotency, draw-down, policies."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from grpc import aio

from rating_client import (
    ContractSuspended,
    IdempotencyKeyMismatch,
    InsufficientCredit,
    InvalidRequest,
    RatingClient,
    RatingError,
    RatingRefused,
    SpendCapExceeded,
)
from rating_client.gen.rating.v1 import contract_pb2, contract_pb2_grpc, rating_pb2, rating_pb2_grpc
from rating_service.core.auth import Role
from rating_service.runtime.embedded import free_port
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.api.serving import ServeProcess, separate_channel, serve_process
from tests.integration.billing import Account, open_account


async def ledger_is_balanced(database_url: str) -> None:
    """Σ debits = Σ credits, every account equals its transfers, no pool below zero."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        totals = await conn.fetchrow(  # always a row: aggregates
            "SELECT sum(debits_posted) AS d, sum(credits_posted) AS c,"
            " sum(debits_pending) AS dp, sum(credits_pending) AS cp FROM accounts"
        )
        assert totals is not None
        assert totals["d"] == totals["c"]
        assert totals["dp"] == totals["cp"]
        drift = await conn.fetch(
            "SELECT a.account_id FROM accounts a LEFT JOIN LATERAL ("
            " SELECT coalesce(sum(amount) FILTER (WHERE debit_account_id = a.account_id"
            "   AND flags = 0), 0) AS d,"
            " coalesce(sum(amount) FILTER (WHERE credit_account_id = a.account_id"
            "   AND flags = 0), 0) AS c FROM transfers"
            " WHERE debit_account_id = a.account_id OR credit_account_id = a.account_id) t"
            " ON true WHERE t.d <> a.debits_posted OR t.c <> a.credits_posted"
        )
        assert drift == []
        negative = await conn.fetch(
            "SELECT account_id FROM accounts WHERE kind = 'pool'"
            " AND credits_posted - debits_posted - debits_pending < 0"
        )
        assert negative == []
    finally:
        await conn.close()


async def test_tokens_draw_the_pool_and_answer_with_breakdown_and_balance(
    client: RatingClient,
) -> None:
    account = await open_account(client, "cus-2")
    pool = await account.grant("10", grant_id="g2")
    answer = await client.rate_and_debit(
        event_id="e2",
        customer_id="cus-2",
        event_type="llm.completion",
        properties={"tokens": "150", "model": "large"},
    )
    # 150 tokens × 0.01 = 1.50, all from the one pool; 10 − 1.50 = 8.50 left.
    assert Decimal(answer.charge) == Decimal("1.50")
    assert [(d.pool_id, Decimal(d.amount)) for d in answer.draws] == [(pool, Decimal("1.50"))]
    assert [(b.pool_id, Decimal(b.remaining)) for b in answer.balances] == [(pool, Decimal("8.50"))]
    [line] = answer.lines
    assert (line.product_key, dict(line.dimensions)) == ("tokens", {"model": "large"})
    assert [(b.item, b.quantity, dict(b.cell)) for b in line.breakdown] == [
        ("units", "150", {"model": "large"})
    ]
    assert await account.balances() == {pool: Decimal("8.50")}


async def test_500_concurrent_debits_on_a_100_unit_pool_succeed_exactly_100_times(
    client: RatingClient, database_url: str
) -> None:
    account = await open_account(client, "cus-hot")
    pool = await account.grant("100", grant_id="g-hot")

    async def one(n: int) -> str:
        try:
            await account.call(f"hot-{n}")
        except InsufficientCredit as refused:
            assert refused.code.name == "FAILED_PRECONDITION"
            return "refused"
        return "ok"

    outcomes = Counter(await asyncio.gather(*(one(n) for n in range(500))))
    assert outcomes == {"ok": 100, "refused": 400}
    assert await account.balances() == {pool: Decimal(0)}
    await ledger_is_balanced(database_url)


async def test_the_same_event_id_debits_once_and_answers_the_same(
    client: RatingClient, database_url: str
) -> None:
    account = await open_account(client, "cus-idem")
    pool = await account.grant("100", grant_id="g-idem")
    at = datetime.now(UTC)  # a retry resends the same event, timestamp included
    sequential = [await account.call("same", at) for _ in range(50)]
    concurrent = await asyncio.gather(*(account.call("same-2", at) for _ in range(50)))
    for answers in (sequential, concurrent):
        assert sum(not a.replay for a in answers) == 1
        first = answers[0]
        for answer in answers:
            answer.replay = first.replay
            assert answer == first
    assert await account.balances() == {pool: Decimal(98)}
    with pytest.raises(IdempotencyKeyMismatch) as mismatch:
        await account.call("same", at, note="another payload")
    assert (mismatch.value.code.name, mismatch.value.reason) == (
        "ALREADY_EXISTS",
        "IDEMPOTENCY_KEY_MISMATCH",
    )
    await ledger_is_balanced(database_url)


async def test_draw_down_follows_priority_cost_scope_and_expiry(client: RatingClient) -> None:
    account = await open_account(client, "cus-order")
    now = datetime.now(UTC)
    paid = await account.grant("1", grant_id="paid", cost_basis="1")
    free = await account.grant("1", grant_id="free", cost_basis="0")
    scoped = await account.grant("1", grant_id="scoped", scope=("calls",))
    expiring = await account.grant("1", grant_id="soon", expires_at=now + timedelta(days=1))
    urgent = await account.grant("1", grant_id="urgent", priority=-1, cost_basis="1")
    expired = await account.grant(
        "5",
        grant_id="expired",
        starts_at=now - timedelta(days=2),
        expires_at=now - timedelta(hours=1),
    )
    order = [(await account.call(f"o{n}")).draws[0].pool_id for n in range(5)]
    # priority first; then free before paid; narrower scope; sooner expiry; creation order.
    assert order == [urgent, scoped, expiring, free, paid]
    with pytest.raises(InsufficientCredit):
        await account.call("o5")  # only the expired pool has money left
    assert (await account.balances())[expired] == Decimal(5)


async def test_arrears_accrue_overage_and_a_spend_cap_refuses(client: RatingClient) -> None:
    account = await open_account(client, "cus-arrears", overage_policy="arrears", spend_cap="3")
    pool = await account.grant("1", grant_id="g-arrears")
    first = await account.call("a1")
    second = await account.call("a2")
    assert [(d.pool_id, d.amount) for d in first.draws] == [(pool, "1")]
    assert list(second.draws) == []
    assert Decimal(second.overage) == Decimal(1)
    await account.call("a3")
    with pytest.raises(SpendCapExceeded) as capped:
        await account.call("a4")
    assert capped.value.reason == "SPEND_CAP_EXCEEDED"
    balances = await client.balances("cus-arrears")
    assert Decimal(balances.overage) == Decimal(2)


async def test_a_volume_tier_crossing_credits_back(client: RatingClient) -> None:
    account = await open_account(client, "cus-volume")
    pool = await account.grant("100", grant_id="g-volume")

    async def embed(event_id: str, tokens: str) -> Decimal:
        answer = await client.rate_and_debit(
            event_id=event_id,
            customer_id="cus-volume",
            event_type="embedding.created",
            properties={"tokens": tokens},
        )
        return Decimal(answer.charge)

    # P(100) = 100 × 0.10 = 10; P(101) = 101 × 0.05 = 5.05, so one more token costs −4.95.
    assert await embed("v1", "100") == Decimal("10.00")
    assert await embed("v2", "1") == Decimal("-4.95")
    assert await account.balances() == {pool: Decimal("94.95")}


async def test_refusals_change_nothing_and_say_why(
    client: RatingClient, database_url: str, acme: TenantKeys
) -> None:
    import asyncpg

    account = await open_account(client, "cus-refuse")
    pool = await account.grant("5", grant_id="g-refuse")
    future = datetime.now(UTC) + timedelta(minutes=10)
    with pytest.raises(InvalidRequest) as ahead:
        await client.rate_and_debit(
            event_id="f1",
            customer_id="cus-refuse",
            event_type="api.call",
            properties={},
            timestamp=future,
        )
    assert ahead.value.reason == "EVENT_IN_FUTURE"
    with pytest.raises(InvalidRequest) as unknown:
        await client.rate_and_debit(
            event_id="f2", customer_id="cus-refuse", event_type="nope", properties={}
        )
    assert "event.event_type" in unknown.value.fields
    with pytest.raises(RatingRefused) as nobody:
        await client.rate_and_debit(
            event_id="f3", customer_id="cus-nobody", event_type="api.call", properties={}
        )
    assert nobody.value.reason == "NO_CONTRACT_IN_FORCE"
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "UPDATE contracts SET status = 'suspended' WHERE contract_id = $1",
            account.contract_id,
        )
        await conn.execute(
            "SELECT pg_notify('rating_contracts', $1)", f"{acme.tenant_id}:cus-refuse"
        )
    finally:
        await conn.close()

    attempts = iter(range(1000))

    async def suspended() -> bool:
        try:
            await account.call(f"s{next(attempts)}")
        except ContractSuspended:
            return True
        return False

    await eventually(suspended)
    # Calls before the change reached the cache were charged; the refused one was not.
    charged = await _spent(database_url, pool)
    assert await account.balances() == {pool: Decimal(5) - charged}


async def test_a_batch_answers_each_event_and_one_bad_event_fails_alone(
    client: RatingClient,
) -> None:
    account = await open_account(client, "cus-batch")
    pool = await account.grant("2", grant_id="g-batch")
    events = [account.event(f"b{n}", "api.call") for n in range(3)]
    events.insert(1, account.event("bad", "unknown.type"))
    reply = await client.call(
        client.rating.BatchRateAndDebit, rating_pb2.BatchRateAndDebitRequest(events=events)
    )
    kinds = [r.WhichOneof("result") for r in reply.results]
    assert kinds == ["response", "error", "response", "error"]
    assert reply.results[1].error.reason == "INVALID_ARGUMENT"
    assert reply.results[3].error.reason == "INSUFFICIENT_CREDIT"
    assert await account.balances() == {pool: Decimal(0)}


async def test_reservations_hold_capture_release_and_expire(
    client: RatingClient, database_url: str
) -> None:
    account = await open_account(client, "cus-hold")
    pool = await account.grant("10", grant_id="g-hold")
    at = datetime.now(UTC)  # a retry resends the same request, timestamp included
    held = await client.authorize(
        reservation_id="r1",
        customer_id="cus-hold",
        product_key="calls",
        amount=Decimal(4),
        timestamp=at,
    )
    assert [(h.pool_id, h.amount) for h in held.holds] == [(pool, "4")]
    # Nothing is posted yet: 10 remain, 4 of them pending.
    assert [(b.pool_id, b.remaining, b.pending) for b in held.balances] == [(pool, "10", "4")]
    again = await client.authorize(
        reservation_id="r1",
        customer_id="cus-hold",
        product_key="calls",
        amount=Decimal(4),
        timestamp=at,
    )
    assert again.replay
    assert again.holds == held.holds
    assert again.balances == held.balances
    balances = await client.balances("cus-hold")
    assert (balances.pools[0].remaining, balances.pools[0].pending) == ("10", "4")
    captured = await client.capture(reservation_id="r1", event=account.event("c1", "api.call"))
    # The call cost 1: the 4 held are released and 1 is debited; 4 − 1 = 3 given back.
    assert Decimal(captured.debit.charge) == Decimal(1)
    assert Decimal(captured.released) == Decimal(3)
    balances = await client.balances("cus-hold")
    assert Decimal(balances.pools[0].remaining) == Decimal(9)
    assert Decimal(balances.pools[0].pending) == Decimal(0)
    with pytest.raises(RatingError):
        await client.capture(reservation_id="r1", event=account.event("c2", "api.call"))
    await client.authorize(
        reservation_id="r2", customer_id="cus-hold", product_key="calls", amount=Decimal(3)
    )
    voided = await client.void("r2")
    assert Decimal(voided.released) == 3
    assert (await client.void("r2")).replay
    await client.authorize(
        reservation_id="r3",
        customer_id="cus-hold",
        product_key="calls",
        amount=Decimal(2),
        ttl_seconds=1,
    )

    async def released() -> bool:
        reply = await client.balances("cus-hold")
        return Decimal(reply.pools[0].pending) == 0

    await eventually(released, timeout_seconds=15)
    await ledger_is_balanced(database_url)


async def test_two_server_processes_on_one_database_never_overdraw(
    settings: Settings, acme: TenantKeys, database_url: str, client: RatingClient
) -> None:
    account = await open_account(client, "cus-two")
    pool = await account.grant("60", grant_id="g-two")
    port = free_port()
    env = {
        **os.environ,
        "RATING_DATABASE_URL": database_url,
        "RATING_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "RATING_METRICS_ADDRESS": "",
        "RATING_LOG_LEVEL": "WARNING",
        # Two servers apart, each one process; one port served by two: the tests below.
        "RATING_SERVER_PROCESSES": "1",
    }
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rating_service.cli", "serve", env=env
    )
    try:
        async with RatingClient(
            f"127.0.0.1:{port}", acme.tokens[Role.RATER], timeout_seconds=10
        ) as second:
            await eventually_serving(second)

            async def one(rating: RatingClient, n: int) -> bool:
                try:
                    await rating.rate_and_debit(
                        event_id=f"two-{n}",
                        customer_id="cus-two",
                        event_type="api.call",
                        properties={},
                    )
                except InsufficientCredit:
                    return False
                return True

            results = await asyncio.gather(
                *(one(client if n % 2 else second, n) for n in range(200))
            )
        assert sum(results) == 60
        assert await account.balances() == {pool: Decimal(0)}
        await ledger_is_balanced(database_url)
    finally:
        other.terminate()
        await other.wait()


async def test_one_port_served_by_two_processes_never_overdraws(
    acme: TenantKeys, database_url: str, client: RatingClient
) -> None:
    """200 debits of a 60-credit pool over 16 connections to `rating serve --processes 2`."""
    account = await open_account(client, "cus-port")
    pool = await account.grant("60", grant_id="g-port")
    async with serve_process(
        RATING_DATABASE_URL=database_url, RATING_SERVER_PROCESSES="2"
    ) as served:
        channels = [separate_channel(served.port) for _ in range(16)]
        try:

            async def debit(n: int) -> object:
                stub = rating_pb2_grpc.RatingServiceStub(channels[n % len(channels)])
                request = rating_pb2.RateAndDebitRequest(
                    event=account.event(f"port-{n}", "api.call")
                )
                try:
                    await stub.RateAndDebit(request, metadata=acme.metadata(Role.RATER), timeout=30)
                except aio.AioRpcError as refused:
                    return status_of(refused)
                return "OK"

            answers = await asyncio.gather(*(debit(n) for n in range(200)))
        finally:
            await asyncio.gather(*(channel.close(None) for channel in channels))
        assert await served.terminate() == 0, served.lines
        await eventually(served.every_server_process_stopped)
    assert Counter(answers) == {
        "OK": 60,
        (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDIT"): 140,
    }
    assert await account.balances() == {pool: Decimal(0)}
    await ledger_is_balanced(database_url)
    # The debits were not all served by one process: both of them rated some.
    handled = handled_by(served)
    assert len(handled) == 2 and all(handled.values()), handled


async def test_an_event_sent_to_two_processes_at_once_is_debited_once(
    acme: TenantKeys, database_url: str, client: RatingClient
) -> None:
    """Each of 20 events goes at once over each of 8 connections to both processes of a port."""
    account = await open_account(client, "cus-twice")
    pool = await account.grant("100", grant_id="g-twice")
    events = [account.event(f"twice-{n}", "api.call") for n in range(20)]
    async with serve_process(
        RATING_DATABASE_URL=database_url, RATING_SERVER_PROCESSES="2"
    ) as served:
        channels = [separate_channel(served.port) for _ in range(8)]
        try:

            async def send(
                event: rating_pb2.UsageEvent, channel: aio.Channel
            ) -> rating_pb2.RateAndDebitResponse:
                stub = rating_pb2_grpc.RatingServiceStub(channel)
                return await stub.RateAndDebit(
                    rating_pb2.RateAndDebitRequest(event=event),
                    metadata=acme.metadata(Role.RATER),
                    timeout=30,
                )

            answers = await asyncio.gather(
                *(send(event, channel) for event in events for channel in channels)
            )
        finally:
            await asyncio.gather(*(channel.close(None) for channel in channels))
        assert await served.terminate() == 0, served.lines
        await eventually(served.every_server_process_stopped)
    # Every event went over every connection, so with both processes serving some of the
    # connections, every event reached both processes.
    handled = handled_by(served)
    assert len(handled) == 2 and all(handled.values()), handled
    assert sum(handled.values()) == 160
    for event in events:
        mine = [a for a in answers if a.event_id == event.event_id]
        assert len(mine) == 8
        # Rated once; every other answer is the stored one, replayed.
        assert sum(not a.replay for a in mine) == 1
        assert len({_as_first(a).SerializeToString(deterministic=True) for a in mine}) == 1
    assert await account.balances() == {pool: Decimal(80)}
    rated = await _count(database_url, "SELECT count(*) FROM rated_events")
    assert rated == 20
    await ledger_is_balanced(database_url)


async def test_a_channel_reads_its_own_changes_on_a_port_of_two_processes(
    acme: TenantKeys, database_url: str, client: RatingClient
) -> None:
    """Refused for want of credit, granted, then debited at once: each on one connection."""
    # The kernel spreads connections over the two processes by a hash: with 16, the chance that
    # one process gets them all (and the test proves nothing about the other) is 2 in 65,536.
    accounts = [await open_account(client, f"cus-own-{n}") for n in range(16)]
    async with serve_process(
        RATING_DATABASE_URL=database_url, RATING_SERVER_PROCESSES="2"
    ) as served:
        channels = [separate_channel(served.port) for _ in accounts]
        try:

            async def refused_granted_debited(account: Account, channel: aio.Channel) -> object:
                rating = rating_pb2_grpc.RatingServiceStub(channel)
                rater = acme.metadata(Role.RATER)
                with pytest.raises(aio.AioRpcError) as refused:
                    await rating.RateAndDebit(
                        rating_pb2.RateAndDebitRequest(
                            event=account.event(f"{account.customer_id}-before", "api.call")
                        ),
                        metadata=rater,
                        timeout=30,
                    )
                # The process serving this connection has the pool-less contract in memory now.
                assert status_of(refused.value)[1] == "INSUFFICIENT_CREDIT"
                await contract_pb2_grpc.ContractServiceStub(channel).AddCommitment(
                    contract_pb2.AddCommitmentRequest(
                        grant_id=f"g-{account.customer_id}",
                        contract_id=account.contract_id,
                        kind="credit",
                        amount="5",
                    ),
                    metadata=acme.metadata(Role.ADMIN),
                    timeout=30,
                )
                answer = await rating.RateAndDebit(
                    rating_pb2.RateAndDebitRequest(
                        event=account.event(f"{account.customer_id}-after", "api.call")
                    ),
                    metadata=rater,
                    timeout=30,
                )
                return [d.amount for d in answer.draws]

            draws = await asyncio.gather(
                *(refused_granted_debited(a, c) for a, c in zip(accounts, channels, strict=True))
            )
        finally:
            await asyncio.gather(*(channel.close(None) for channel in channels))
        assert await served.terminate() == 0, served.lines
        await eventually(served.every_server_process_stopped)
    assert draws == [["1"]] * len(accounts)
    handled = handled_by(served)
    assert len(handled) == 2 and all(handled.values()), handled


def handled_by(served: ServeProcess) -> dict[int, int]:
    """RPCs each server process handled, from its `stopped` log line."""
    return {pid: served.logged_by(pid, "stopped")[0]["rpcs_handled"] for pid in served.server_pids}


def _as_first(answer: rating_pb2.RateAndDebitResponse) -> rating_pb2.RateAndDebitResponse:
    first = rating_pb2.RateAndDebitResponse()
    first.CopyFrom(answer)
    first.replay = False
    return first


async def _count(database_url: str, query: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def eventually_serving(rating: RatingClient) -> None:
    """Wait for a freshly started server to answer."""

    async def answers() -> bool:
        try:
            await rating.call(rating.admin.WhoAmI, _who())
        except RatingError:
            return False
        return True

    # A fresh interpreter imports the whole server first: seconds, or tens on a loaded machine.
    await eventually(answers, timeout_seconds=60)


def _who() -> object:
    from rating_client.gen.rating.v1 import admin_pb2

    return admin_pb2.WhoAmIRequest()


async def _spent(database_url: str, pool: str) -> Decimal:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        value = await conn.fetchval(
            "SELECT debits_posted FROM accounts WHERE account_id = $1", f"pool:{pool}"
        )
    finally:
        await conn.close()
    return Decimal(value)


async def test_an_alert_fires_once_per_crossing_into_the_outbox(
    client: RatingClient, database_url: str
) -> None:
    import asyncpg

    low: dict[str, object] = {"threshold_id": "low", "kind": "balance_below", "amount": "2"}
    account = await open_account(client, "cus-alert", alert_thresholds=[low])
    await account.grant("4", grant_id="g-alert")
    answers = [await account.call(f"al{n}") for n in range(3)]
    # 4 → 3 → 2 → 1: the balance goes below 2 on the third call only, and fires once.
    assert [len(a.alerts) for a in answers] == [0, 0, 1]
    fired = answers[2].alerts[0]
    assert (fired.kind, fired.subject) == ("balance_below", account.contract_id)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT topic, payload FROM outbox WHERE topic = 'alert' ORDER BY outbox_id"
        )
    finally:
        await conn.close()
    assert len(rows) == 1  # once, though the balance stayed below 2 after


async def test_reconcile_finds_no_drift_then_reports_tampering(
    client: RatingClient, database_url: str
) -> None:
    import asyncpg
    from click.testing import CliRunner

    from rating_service.cli import main

    account = await open_account(client, "cus-audit")
    pool = await account.grant("10", grant_id="g-audit")
    await account.call("audit-1")

    def reconcile() -> tuple[int, str]:
        result = CliRunner().invoke(
            main, ["ops", "reconcile"], env={"RATING_DATABASE_URL": database_url}
        )
        return result.exit_code, result.output

    code, output = await asyncio.to_thread(reconcile)
    assert (code, output.strip().endswith("no drift")) == (0, True)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE account_id = $1",
            f"pool:{pool}",
        )
    finally:
        await conn.close()
    code, output = await asyncio.to_thread(reconcile)
    assert code == 1
    assert "DRIFT" in output and f"pool:{pool} credits_posted" in output


async def test_quote_and_rating_apply_the_contracts_overrides(client: RatingClient) -> None:
    from rating_client.gen.rating.v1 import catalog_pb2

    half_off_api: dict[str, object] = {
        "tag": "api",
        "effective_from": "2020-01-01T00:00:00Z",
        "multiplier": "0.5",
    }
    account = await open_account(client, "cus-deal", overrides=[half_off_api])
    await account.grant("10", grant_id="g-deal")
    lines = [catalog_pb2.UsageLine(product_key="calls", quantity="4")]
    listed = await client.call(
        client.catalog.Quote, catalog_pb2.QuoteRequest(rate_card_key="list", lines=lines)
    )
    on_contract = await client.call(
        client.catalog.Quote, catalog_pb2.QuoteRequest(customer_id="cus-deal", lines=lines)
    )
    # 4 calls × 1 = 4 at list price; × 0.5 on the contract = 2.
    assert (Decimal(listed.total), Decimal(on_contract.total)) == (Decimal(4), Decimal(2))
    debited = await account.call("deal-1")
    assert Decimal(debited.charge) == Decimal("0.5")


async def test_usage_and_its_forecast_answer_for_a_quadrillion_tokens(client: RatingClient) -> None:
    account = await open_account(client, "cus-huge", overage_policy="arrears")
    await client.rate_and_debit(
        event_id="huge",
        customer_id="cus-huge",
        event_type="llm.completion",
        properties={"tokens": "1e15", "model": "large"},
    )
    usage = await client.call(
        client.rating.GetUsage, rating_pb2.GetUsageRequest(customer_id=account.customer_id)
    )
    [row] = usage.rows
    # 10^15 tokens × 0.01 = 10^13, exactly; the forecast is at least what is used so far.
    assert (Decimal(row.quantity), Decimal(row.amount)) == (Decimal("1e15"), Decimal("1e13"))
    assert Decimal(usage.forecast_total) >= Decimal(usage.total) == Decimal("1e13")
