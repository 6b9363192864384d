"""Customers, contracts and commitments in PostgreSQL, each write audited and announced.

Every write happens in one transaction with its audit row and a NOTIFY on `rating_contracts`
(payload `<tenant_id>:<customer_id>`), delivered at commit, so the rating engine's caches drop
a customer's contracts and pools exactly when a change becomes visible. Money moves only
through `rating_service.store.ledger.post_transfers`. Raw asyncpg: the ledger functions need it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from rating_service.core.billing.dunning import StandingChange
from rating_service.core.contracts.contract import (
    Contract,
    ContractStatus,
    Customer,
    amendment_to_dict,
    contract_from_dict,
    contract_to_dict,
)
from rating_service.core.contracts.pools import CommitmentKind, Pool, pool_from_dict, pool_to_dict
from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)
from rating_service.core.ledger.accounts import AccountKind, contract_accounts, pool_account_id
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.money import format_decimal
from rating_service.outbox.topics import CommitmentAdded, ContractCreated, StatusChange, Topic
from rating_service.store.database import Connection
from rating_service.store.effects import (
    AuditEntry,
    notify_contracts_changed,
    write_audit,
    write_outbox,
)
from rating_service.store.ledger import (
    lock_accounts,
    open_accounts,
    post_transfers,
    transfers_by_reference,
)

CONTRACT_OVERLAP = "CONTRACT_OVERLAP"
"""FailedPrecondition reason: the term overlaps another contract of the same customer."""

ADD_COMMITMENT = "commitment.add"
"""Audit action of AddCommitment."""

TOP_UP = "commitment.top_up"
"""Audit action of TopUp."""

AMEND = "contract.amend"
"""Audit action of AmendContract and SetSeats."""

PAYMENT_METHOD = "contract.payment_method"
"""Audit action of a new saved payment method."""


ContractPosition = tuple[str, datetime, str]
"""Where a contract sits in a listing: (customer id, term start, contract id)."""


@dataclass(frozen=True, slots=True)
class Commitment:
    """A commitment's pool and what created it (the reference its ledger transfers carry)."""

    pool: Pool
    reference: str


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """The commitment an idempotency key created, as created, and its request's fingerprint."""

    commitment: Commitment
    fingerprint: str


class _GrantTaken(Exception):
    """Another transaction committed a pool under the same idempotency key first."""


