"""Coupons and contract discounts in PostgreSQL: each write audited, in one transaction.

ApplyCoupon locks the coupon's row, so its redemption count and `max_redemptions` are checked
and raised one request at a time: two requests at once never redeem a coupon past its limit.
The discount's terms are a copy of the coupon's, written with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from rating_service.core.billing.discounts import (
    Coupon,
    Discount,
    check_redeemable,
    coupon_from_dict,
    coupon_to_dict,
    discount_from_dict,
    discount_to_dict,
)
from rating_service.core.contracts.contract import Contract
from rating_service.core.errors import NotFound
from rating_service.core.ledger.idempotency import (
    IdempotentOutcome,
    payload_fingerprint,
    recall,
)
from rating_service.store.contract import lock_contract
from rating_service.store.database import Connection
from rating_service.store.effects import AuditEntry, write_audit

CREATE_COUPON = "coupon.create"
ARCHIVE_COUPON = "coupon.archive"
APPLY_COUPON = "discount.apply"
REMOVE_DISCOUNT = "discount.remove"


@dataclass(frozen=True, slots=True)
class StoredCoupon:
    """A coupon as stored: its terms, how often it was redeemed, and whether it is archived."""

    coupon: Coupon
    redemptions: int
    created_at: datetime
    archived_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredDiscount:
    """A discount as stored, and the request that made it."""

    discount: Discount
    request_id: str


@dataclass(frozen=True, slots=True)
class Applied:
    """ApplyCoupon's answer: the discount, and whether the request repeats an earlier one."""

    discount: StoredDiscount
    replay: bool


