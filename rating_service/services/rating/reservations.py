"""Authorize / Void and the expiry sweep: holds on pools as two-phase (pending) transfers.

Capture goes through the DebitEngine, because it rates an event: in the same transaction the
holds are voided and the actual usage is debited by the normal rules, so "less releases the
rest, more debits the extra" holds and the ledger shows both steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from rating_service.background import stop_task
from rating_service.core.contracts.contract import billing_period_containing
from rating_service.core.contracts.pools import Pool
from rating_service.core.contracts.reservations import authorize
from rating_service.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from rating_service.core.ledger.accounts import Account, pool_account_id, revenue_account_id
from rating_service.core.ledger.idempotency import payload_fingerprint
from rating_service.core.ledger.posting_rules import release_transfers
from rating_service.core.ledger.transfers import Transfer, TransferCode
from rating_service.core.money import EXACT_CONTEXT, exact_sum
from rating_service.core.rating.rate import contract_in_force
from rating_service.faults import Failure, classify_failure
from rating_service.store.books import ContractBooks
from rating_service.store.database import Connection
from rating_service.store.ledger import lock_accounts, post_transfers
from rating_service.store.rating import RatingStore, pools_with_balances

log = logging.getLogger("rating.reservations")

DEFAULT_TTL = timedelta(minutes=15)
MAX_TTL = timedelta(days=1)
RESERVATION_NOT_FOUND = "RESERVATION_NOT_FOUND"
RESERVATION_NOT_HELD = "RESERVATION_NOT_HELD"


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation as stored: who it is for, what it holds, until when, and its state."""

    reservation_id: str
    contract_id: str
    product_key: str
    amount: Decimal
    holds: tuple[tuple[str, Decimal], ...]
    expires_at: datetime
    state: str

    def release(self, code: TransferCode = TransferCode.RESERVATION_VOID) -> tuple[Transfer, ...]:
        """The transfers that void every hold."""
        return release_transfers(
            reservation_id=self.reservation_id,
            contract_id=self.contract_id,
            product_key=self.product_key,
            holds=self.holds,
            code=code,
        )

    def released_from(self, pools: dict[str, Pool]) -> dict[str, Pool]:
        """The pools with this reservation's holds given back to them."""
        after = dict(pools)
        for pool_id, amount in self.holds:
            if pool_id in after:
                after[pool_id] = replace(after[pool_id], pending=after[pool_id].pending - amount)
        return after

    @property
    def held(self) -> Decimal:
        """The total held."""
        return exact_sum(amount for _, amount in self.holds)