class ContractStore:
    """Reads and writes customers, contracts and commitments over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_customer(self, customer: Customer, actor: str) -> None:
        """Store a new customer; ALREADY_EXISTS (CUSTOMER_EXISTS) if its id is taken."""
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO customers (tenant_id, customer_id, name) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING RETURNING customer_id",
                customer.tenant_id,
                customer.customer_id,
                customer.name,
            )
            if inserted is None:
                raise AlreadyExists(
                    f"customer {customer.customer_id!r} exists",
                    reason="CUSTOMER_EXISTS",
                    metadata={"customer_id": customer.customer_id},
                )
            entry = AuditEntry(
                actor, "customer.create", customer.customer_id, {"name": customer.name}
            )
            await write_audit(conn, customer.tenant_id, entry)
            await notify_contracts_changed(conn, customer.tenant_id, customer.customer_id)

    async def customer(self, tenant_id: str, customer_id: str) -> Customer:
        """One customer of the tenant."""
        row = await self._pool.fetchrow(
            "SELECT tenant_id, customer_id, name FROM customers"
            " WHERE tenant_id = $1 AND customer_id = $2",
            tenant_id,
            customer_id,
        )
        if row is None:
            raise _customer_not_found(customer_id)
        return _customer(row)

    async def customers(
        self, tenant_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Customer]:
        """The tenant's customers, ordered by id, from past `after` (at most `limit`)."""
        rows = await self._pool.fetch(
            "SELECT tenant_id, customer_id, name FROM customers WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR customer_id > $2) ORDER BY customer_id LIMIT $3",
            tenant_id,
            after,
            limit,
        )
        return [_customer(row) for row in rows]

    async def create_contract(self, contract: Contract, actor: str) -> None:
        """Store a contract and open its ledger accounts, unless its term overlaps another's.

        The customer's row is locked first, so two contracts created at once for the same
        customer are checked for overlap one after the other, never both against the past.
        """
        tenant_id, customer_id = contract.tenant_id, contract.customer_id
        async with self._pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2"
                " FOR UPDATE",
                tenant_id,
                customer_id,
            )
            if found is None:
                raise _customer_not_found(customer_id)
            # tstzrange(start, NULL) is open-ended, as an evergreen contract is.
            other = await conn.fetchrow(
                "SELECT contract_id, term_start, term_end FROM contracts"
                " WHERE tenant_id = $1 AND customer_id = $2"
                " AND tstzrange(term_start, term_end) && tstzrange($3, $4)"
                " ORDER BY term_start LIMIT 1",
                tenant_id,
                customer_id,
                contract.term_start,
                contract.term_end,
            )
            if other is not None:
                raise _overlap(contract, other)
            definition = contract_to_dict(contract)
            await conn.execute(
                "INSERT INTO contracts (contract_id, tenant_id, customer_id, term_start, term_end,"
                " status, definition) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                contract.contract_id,
                tenant_id,
                customer_id,
                contract.term_start,
                contract.term_end,
                contract.status.value,
                json.dumps(definition),
            )
            # Revenue accounts (one per product) are opened by the rating engine on first use:
            # products added to the catalog later need that path anyway.
            await open_accounts(
                conn,
                tenant_id,
                contract.contract_id,
                contract_accounts(contract.contract_id),
                contract.invoice_currency.code,
            )
            entry = AuditEntry(actor, "contract.create", contract.contract_id, definition)
            await write_audit(conn, tenant_id, entry)
            # The outbox dispatcher starts the contract's billing cycle from this row. Its key
            # has never named the tenant (contract ids are unique): rows written before agree.
            await write_outbox(
                conn,
                tenant_id,
                Topic.CONTRACT_CREATED,
                f"{Topic.CONTRACT_CREATED.value}:{contract.contract_id}",
                ContractCreated(
                    tenant_id=tenant_id,
                    contract_id=contract.contract_id,
                    # Only a contract with a term end has a renewal to run.
                    term_end=None if contract.term_end is None else contract.term_end.isoformat(),
                ),
            )
            await notify_contracts_changed(conn, tenant_id, customer_id)

    async def end_contract(
        self,
        tenant_id: str,
        contract_id: str,
        at: datetime,
        actor: str,
        cancellation: Callable[[Contract, datetime], Contract | None],
    ) -> Contract:
        """End a contract's term at `at` (a cancellation), as `cancellation` decides; audited.

        `cancellation` is given the contract as it is now, its row locked, and returns it with
        its new term end, or None to keep it as it is.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            contract = await lock_contract(conn, tenant_id, contract_id)
            ended = cancellation(contract, at)
            if ended is None:
                return contract
            entry = AuditEntry(actor, "contract.end", contract_id, {"term_end": at.isoformat()})
            await amend_contract(conn, ended, entry)
            return ended

    async def amend_contract(
        self,
        tenant_id: str,
        contract_id: str,
        amendment_id: str,
        amend: Callable[[Contract], Contract],
        actor: str,
    ) -> tuple[Contract, bool]:
        """Add an amendment as `amend` decides, the contract's row locked; audited.

        Returns the contract and False; or, when the contract already holds an amendment
        `amendment_id` (a retry), the contract unchanged and True: the caller compares it.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            contract = await lock_contract(conn, tenant_id, contract_id)
            if any(a.amendment_id == amendment_id for a in contract.amendments):
                return contract, True
            changed = amend(contract)
            (added,) = (a for a in changed.amendments if a.amendment_id == amendment_id)
            details = amendment_to_dict(added)
            await amend_contract(conn, changed, AuditEntry(actor, AMEND, contract_id, details))
            return changed, False

    async def change_payment_method(
        self, tenant_id: str, contract_id: str, payment_method: str, actor: str
    ) -> Contract:
        """Save the token invoices are charged to from now on (dunning retries with it)."""
        async with self._pool.acquire() as conn, conn.transaction():
            contract = await lock_contract(conn, tenant_id, contract_id)
            changed = replace(contract, payment_method=payment_method)
            details = {"from": contract.payment_method, "to": payment_method}
            await amend_contract(
                conn, changed, AuditEntry(actor, PAYMENT_METHOD, contract_id, details)
            )
            return changed

    async def contract(self, tenant_id: str, contract_id: str) -> Contract:
        """One contract of the tenant, with its status as it is now."""
        row = await self._pool.fetchrow(
            "SELECT status, definition FROM contracts WHERE tenant_id = $1 AND contract_id = $2",
            tenant_id,
            contract_id,
        )
        if row is None:
            raise _contract_not_found(contract_id)
        return _contract(row)

    async def contracts(
        self,
        tenant_id: str,
        customer_id: str | None,
        *,
        after: ContractPosition | None = None,
        limit: int | None = None,
    ) -> list[Contract]:
        """The tenant's contracts (of one customer, if given), by customer, term start and id.

        From past `after`, at most `limit`.
        """
        rows = await self._pool.fetch(
            "SELECT status, definition FROM contracts"
            " WHERE tenant_id = $1 AND ($2::text IS NULL OR customer_id = $2)"
            " AND ($3::text IS NULL OR (customer_id, term_start, contract_id) > ($3, $4, $5))"
            " ORDER BY customer_id, term_start, contract_id LIMIT $6",
            tenant_id,
            customer_id,
            *(after or (None, None, None)),
            limit,
        )
        return [_contract(row) for row in rows]

    async def commitments(self, tenant_id: str, contract_id: str) -> list[Commitment]:
        """A contract's commitments in creation order, balances as the ledger holds them now."""
        rows = await self._pool.fetch(
            f"{_LIVE_COMMITMENTS} WHERE p.tenant_id = $1 AND p.contract_id = $2"
            " ORDER BY p.created_seq",
            tenant_id,
            contract_id,
        )
        return [_live_commitment(row) for row in rows]

    async def commitment(self, tenant_id: str, contract_id: str, pool_id: str) -> Commitment:
        """One commitment of a contract, its balance as the ledger holds it now."""
        row = await self._pool.fetchrow(
            f"{_LIVE_COMMITMENTS} WHERE p.tenant_id = $1 AND p.contract_id = $2 AND p.pool_id = $3",
            tenant_id,
            contract_id,
            pool_id,
        )
        if row is None:
            raise NotFound(
                f"contract {contract_id!r} has no pool {pool_id!r}",
                reason="POOL_NOT_FOUND",
                metadata={"contract_id": contract_id, "pool_id": pool_id},
            )
        return _live_commitment(row)

    async def grant(self, tenant_id: str, reference: str) -> StoredGrant | None:
        """The commitment a grant or top-up reference created, as created, if there is one."""
        async with self._pool.acquire() as conn:
            return await _stored_grant(conn, tenant_id, reference)

    async def add_commitment(
        self,
        tenant_id: str,
        customer_id: str,
        currency: str,
        commitment: Commitment,
        transfers: Sequence[Transfer],
        audit: AuditEntry,
    ) -> StoredGrant:
        """Create a commitment's pool, its account and funding transfers, all or nothing.

        `audit.details["fingerprint"]` identifies the request. When another transaction
        created a pool under the same reference first, nothing is written and that pool is
        returned instead (the caller compares fingerprints).
        """
        pool = commitment.pool
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # The definition carries created_seq, so it is drawn from the column's own
                # sequence before the row is written.
                sequence = await conn.fetchval(
                    "SELECT nextval(pg_get_serial_sequence('pools', 'created_seq'))"
                )
                created = replace(pool, created_seq=int(sequence))
                account_id = None
                if created.kind is not CommitmentKind.POSTPAID_COMMIT:
                    account_id = pool_account_id(created.pool_id)
                    await open_accounts(
                        conn,
                        tenant_id,
                        created.contract_id,
                        [(account_id, AccountKind.POOL, None)],
                        currency,
                    )
                inserted = await conn.fetchval(
                    "INSERT INTO pools (pool_id, account_id, tenant_id, contract_id, grant_id,"
                    " kind, priority, cost_basis, scope, starts_at, expires_at, created_seq,"
                    " original_amount, definition, request_hash) OVERRIDING SYSTEM VALUE VALUES"
                    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15)"
                    " ON CONFLICT (tenant_id, grant_id) DO NOTHING RETURNING pool_id",
                    created.pool_id,
                    account_id,
                    tenant_id,
                    created.contract_id,
                    commitment.reference,
                    created.kind.value,
                    created.priority,
                    created.cost_basis,
                    None if created.scope is None else sorted(created.scope),
                    created.starts_at,
                    created.expires_at,
                    created.created_seq,
                    created.original_amount,
                    json.dumps(pool_to_dict(created)),
                    _fingerprint_of(audit).encode(),
                )
                if inserted is None:
                    # Leaving the block rolls back the account opened above.
                    raise _GrantTaken
                await post_transfers(conn, tenant_id, transfers)
                await write_audit(conn, tenant_id, replace(audit, subject=created.pool_id))
                # The outbox dispatcher starts the pool's expiry from this row.
                expires_at = created.expires_at
                await write_outbox(
                    conn,
                    tenant_id,
                    Topic.COMMITMENT_ADDED,
                    Topic.COMMITMENT_ADDED.dedupe_key(tenant_id, created.pool_id),
                    CommitmentAdded(
                        contract_id=created.contract_id,
                        pool_id=created.pool_id,
                        kind=str(created.kind),
                        expires_at=None if expires_at is None else expires_at.isoformat(),
                    ),
                )
                await notify_contracts_changed(conn, tenant_id, customer_id)
        except _GrantTaken:
            async with self._pool.acquire() as conn:
                stored = await _stored_grant(conn, tenant_id, commitment.reference)
            assert stored is not None, "a conflicting pool is committed before DO NOTHING"
            return stored
        return StoredGrant(Commitment(created, commitment.reference), _fingerprint_of(audit))

    async def transfers(self, tenant_id: str, reference: str) -> list[Transfer]:
        """The ledger transfers an operation made (none if it never happened)."""
        async with self._pool.acquire() as conn:
            return await transfers_by_reference(conn, tenant_id, reference)

    async def post_adjustment(
        self,
        tenant_id: str,
        customer_id: str,
        transfers: Sequence[Transfer],
        audit: AuditEntry,
    ) -> list[Transfer]:
        """Post an adjustment's transfers; returns what its reference already held instead.

        An empty list means the transfers were posted now. Retries of one adjustment lock the
        same accounts, so the later one finds the earlier one's transfers under the lock; a
        retry naming other accounts collides on the transfer id and is answered the same way.
        """
        reference = transfers[0].reference
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                locked = await lock_accounts(conn, tenant_id, _names(transfers))
                earlier = await transfers_by_reference(conn, tenant_id, reference)
                if earlier:
                    return earlier
                await post_transfers(conn, tenant_id, transfers, locked)
                await write_audit(conn, tenant_id, audit)
                await notify_contracts_changed(conn, tenant_id, customer_id)
        except asyncpg.UniqueViolationError:
            return await self.transfers(tenant_id, reference)
        return []


