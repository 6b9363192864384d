"""ReconcileLedger: the caller's tenant's accounts rebuilt from their transfers, drift named."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
from grpc import aio

from rating_client import RatingClient
from rating_client.gen.rating.v1 import ops_pb2, ops_pb2_grpc
from rating_service.core.auth import Role
from rating_service.core.ledger.accounts import pool_account_id
from rating_service.runtime.server import RunningServer
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys, refusal
from tests.integration.billing import open_account


async def test_a_clean_ledger_then_a_drifted_account_is_named(
    server: RunningServer,
    client: RatingClient,
    neighbour: RatingClient,
    acme: TenantKeys,
    database_url: str,
    channel: aio.Channel,
) -> None:
    account = await open_account(client, "cus-books")
    pool = await account.grant("10", grant_id="g-books")
    await account.call("books-1")
    other = await open_account(neighbour, "cus-books")
    await other.grant("10", grant_id="g-other")
    stub = ops_pb2_grpc.OpsServiceStub(channel)
    ops = acme.metadata(Role.OPS)

    clean = await stub.ReconcileLedger(ops_pb2.ReconcileLedgerRequest(), metadata=ops)
    assert clean.clean and clean.accounts_checked > 0 and not clean.drifts

    # An account changed behind the journal's back: its total no longer adds up.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "UPDATE accounts SET credits_posted = credits_posted + 1 WHERE account_id = $1",
            pool_account_id(pool),
        )
    finally:
        await conn.close()
    drifted = await stub.ReconcileLedger(ops_pb2.ReconcileLedgerRequest(), metadata=ops)
    assert not drifted.clean
    assert [(d.account_id, d.total) for d in drifted.drifts] == [
        (pool_account_id(pool), "credits_posted")
    ]
    assert Decimal(drifted.drifts[0].recorded) - Decimal(drifted.drifts[0].recomputed) == 1

    # Only ops keys reconcile; another tenant's ledger is not this tenant's answer.
    code, reason, _ = await refusal(
        stub.ReconcileLedger(ops_pb2.ReconcileLedgerRequest(), metadata=acme.metadata(Role.ADMIN))
    )
    assert (code, reason) == ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
