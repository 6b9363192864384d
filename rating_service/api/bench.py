"""BenchService: the benchmark's baselines on the real server stack (served only when enabled).

`Noop` measures what the server stack and the load generator cost around no work at all.
`NaiveDebit` is the design the real debit path has to beat: one transaction per call, a
conditional UPDATE of the pool row and an INSERT of the transfer, so concurrent debits of one
pool queue on its row lock and commit one at a time.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg
from grpc import aio

from rating_client.gen.rating.v1 import bench_pb2, bench_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.core.auth import Role
from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from rating_service.core.money import format_decimal, parse_decimal

DEBIT_POOL = """
UPDATE accounts SET debits_posted = debits_posted + $1
WHERE account_id = $2 AND tenant_id = $3
  AND credits_posted - debits_posted - debits_pending >= $1
RETURNING credits_posted - debits_posted - debits_pending
"""

INSERT_TRANSFER = """
INSERT INTO transfers (transfer_id, tenant_id, debit_account_id, credit_account_id, amount, code,
                       reference)
VALUES ($1, $2, $3, $4, $5, 'usage', $6)
"""

ACCOUNTS_OF_POOL = """
SELECT pools.account_id AS pool_account, revenue.account_id AS revenue_account
FROM pools
LEFT JOIN accounts AS revenue
       ON revenue.tenant_id = pools.tenant_id AND revenue.contract_id = pools.contract_id
      AND revenue.kind = 'revenue'
WHERE pools.pool_id = $1 AND pools.tenant_id = $2 AND pools.account_id IS NOT NULL
ORDER BY revenue.account_id
LIMIT 1
"""


class BenchServicer(bench_pb2_grpc.BenchServiceServicer):
    """The no-op and naive-debit baselines, over a raw asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # (tenant, pool) → (the pool's account, the revenue account its debits credit). Looked
        # up on a pool's first debit and kept, so each call's database work is exactly
        # UPDATE + INSERT + COMMIT.
        self._accounts: dict[tuple[str, str], tuple[str, str]] = {}

    @allow(Role.RATER, Role.ADMIN)
    async def Noop(
        self, request: bench_pb2.NoopRequest, context: aio.ServicerContext
    ) -> bench_pb2.NoopResponse:
        """Answer at once."""
        return bench_pb2.NoopResponse()

    @allow(Role.RATER, Role.ADMIN)
    async def NaiveDebit(
        self, request: bench_pb2.NaiveDebitRequest, context: aio.ServicerContext
    ) -> bench_pb2.NaiveDebitResponse:
        """Debit a pool in a transaction of its own; refuse when its credit does not cover it."""
        tenant_id = current_caller().tenant_id
        amount = _positive_amount(request.amount)
        if not request.pool_id:
            raise InvalidArgument.of_field("pool_id", "is required")
        if not request.event_id:
            raise InvalidArgument.of_field("event_id", "is required")
        pool_account, revenue_account = await self._accounts_of(tenant_id, request.pool_id)
        async with self._pool.acquire() as conn, conn.transaction():
            remaining = await conn.fetchval(DEBIT_POOL, amount, pool_account, tenant_id)
            if remaining is None:
                raise FailedPrecondition(
                    f"pool {request.pool_id} has less than {request.amount} available",
                    reason="INSUFFICIENT_CREDIT",
                )
            try:
                await conn.execute(
                    INSERT_TRANSFER,
                    f"naive:{request.event_id}",
                    tenant_id,
                    pool_account,
                    revenue_account,
                    amount,
                    request.event_id,
                )
            except asyncpg.UniqueViolationError:
                # No idempotency in the naive design: a reused event id is refused, and the
                # transaction rolls the pool's UPDATE back with it.
                raise AlreadyExists(
                    f"event {request.event_id} was already debited", reason="DUPLICATE_EVENT"
                ) from None
        return bench_pb2.NaiveDebitResponse(remaining=format_decimal(remaining))

    async def _accounts_of(self, tenant_id: str, pool_id: str) -> tuple[str, str]:
        key = (tenant_id, pool_id)
        accounts = self._accounts.get(key)
        if accounts is None:
            row = await self._pool.fetchrow(ACCOUNTS_OF_POOL, pool_id, tenant_id)
            if row is None:
                raise NotFound(f"no pool {pool_id} with a balance", reason="POOL_NOT_FOUND")
            if row["revenue_account"] is None:
                raise FailedPrecondition(
                    f"the contract of pool {pool_id} has no revenue account yet",
                    reason="NO_REVENUE_ACCOUNT",
                )
            accounts = (row["pool_account"], row["revenue_account"])
            self._accounts[key] = accounts
        return accounts


def _positive_amount(text: str) -> Decimal:
    amount = parse_decimal(text, "amount")
    if amount <= 0:
        raise InvalidArgument.of_field("amount", "must be greater than zero")
    return amount