async def lock_contract(conn: Connection, tenant_id: str, contract_id: str) -> Contract:
    """A contract as it is now, its row locked until the caller's transaction ends."""
    row = await conn.fetchrow(
        "SELECT status, definition FROM contracts WHERE tenant_id = $1 AND contract_id = $2"
        " FOR UPDATE",
        tenant_id,
        contract_id,
    )
    if row is None:
        raise _contract_not_found(contract_id)
    return _contract(row)


async def amend_contract(conn: Connection, amended: Contract, entry: AuditEntry) -> None:
    """Store a locked contract's changed terms: audited, and announced to rating's caches."""
    await conn.execute(
        "UPDATE contracts SET term_end = $3, definition = $4::jsonb, updated_at = now()"
        " WHERE tenant_id = $1 AND contract_id = $2",
        amended.tenant_id,
        amended.contract_id,
        amended.term_end,
        json.dumps(contract_to_dict(amended)),
    )
    await write_audit(conn, amended.tenant_id, entry)
    await notify_contracts_changed(conn, amended.tenant_id, amended.customer_id)


async def lock_contract_status(
    conn: Connection, tenant_id: str, contract_id: str
) -> ContractStatus:
    """A contract's status, its row locked until the caller's transaction ends."""
    status = await conn.fetchval(
        "SELECT status FROM contracts WHERE tenant_id = $1 AND contract_id = $2 FOR UPDATE",
        tenant_id,
        contract_id,
    )
    if status is None:
        raise _contract_not_found(contract_id)
    return ContractStatus(str(status))