class Reservations:
    """Holds for streaming calls: authorize, void, and releasing expired holds."""

    def __init__(
        self,
        store: RatingStore,
        books: ContractBooks,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._books = books
        self._clock = clock
        self._sweeper: asyncio.Task[None] | None = None

    async def authorize(
        self,
        tenant_id: str,
        reservation_id: str,
        customer_id: str,
        product_key: str,
        amount: Decimal,
        at: datetime,
        ttl: timedelta,
    ) -> tuple[Hold, bool, tuple[tuple[str, Decimal, Decimal], ...]]:
        """Hold `amount` on the pools that would pay for the product; replays return the hold.

        Returns the hold, whether it is a replay, and (pool id, remaining, pending) of the
        pools it holds on, as they are after it.
        """
        if not timedelta(0) < ttl <= MAX_TTL:
            raise InvalidArgument.of_field("ttl_seconds", "must be between 1 s and 1 day")
        fingerprint = payload_fingerprint(
            {"customer_id": customer_id, "product_key": product_key, "amount": amount, "at": at}
        )
        book = await self._books.book(tenant_id, customer_id)
        contract = contract_in_force(book.contracts, at)
        start, end = billing_period_containing(contract, at)
        async with self._store.pool.acquire() as conn, conn.transaction():
            # A concurrent twin (here or on another server) waits, then finds this one stored.
            await self._store.lock_reservation_id(conn, tenant_id, reservation_id)
            existing = await _hold_row(conn, tenant_id, reservation_id, lock="")
            if existing is not None:
                # The TTL is not in the fingerprint (holds stored before it counted keep
                # theirs), but the expiry it set is stored: another TTL is another payload.
                if existing[1] != fingerprint or existing[0].expires_at != at + ttl:
                    raise _mismatch(reservation_id)
                hold = existing[0]
                current = await lock_accounts(conn, tenant_id, pool_accounts(hold))
                return hold, True, _balances(hold, current)
            ledgers = await self._store.lock_periods(
                conn, {contract.contract_id: tenant_id}, {(contract.contract_id, start): end}
            )
            accounts = await self._store.lock_contract_accounts(
                conn,
                {contract.contract_id: tenant_id},
                {contract.contract_id: {product_key}},
                {contract.contract_id: contract.invoice_currency.code},
                set(),
                {contract.contract_id: book.pools.get(contract.contract_id, ())},
                set(),
            )
            pools = pools_with_balances(book.pools.get(contract.contract_id, ()), accounts)
            step = authorize(
                reservation_id=reservation_id,
                contract=contract,
                pools=tuple(pools.values()),
                product_key=product_key,
                estimate=amount,
                at=at,
                ttl=ttl,
                period_spend=ledgers[(contract.contract_id, start)].spend,
            )
            after = await post_transfers(conn, tenant_id, step.transfers, accounts)
            hold = Hold(
                reservation_id,
                contract.contract_id,
                product_key,
                amount,
                step.reservation.hold_parts,
                step.reservation.expires_at,
                "held",
            )
            await conn.execute(
                "INSERT INTO reservations (tenant_id, reservation_id, contract_id, request_hash,"
                " product_key, amount, holds, state, expires_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'held', $8)",
                tenant_id,
                reservation_id,
                contract.contract_id,
                fingerprint.encode(),
                product_key,
                amount,
                json.dumps([[pool, str(part)] for pool, part in hold.holds]),
                hold.expires_at,
            )
        return hold, False, _balances(hold, after)

    async def released(self, tenant_id: str, reservation_id: str, charge: Decimal) -> Decimal:
        """The part of a captured hold given back: what it held beyond the actual charge."""
        async with self._store.pool.acquire() as conn:
            found = await _hold_row(conn, tenant_id, reservation_id, lock=None)
        if found is None:
            raise _not_found(reservation_id)
        with localcontext(EXACT_CONTEXT):
            return max(found[0].held - max(charge, Decimal(0)), Decimal(0))

    async def void(self, tenant_id: str, reservation_id: str) -> tuple[Hold, bool]:
        """Release a reservation's holds; voiding it again is a replay."""
        async with self._store.pool.acquire() as conn, conn.transaction():
            hold, changed = await self._release(
                conn, tenant_id, reservation_id, TransferCode.RESERVATION_VOID, skip_locked=False
            )
        if hold is None:
            raise _not_found(reservation_id)
        if hold.state == "captured":
            raise FailedPrecondition(
                f"reservation {reservation_id!r} was captured", reason="RESERVATION_CAPTURED"
            )
        return hold, not changed

    async def held(self, conn: Connection, tenant_id: str, reservation_id: str) -> Hold:
        """Lock a reservation that is still held and unexpired (for Capture), or refuse."""
        found = await _hold_row(conn, tenant_id, reservation_id, lock="")
        if found is None:
            raise _not_found(reservation_id)
        hold = found[0]
        if hold.state != "held" or hold.expires_at <= self._clock():
            state = "expired" if hold.state == "held" else hold.state
            raise FailedPrecondition(
                f"reservation {reservation_id!r} is {state}; it can no longer be captured",
                reason=RESERVATION_NOT_HELD,
            )
        return hold

    async def expire_due(self, limit: int = 100) -> int:
        """Release the holds of reservations past their TTL; returns how many were released."""
        async with self._store.pool.acquire() as conn:
            due = await conn.fetch(
                "SELECT tenant_id, reservation_id FROM reservations"
                " WHERE state = 'held' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
                self._clock(),
                limit,
            )
            released = 0
            for row in due:
                async with conn.transaction():
                    _, changed = await self._release(
                        conn,
                        row["tenant_id"],
                        row["reservation_id"],
                        TransferCode.RESERVATION_EXPIRY,
                        skip_locked=True,
                    )
                released += changed
        return released

    def start_sweeping(self, interval_seconds: float) -> None:
        """Release expired holds in the background (safe on every replica: SKIP LOCKED)."""
        self._sweeper = asyncio.create_task(self._sweep(interval_seconds), name="hold-sweeper")

    async def stop(self) -> None:
        """Stop sweeping."""
        await stop_task(self._sweeper)

    async def _sweep(self, interval_seconds: float) -> None:
        while True:
            try:
                released = await self.expire_due()
                while released:
                    released = await self.expire_due()
            except Exception as error:
                if classify_failure(error) is Failure.OUTAGE:  # expected in an outage: one line
                    log.warning(
                        "cannot expire reservations now; will retry", extra={"error": str(error)}
                    )
                else:
                    log.exception("expiring reservations failed; will retry")
            await asyncio.sleep(interval_seconds)

    async def _release(
        self,
        conn: Connection,
        tenant_id: str,
        reservation_id: str,
        code: TransferCode,
        *,
        skip_locked: bool,
    ) -> tuple[Hold | None, bool]:
        """Void the holds of a held reservation; (the reservation after, whether it changed).

        Accounts are locked before the reservation row, the order Capture takes them in, so the
        two never deadlock.
        """
        found = await _hold_row(conn, tenant_id, reservation_id, lock=None)
        if found is None or found[0].state != "held":
            return (None if found is None else found[0]), False
        hold = found[0]
        accounts = await lock_accounts(
            conn,
            tenant_id,
            [*pool_accounts(hold), revenue_account_id(hold.contract_id, hold.product_key)],
        )
        locked = await _hold_row(
            conn, tenant_id, reservation_id, lock="SKIP LOCKED" if skip_locked else ""
        )
        if locked is None or locked[0].state != "held":
            return (hold if locked is None else locked[0]), False
        state = "expired" if code is TransferCode.RESERVATION_EXPIRY else "voided"
        await post_transfers(conn, tenant_id, hold.release(code), accounts)
        await conn.execute(
            "UPDATE reservations SET state = $3, resolved_at = now()"
            " WHERE tenant_id = $1 AND reservation_id = $2",
            tenant_id,
            reservation_id,
            state,
        )
        return replace(hold, state=state), True


async def _hold_row(
    conn: Connection, tenant_id: str, reservation_id: str, *, lock: str | None
) -> tuple[Hold, str] | None:
    """A stored reservation and its fingerprint; `lock` "" locks it, "SKIP LOCKED" tries to."""
    suffix = "" if lock is None else f" FOR UPDATE {lock}"
    row = await conn.fetchrow(
        "SELECT reservation_id, contract_id, product_key, amount, holds, expires_at, state,"
        " request_hash FROM reservations WHERE tenant_id = $1 AND reservation_id = $2" + suffix,
        tenant_id,
        reservation_id,
    )
    if row is None:
        return None
    holds = json.loads(row["holds"]) if isinstance(row["holds"], str) else row["holds"]
    hold = Hold(
        row["reservation_id"],
        row["contract_id"],
        row["product_key"],
        row["amount"],
        tuple((pool, Decimal(amount)) for pool, amount in holds),
        row["expires_at"],
        row["state"],
    )
    return hold, bytes(row["request_hash"]).decode()


def pool_accounts(hold: Hold) -> list[str]:
    """The ledger accounts a reservation's holds sit on."""
    return [pool_account_id(pool_id) for pool_id, _ in hold.holds]


def _balances(hold: Hold, accounts: dict[str, Account]) -> tuple[tuple[str, Decimal, Decimal], ...]:
    """(pool id, remaining, pending) of each pool the hold sits on, as `accounts` has them."""
    return tuple(
        (pool_id, account.credit_balance, account.debits_pending)
        for pool_id, _ in hold.holds
        if (account := accounts.get(pool_account_id(pool_id))) is not None
    )


def _not_found(reservation_id: str) -> NotFound:
    return NotFound(f"no reservation {reservation_id!r}", reason=RESERVATION_NOT_FOUND)


def _mismatch(reservation_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"reservation {reservation_id!r} was authorized with a different payload",
        reason="IDEMPOTENCY_KEY_MISMATCH",
    )
