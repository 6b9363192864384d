"""Settling credit in PostgreSQL: expiring pools to breakage, ending terms, and their notices.

Expiring a pool moves all of its remaining balance to the contract's breakage account in one
transfer under the reference `expiry:<pool id>`, taken under the pool account's lock: whoever
expires a pool first (its expiry workflow, or the term-end settlement) moves the money, and
every later attempt finds that transfer and moves nothing. Every write is audited, announced on
`rating_contracts`, and written to the outbox in the same transaction. Raw asyncpg, like the
ledger functions it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import asyncpg

from rating_service.core.contracts.contract import ContractStatus
from rating_service.core.contracts.expiry import PoolExpiry
from rating_service.core.errors import NotFound
from rating_service.core.ledger.accounts import Account, breakage_account_id, pool_account_id
from rating_service.core.ledger.posting_rules import expiry_transfers
from rating_service.core.money import exact_sum, format_decimal
from rating_service.outbox.topics import CreditExpired, OutboxPayload, TermEnded, Topic
from rating_service.store.database import Connection
from rating_service.store.effects import (
    AuditEntry,
    notify_contracts_changed,
    write_audit,
    write_outbox,
)
from rating_service.store.ledger import lock_accounts, post_transfers, transfers_by_reference

ZERO = Decimal(0)

EXPIRE_CREDIT = "credit.expire"
"""Audit action of a pool's balance moved to breakage."""


def expiry_reference(pool_id: str) -> str:
    """The reference of a pool's expiry transfer: at most one per pool, whoever makes it."""
    return f"expiry:{pool_id}"


class SettlementStore:
    """Expires pools, ends terms and writes their notices, over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def invoice_finalized(self, tenant_id: str, invoice_id: str) -> bool:
        """True once the invoice has a number (finalizing also marks its period invoiced)."""
        number = await self._pool.fetchval(
            "SELECT number FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
            tenant_id,
            invoice_id,
        )
        return number is not None

    async def breakage(self, tenant_id: str, contract_id: str) -> Decimal:
        """What the contract's pools have lost to expiry so far."""
        balance = await self._pool.fetchval(
            "SELECT credits_posted - debits_posted FROM accounts"
            " WHERE tenant_id = $1 AND account_id = $2",
            tenant_id,
            breakage_account_id(contract_id),
        )
        return ZERO if balance is None else Decimal(balance)

    async def notice(self, tenant_id: str, topic: Topic, key: str, payload: OutboxPayload) -> None:
        """Write a notification to the outbox, once per topic and key."""
        async with self._pool.acquire() as conn:
            await write_outbox(conn, tenant_id, topic, topic.dedupe_key(tenant_id, key), payload)

    async def expire_pool(
        self,
        tenant_id: str,
        contract_id: str,
        pool_id: str,
        actor: str,
        expiry: Callable[[Account], PoolExpiry],
    ) -> PoolExpiry:
        """Move to breakage what `expiry` decides from the pool's locked account, once.

        The lock on the pool's account orders this after any debit in flight and before any
        that follows; the expiry's reference is checked under it, so the move happens once.
        """
        reference = expiry_reference(pool_id)
        account_id = pool_account_id(pool_id)
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await lock_accounts(
                conn, tenant_id, [account_id, breakage_account_id(contract_id)]
            )
            earlier = await transfers_by_reference(conn, tenant_id, reference)
            if earlier:
                return PoolExpiry(exact_sum(t.amount for t in earlier), replay=True)
            account = locked.get(account_id)
            if account is None:  # a postpaid commit: a minimum spend, no balance
                return PoolExpiry(ZERO)
            expired = expiry(account)
            amount = expired.amount
            if not amount:
                return expired
            transfers = expiry_transfers(
                reference=reference, contract_id=contract_id, pool_id=pool_id, amount=amount
            )
            await post_transfers(conn, tenant_id, transfers, locked)
            details = CreditExpired(
                contract_id=contract_id, pool_id=pool_id, amount=format_decimal(amount)
            )
            customer_id = await _customer_of(conn, tenant_id, contract_id)
            await write_audit(conn, tenant_id, AuditEntry(actor, EXPIRE_CREDIT, pool_id, details))
            expired_key = Topic.CREDIT_EXPIRED.dedupe_key(tenant_id, pool_id)
            await write_outbox(conn, tenant_id, Topic.CREDIT_EXPIRED, expired_key, details)
            await notify_contracts_changed(conn, tenant_id, customer_id)
        return expired

    async def end_term(
        self,
        tenant_id: str,
        contract_id: str,
        topic: Topic,
        payload: TermEnded,
        actor: str,
    ) -> bool:
        """Mark the contract `ended` and announce it on `topic`; False if it had ended already."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT customer_id, status FROM contracts WHERE tenant_id = $1"
                " AND contract_id = $2 FOR UPDATE",
                tenant_id,
                contract_id,
            )
            if row is None:
                raise NotFound(
                    f"no contract {contract_id!r}",
                    reason="CONTRACT_NOT_FOUND",
                    metadata={"contract_id": contract_id},
                )
            if row["status"] == ContractStatus.ENDED.value:
                return False
            await conn.execute(
                "UPDATE contracts SET status = $3, updated_at = now()"
                " WHERE tenant_id = $1 AND contract_id = $2",
                tenant_id,
                contract_id,
                ContractStatus.ENDED.value,
            )
            await write_audit(conn, tenant_id, AuditEntry(actor, topic, contract_id, payload))
            ended_key = topic.dedupe_key(tenant_id, contract_id)
            await write_outbox(conn, tenant_id, topic, ended_key, payload)
            await notify_contracts_changed(conn, tenant_id, str(row["customer_id"]))
        return True


async def _customer_of(conn: Connection, tenant_id: str, contract_id: str) -> str:
    customer_id = await conn.fetchval(
        "SELECT customer_id FROM contracts WHERE tenant_id = $1 AND contract_id = $2",
        tenant_id,
        contract_id,
    )
    return str(customer_id)