async def change_contract_status(conn: Connection, change: StandingChange, *, actor: str) -> bool:
    """Move a contract from `change.was` to `change.becomes` in the caller's transaction.

    False, and nothing written, when its status was not `change.was`. Audited, written to the
    outbox (`contract.suspended` / `contract.reinstated`), and announced on `rating_contracts`,
    so rating refuses (or accepts) the contract's usage from the moment the transaction commits.
    """
    customer_id = await conn.fetchval(
        "UPDATE contracts SET status = $4, updated_at = now()"
        " WHERE tenant_id = $1 AND contract_id = $2 AND status = $3 RETURNING customer_id",
        change.tenant_id,
        change.contract_id,
        change.was.value,
        change.becomes.value,
    )
    if customer_id is None:
        return False
    announced = StatusChange.announcing(change)
    entry = AuditEntry(actor, announced.topic, change.contract_id, announced.payload())
    await write_audit(conn, change.tenant_id, entry)
    await write_outbox(
        conn, change.tenant_id, announced.topic, announced.dedupe_key, announced.payload()
    )
    await notify_contracts_changed(conn, change.tenant_id, str(customer_id))
    return True


_LIVE_COMMITMENTS = (
    "SELECT p.grant_id, p.created_seq, p.definition,"
    " a.credits_posted - a.debits_posted AS balance, a.debits_pending AS pending"
    " FROM pools p LEFT JOIN accounts a"
    " ON a.tenant_id = p.tenant_id AND a.account_id = p.account_id"
)