class DiscountStore:
    """Reads and writes coupons and the discounts they made, over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_coupon(
        self, tenant_id: str, coupon: Coupon, actor: str
    ) -> tuple[StoredCoupon, bool]:
        """Store a new coupon; the same id with the same terms again is a replay (True).

        The same id with other terms is refused: ALREADY_EXISTS, IDEMPOTENCY_KEY_MISMATCH.
        """
        definition = coupon_to_dict(coupon)
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO coupons (tenant_id, coupon_id, definition) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT DO NOTHING RETURNING coupon_id",
                tenant_id,
                coupon.coupon_id,
                json.dumps(definition),
            )
            if inserted is not None:
                entry = AuditEntry(actor, CREATE_COUPON, coupon.coupon_id, definition)
                await write_audit(conn, tenant_id, entry)
            stored = await _coupon(conn, tenant_id, coupon.coupon_id)
        assert stored is not None, "inserted or there already"
        if inserted is None:
            previous = IdempotentOutcome(
                coupon.coupon_id, payload_fingerprint(coupon_to_dict(stored.coupon)), stored
            )
            recall(previous, coupon.coupon_id, payload_fingerprint(definition))
        return stored, inserted is None

    async def coupon(self, tenant_id: str, coupon_id: str) -> StoredCoupon:
        """One coupon of the tenant."""
        async with self._pool.acquire() as conn:
            stored = await _coupon(conn, tenant_id, coupon_id)
        if stored is None:
            raise _coupon_not_found(coupon_id)
        return stored

    async def coupons(
        self, tenant_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[StoredCoupon]:
        """The tenant's coupons, ordered by id, from past `after` (at most `limit`)."""
        rows = await self._pool.fetch(
            "SELECT definition, redemptions, created_at, archived_at FROM coupons"
            " WHERE tenant_id = $1 AND ($2::text IS NULL OR coupon_id > $2)"
            " ORDER BY coupon_id LIMIT $3",
            tenant_id,
            after,
            limit,
        )
        return [_stored_coupon(row) for row in rows]

    async def archive_coupon(
        self, tenant_id: str, coupon_id: str, actor: str, at: datetime
    ) -> StoredCoupon:
        """Archive a coupon (no new discounts; those made stay); archiving again changes nothing."""
        async with self._pool.acquire() as conn, conn.transaction():
            archived = await conn.fetchval(
                "UPDATE coupons SET archived_at = $3 WHERE tenant_id = $1 AND coupon_id = $2"
                " AND archived_at IS NULL RETURNING coupon_id",
                tenant_id,
                coupon_id,
                at,
            )
            if archived is not None:
                entry = AuditEntry(actor, ARCHIVE_COUPON, coupon_id, {"at": at.isoformat()})
                await write_audit(conn, tenant_id, entry)
            stored = await _coupon(conn, tenant_id, coupon_id)
        if stored is None:
            raise _coupon_not_found(coupon_id)
        return stored

    async def apply_coupon(
        self,
        tenant_id: str,
        *,
        request_id: str,
        fingerprint: str,
        contract_id: str,
        coupon_id: str,
        make: Callable[[Contract, Coupon], Discount],
        actor: str,
        at: datetime,
    ) -> Applied:
        """Apply a coupon to a contract once per request id, within the coupon's limits.

        `make` builds the discount from the contract and the coupon (its id and window). The
        same request id again answers the first discount (replay); with another request it is
        refused (ALREADY_EXISTS, IDEMPOTENCY_KEY_MISMATCH). Refused with nothing written:
        NOT_FOUND for an unknown contract or coupon, FAILED_PRECONDITION for a coupon archived,
        past its redeem-by, used up, or in another currency (see `check_redeemable`).
        """
        async with self._pool.acquire() as conn, conn.transaction():
            earlier = await _discount_by_request(conn, tenant_id, request_id)
            if earlier is not None:
                return _replayed(earlier, request_id, fingerprint)
            contract = await lock_contract(conn, tenant_id, contract_id)
            row = await conn.fetchrow(
                "SELECT definition, redemptions, created_at, archived_at FROM coupons"
                " WHERE tenant_id = $1 AND coupon_id = $2 FOR UPDATE",
                tenant_id,
                coupon_id,
            )
            if row is None:
                raise _coupon_not_found(coupon_id)
            stored = _stored_coupon(row)
            # A request with the same id may have committed while this one waited on the lock.
            earlier = await _discount_by_request(conn, tenant_id, request_id)
            if earlier is not None:
                return _replayed(earlier, request_id, fingerprint)
            check_redeemable(
                stored.coupon,
                archived=stored.archived_at is not None,
                redemptions=stored.redemptions,
                invoice_currency=contract.invoice_currency,
                at=at,
            )
            discount = make(contract, stored.coupon)
            definition = discount_to_dict(discount)
            await conn.execute(
                "INSERT INTO contract_discounts (tenant_id, discount_id, contract_id, coupon_id,"
                " request_id, fingerprint, definition, applied_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
                tenant_id,
                discount.discount_id,
                contract_id,
                coupon_id,
                request_id,
                fingerprint,
                json.dumps(definition),
                discount.applied_at,
            )
            await conn.execute(
                "UPDATE coupons SET redemptions = redemptions + 1"
                " WHERE tenant_id = $1 AND coupon_id = $2",
                tenant_id,
                coupon_id,
            )
            entry = AuditEntry(
                actor, APPLY_COUPON, discount.discount_id, {"request_id": request_id, **definition}
            )
            await write_audit(conn, tenant_id, entry)
        return Applied(StoredDiscount(discount, request_id), replay=False)

    async def remove_discount(
        self,
        tenant_id: str,
        contract_id: str,
        discount_id: str,
        end: Callable[[Contract, Discount], Discount],
        actor: str,
    ) -> StoredDiscount:
        """Remove a discount: `end` closes its window; removing it again changes nothing."""
        async with self._pool.acquire() as conn, conn.transaction():
            contract = await lock_contract(conn, tenant_id, contract_id)
            row = await conn.fetchrow(
                "SELECT definition, request_id FROM contract_discounts WHERE tenant_id = $1"
                " AND contract_id = $2 AND discount_id = $3 FOR UPDATE",
                tenant_id,
                contract_id,
                discount_id,
            )
            if row is None:
                raise _discount_not_found(discount_id)
            stored = _stored_discount(row)
            if stored.discount.removed_at is not None:
                return stored
            ended = end(contract, stored.discount)
            assert ended.removed_at is not None, "a removal says when"
            definition = discount_to_dict(ended)
            await conn.execute(
                "UPDATE contract_discounts SET definition = $3::jsonb, removed_at = $4"
                " WHERE tenant_id = $1 AND discount_id = $2",
                tenant_id,
                discount_id,
                json.dumps(definition),
                ended.removed_at,
            )
            entry = AuditEntry(actor, REMOVE_DISCOUNT, discount_id, definition)
            await write_audit(conn, tenant_id, entry)
        return StoredDiscount(ended, stored.request_id)

    async def discounts(
        self,
        tenant_id: str,
        contract_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
    ) -> list[StoredDiscount]:
        """A contract's discounts (removed ones too), by id, from past `after` (≤ `limit`)."""
        rows = await self._pool.fetch(
            "SELECT definition, request_id FROM contract_discounts"
            " WHERE tenant_id = $1 AND contract_id = $2"
            " AND ($3::text IS NULL OR discount_id > $3) ORDER BY discount_id LIMIT $4",
            tenant_id,
            contract_id,
            after,
            limit,
        )
        return [_stored_discount(row) for row in rows]

    async def contract_exists(self, tenant_id: str, contract_id: str) -> bool:
        """Whether the tenant has the contract (a listing of an unknown one is NOT_FOUND)."""
        found = await self._pool.fetchval(
            "SELECT 1 FROM contracts WHERE tenant_id = $1 AND contract_id = $2",
            tenant_id,
            contract_id,
        )
        return found is not None