async def _stored_grant(conn: Connection, tenant_id: str, reference: str) -> StoredGrant | None:
    row = await conn.fetchrow(
        "SELECT grant_id, definition, request_hash FROM pools"
        " WHERE tenant_id = $1 AND grant_id = $2",
        tenant_id,
        reference,
    )
    if row is None:
        return None
    pool = pool_from_dict(_json(row["definition"]))
    return StoredGrant(Commitment(pool, str(row["grant_id"])), bytes(row["request_hash"]).decode())


def _live_commitment(row: asyncpg.Record) -> Commitment:
    definition = _json(row["definition"])
    definition["created_seq"] = row["created_seq"]
    # A postpaid commit has no account (LEFT JOIN gives NULL): it keeps its zero balance.
    if row["balance"] is not None:
        definition["balance"] = _decimal_text(row["balance"])
        definition["pending"] = _decimal_text(row["pending"])
    return Commitment(pool_from_dict(definition), str(row["grant_id"]))


def _contract(row: asyncpg.Record) -> Contract:
    # The status column is authoritative: suspension and ending change it, not the definition.
    contract = contract_from_dict(_json(row["definition"]))
    return replace(contract, status=ContractStatus(str(row["status"])))


def _customer(row: asyncpg.Record) -> Customer:
    return Customer(str(row["customer_id"]), str(row["tenant_id"]), str(row["name"]))


def _contract_not_found(contract_id: str) -> NotFound:
    return NotFound(
        f"no contract {contract_id!r}",
        reason="CONTRACT_NOT_FOUND",
        metadata={"contract_id": contract_id},
    )


def _customer_not_found(customer_id: str) -> NotFound:
    return NotFound(
        f"no customer {customer_id!r}",
        reason="CUSTOMER_NOT_FOUND",
        metadata={"customer_id": customer_id},
    )


def _overlap(contract: Contract, other: asyncpg.Record) -> FailedPrecondition:
    end = other["term_end"]
    term = f"{other['term_start'].isoformat()} – {'open' if end is None else end.isoformat()}"
    description = (
        f"customer {contract.customer_id!r} already has contract {other['contract_id']!r}"
        f" for {term}; a customer has at most one contract in force at any time"
    )
    return FailedPrecondition(
        description,
        reason=CONTRACT_OVERLAP,
        violations=[
            PreconditionViolation("CONTRACT_TERM", f"contracts/{other['contract_id']}", description)
        ],
        metadata={"contract_id": str(other["contract_id"])},
    )


def _fingerprint_of(audit: AuditEntry) -> str:
    return str(audit.details.get("fingerprint", ""))


def _decimal_text(value: object) -> str:
    assert isinstance(value, Decimal), f"NUMERIC columns read as Decimal, got {value!r}"
    return format_decimal(value)


def _json(value: object) -> dict[str, Any]:
    data = json.loads(value) if isinstance(value, str) else value
    assert isinstance(data, dict), f"a definition is a JSON object, got {value!r}"
    return data


def _names(transfers: Iterable[Transfer]) -> set[str]:
    return {t.debit_account_id for t in transfers} | {t.credit_account_id for t in transfers}