async def _coupon(conn: Connection, tenant_id: str, coupon_id: str) -> StoredCoupon | None:
    row = await conn.fetchrow(
        "SELECT definition, redemptions, created_at, archived_at FROM coupons"
        " WHERE tenant_id = $1 AND coupon_id = $2",
        tenant_id,
        coupon_id,
    )
    return None if row is None else _stored_coupon(row)


async def _discount_by_request(
    conn: Connection, tenant_id: str, request_id: str
) -> tuple[StoredDiscount, str] | None:
    row = await conn.fetchrow(
        "SELECT definition, request_id, fingerprint FROM contract_discounts"
        " WHERE tenant_id = $1 AND request_id = $2",
        tenant_id,
        request_id,
    )
    return None if row is None else (_stored_discount(row), row["fingerprint"])


def _replayed(earlier: tuple[StoredDiscount, str], request_id: str, fingerprint: str) -> Applied:
    stored, stored_fingerprint = earlier
    recall(IdempotentOutcome(request_id, stored_fingerprint, stored), request_id, fingerprint)
    return Applied(stored, replay=True)


def _stored_coupon(row: asyncpg.Record) -> StoredCoupon:
    return StoredCoupon(
        coupon_from_dict(_json(row["definition"])),
        row["redemptions"],
        row["created_at"],
        row["archived_at"],
    )


def _stored_discount(row: asyncpg.Record) -> StoredDiscount:
    return StoredDiscount(discount_from_dict(_json(row["definition"])), row["request_id"])


def _json(value: object) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    assert isinstance(loaded, dict)
    return loaded


def _coupon_not_found(coupon_id: str) -> NotFound:
    return NotFound(
        f"coupon {coupon_id!r} not found",
        reason="COUPON_NOT_FOUND",
        metadata={"coupon_id": coupon_id},
    )


def _discount_not_found(discount_id: str) -> NotFound:
    return NotFound(
        f"discount {discount_id!r} not found",
        reason="DISCOUNT_NOT_FOUND",
        metadata={"discount_id": discount_id},
    )
