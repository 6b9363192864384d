"""The hot path's SQL: customers' contracts and pools, and one transaction per debit batch.

A batch transaction, for every event in it at once: lock the billing periods (the mutex for
their usage counters and draws, and for rating their events), find replays, then lock the
accounts; periods and accounts are each locked in key order, so concurrent batches on any
number of servers never deadlock. After pure rating it writes accounts, transfers, counters,
draws, periods, rated events and outbox rows, and commits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from rating_service.core.contracts.contract import Contract, ContractStatus, contract_from_dict
from rating_service.core.contracts.pools import CommitmentKind, Pool, pool_from_dict
from rating_service.core.ledger.accounts import (
    Account,
    AccountKind,
    overage_account_id,
    pool_account_id,
    revenue_account_id,
)
from rating_service.core.ledger.transfers import Transfer
from rating_service.core.rating.rate import Counter, PeriodLedger
from rating_service.core.rating.rated_event import RatedEvent
from rating_service.outbox.topics import OutboxPayload, Topic
from rating_service.store.database import Connection
from rating_service.store.ledger import account_from_row, open_accounts, post_transfers

log = logging.getLogger("rating.store")

ZERO = Decimal(0)

_RESERVATION_LOCK_SPACE = 0x48_4F_4C_44
"""The advisory-lock key space of reservation ids ("HOLD"), apart from every other lock."""


@dataclass(frozen=True, slots=True)
class CustomerBook:
    """A customer's contracts and their pools' terms (balances live in the ledger)."""

    contracts: tuple[Contract, ...]
    pools: dict[str, tuple[Pool, ...]]
    """contract id → its pools, balances as of loading (refreshed under lock per batch)."""


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """A rated event already committed: its payload fingerprint and its answer."""

    fingerprint: str
    result: RatedEvent


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """Everything a batch changes, gathered after pure rating."""

    tenant_transfers: dict[str, list[Transfer]]
    locked: dict[str, Account]
    periods: dict[tuple[str, datetime], PeriodLedger]
    period_ends: dict[tuple[str, datetime], datetime]
    tenant_of: Mapping[str, str]
    """contract id → its tenant id, for every contract in `periods`."""
    rated: list[tuple[str, str, RatedEvent, datetime]]
    """(tenant id, fingerprint, outcome, event time) per event rated in the batch."""
    outbox: list[tuple[str, Topic, str, OutboxPayload]]
    """(tenant id, topic, dedupe key, payload)."""
    captured: list[tuple[str, str]]
    """(tenant id, reservation id) of the reservations the batch captured."""


class RatingStore:
    """Reads and writes for RateAndDebit over a raw asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection whose failure to be reset afterwards does not undo what ran.

        The pool terminates a connection it cannot reset (an outage broke it after the work
        was done); the outcome of the transaction that ran on it is already decided.
        """
        conn = await self.pool.acquire()
        try:
            yield conn
        finally:
            try:
                await self.pool.release(conn)
            except Exception as error:
                log.warning(
                    "a connection could not be reset; terminated", extra={"error": repr(error)}
                )

    async def customer_book(self, tenant_id: str, customer_id: str) -> CustomerBook:
        """The customer's contracts (oldest first) and their pools' terms."""
        async with self.pool.acquire() as conn:
            contract_rows = await conn.fetch(
                "SELECT contract_id, status, definition FROM contracts"
                " WHERE tenant_id = $1 AND customer_id = $2 ORDER BY term_start",
                tenant_id,
                customer_id,
            )
            pool_rows = await conn.fetch(
                "SELECT p.pool_id, p.contract_id, p.created_seq, p.definition,"
                " a.credits_posted - a.debits_posted AS balance, a.debits_pending AS pending"
                " FROM pools p JOIN contracts c USING (tenant_id, contract_id)"
                " LEFT JOIN accounts a ON a.tenant_id = p.tenant_id AND a.account_id = p.account_id"
                " WHERE c.tenant_id = $1 AND c.customer_id = $2 ORDER BY p.created_seq",
                tenant_id,
                customer_id,
            )
        contracts = tuple(
            replace(
                contract_from_dict(_json(row["definition"])),
                status=ContractStatus(row["status"]),
            )
            for row in contract_rows
        )
        pools: dict[str, list[Pool]] = {c.contract_id: [] for c in contracts}
        for row in pool_rows:
            pools[row["contract_id"]].append(_pool(row))
        return CustomerBook(contracts, {k: tuple(v) for k, v in pools.items()})

    async def lock_reservation_id(
        self, conn: Connection, tenant_id: str, reservation_id: str
    ) -> None:
        """Hold a reservation id until commit, so servers authorize each id one at a time."""
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2 || chr(31) || $3))",
            _RESERVATION_LOCK_SPACE,
            tenant_id,
            reservation_id,
        )

    async def stored_outcomes(
        self, conn: Connection, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredOutcome]:
        """The committed outcomes among (tenant id, event id) keys."""
        pairs = sorted(set(keys))
        rows = await conn.fetch(
            "SELECT r.tenant_id, r.event_id, r.request_hash, r.result FROM rated_events r"
            " JOIN unnest($1::text[], $2::text[]) AS k(t, e)"
            " ON r.tenant_id = k.t AND r.event_id = k.e",
            [t for t, _ in pairs],
            [e for _, e in pairs],
        )
        return {
            (row["tenant_id"], row["event_id"]): StoredOutcome(
                bytes(row["request_hash"]).decode(),
                RatedEvent.from_json(_json(row["result"])),
            )
            for row in rows
        }

    async def lock_periods(
        self,
        conn: Connection,
        tenant_of: Mapping[str, str],
        periods: dict[tuple[str, datetime], datetime],
    ) -> dict[tuple[str, datetime], PeriodLedger]:
        """Create-or-lock each (contract, period start) row in key order; read its ledger.

        `tenant_of` names each contract's tenant (every key of these tables leads with it).
        """
        keys = sorted(periods)
        tenants = [tenant_of[c] for c, _ in keys]
        # Contract ids are unique across tenants, so (contract, start) order is a total order
        # every writer shares, whatever tenants its batch mixes.
        rows = await conn.fetch(
            "INSERT INTO contract_periods AS p (tenant_id, contract_id, period_start, period_end)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])"
            " ORDER BY 2, 3"
            " ON CONFLICT (tenant_id, contract_id, period_start)"
            " DO UPDATE SET period_end = p.period_end"
            " RETURNING contract_id, period_start, spend, state",
            tenants,
            [c for c, _ in keys],
            [s for _, s in keys],
            [periods[k] for k in keys],
        )
        ledgers = {
            (row["contract_id"], row["period_start"]): PeriodLedger(row["spend"], row["state"])
            for row in rows
        }
        # The period rows are locked, so their counters and draws cannot change under us.
        counters = await conn.fetch(
            "SELECT u.contract_id, u.period_start, u.product_key, u.cell, u.quantity, u.amount,"
            " u.events FROM usage_counters u"
            " JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(t, c, s)"
            " ON u.tenant_id = k.t AND u.contract_id = k.c AND u.period_start = k.s",
            tenants,
            [c for c, _ in keys],
            [s for _, s in keys],
        )
        for row in counters:
            ledger = ledgers[(row["contract_id"], row["period_start"])]
            ledger.counters[(row["product_key"], tuple(row["cell"]))] = Counter(
                row["quantity"], row["amount"], row["events"]
            )
        draws = await conn.fetch(
            "SELECT d.contract_id, d.period_start, d.product_key, d.pool_id, d.amount"
            " FROM period_draws d"
            " JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(t, c, s)"
            " ON d.tenant_id = k.t AND d.contract_id = k.c AND d.period_start = k.s",
            tenants,
            [c for c, _ in keys],
            [s for _, s in keys],
        )
        for row in draws:
            ledger = ledgers[(row["contract_id"], row["period_start"])]
            ledger.draws[(row["product_key"], row["pool_id"])] = row["amount"]
        return ledgers

    async def load_entries(
        self,
        conn: Connection,
        ledgers: Mapping[tuple[str, datetime], PeriodLedger],
        marks: Iterable[tuple[str, str, datetime, str, tuple[str, ...], str]],
    ) -> None:
        """Read into each ledger the stored entries next to each mark: at-or-before and after.

        Marks are (tenant, contract, period start, product, cell, entry key); the periods must
        be locked already, so the entries cannot change under us. The entry at or before a mark
        and the first after it are all an aggregation needs to place the mark (a distinct value
        is found by equality; a reading between its neighbours in time).
        """
        wanted = sorted(set(marks))
        if not wanted:
            return
        rows = await conn.fetch(
            ENTRIES_AROUND,
            [w[0] for w in wanted],
            [w[1] for w in wanted],
            [w[2] for w in wanted],
            [w[3] for w in wanted],
            [json.dumps(list(w[4])) for w in wanted],
            [w[5] for w in wanted],
        )
        for row in rows:
            ledger = ledgers[(row["contract_id"], row["period_start"])]
            known = ledger.entries.setdefault((row["product_key"], tuple(row["cell"])), {})
            known[row["entry_key"]] = row["value"]

    async def lock_contract_accounts(
        self,
        conn: Connection,
        tenant_of: dict[str, str],
        products: dict[str, set[str]],
        currencies: dict[str, str],
        known: set[str],
        pools: Mapping[str, Sequence[Pool]],
        opened: set[str],
    ) -> dict[str, Account]:
        """Lock every account the contracts' events may move: pools, overage and revenue.

        Revenue and overage accounts not in `known` are opened (added to `opened`), so a warm
        server spends no round trip here; the caller learns them once the transaction commits.
        """
        for contract_id, keys in products.items():
            wanted: list[tuple[str, AccountKind, str | None]] = [
                (revenue_account_id(contract_id, key), AccountKind.REVENUE, key)
                for key in sorted(keys)
            ]
            wanted.append((overage_account_id(contract_id), AccountKind.OVERAGE_RECEIVABLE, None))
            missing = [w for w in wanted if w[0] not in known]
            if missing:
                await open_accounts(
                    conn, tenant_of[contract_id], contract_id, missing, currencies[contract_id]
                )
                opened.update(account for account, _, _ in missing)
        # Pools come from the contracts' books: a pool created after the book was read is
        # not drawn until the book refreshes, so it needs no lock now.
        # (account, tenant) in account-id order: the order every writer locks accounts in.
        names = sorted(
            {(revenue_account_id(c, k), tenant_of[c]) for c, keys in products.items() for k in keys}
            | {(overage_account_id(c), tenant_of[c]) for c in products}
            | {
                (pool_account_id(p.pool_id), tenant_of[c])
                for c in products
                for p in pools.get(c, ())
                if p.kind is not CommitmentKind.POSTPAID_COMMIT
            }
        )
        rows = await conn.fetch(
            "SELECT a.account_id, a.kind, a.currency, a.flags, a.debits_posted,"
            " a.credits_posted, a.debits_pending, a.credits_pending FROM accounts a"
            " JOIN unnest($1::text[], $2::text[]) AS k(t, id)"
            " ON a.tenant_id = k.t AND a.account_id = k.id"
            " ORDER BY a.account_id FOR UPDATE OF a",
            [t for _, t in names],
            [a for a, _ in names],
        )
        return {row["account_id"]: account_from_row(row) for row in rows}

    async def write_batch(self, conn: Connection, batch: BatchWrite) -> None:
        """Write what a batch rated; the caller commits."""
        for tenant_id, transfers in batch.tenant_transfers.items():
            await post_transfers(conn, tenant_id, transfers, batch.locked)
        tenant_of = batch.tenant_of
        counter_rows = [
            (
                tenant_of[contract_id],
                contract_id,
                start,
                product,
                json.dumps(list(cell)),
                c.quantity,
                c.amount,
                c.events,
            )
            for (contract_id, start), ledger in batch.periods.items()
            for (product, cell), c in ledger.counters.items()
        ]
        draw_rows = [
            (tenant_of[contract_id], contract_id, start, product, source, amount)
            for (contract_id, start), ledger in batch.periods.items()
            for (product, source), amount in ledger.draws.items()
        ]
        period_rows = [
            (tenant_of[contract_id], contract_id, start, ledger.spend, ledger.overage)
            for (contract_id, start), ledger in sorted(batch.periods.items())
        ]
        entry_rows = [
            (tenant_of[contract_id], contract_id, start, product, json.dumps(list(cell)), key, v)
            for (contract_id, start), ledger in batch.periods.items()
            for (product, cell, key), v in ledger.new_entries.items()
        ]
        rated_rows = [
            (
                tenant_id,
                result.event_id,
                fingerprint.encode(),
                result.contract_id,
                at,
                result.period_start,
                result.charge,
                json.dumps(result.to_json()),
            )
            for tenant_id, fingerprint, result, at in batch.rated
        ]
        # One statement, four tables: each round trip costs the hot path more than the work.
        await conn.execute(
            _WRITE_PERIODS_AND_EVENTS,
            *_columns(counter_rows, 8),
            *_columns(draw_rows, 6),
            *_columns(period_rows, 5),
            *_columns(rated_rows, 8),
            *_columns(entry_rows, 7),
        )
        if batch.captured:
            await conn.execute(
                "UPDATE reservations r SET state = 'captured', resolved_at = now()"
                " FROM unnest($1::text[], $2::text[]) AS k(t, id)"
                " WHERE r.tenant_id = k.t AND r.reservation_id = k.id",
                [t for t, _ in batch.captured],
                [r for _, r in batch.captured],
            )
        if batch.outbox:
            await conn.executemany(
                "INSERT INTO outbox (tenant_id, topic, dedupe_key, payload)"
                " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (tenant_id, dedupe_key) DO NOTHING",
                [(t, topic, key, json.dumps(payload)) for t, topic, key, payload in batch.outbox],
            )


_WRITE_PERIODS_AND_EVENTS = """
WITH counters AS (
    INSERT INTO usage_counters AS u (tenant_id, contract_id, period_start, product_key, cell,
        quantity, amount, events)
    SELECT t, c, s, p, ARRAY(SELECT json_array_elements_text(cell::json)), q, a, e
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
        $6::numeric[], $7::numeric[], $8::bigint[]) AS v(t, c, s, p, cell, q, a, e)
    ON CONFLICT (tenant_id, contract_id, period_start, product_key, cell) DO UPDATE
    SET quantity = excluded.quantity, amount = excluded.amount, events = excluded.events
    RETURNING 1
), draws AS (
    INSERT INTO period_draws (tenant_id, contract_id, period_start, product_key, pool_id,
        amount)
    SELECT * FROM unnest($9::text[], $10::text[], $11::timestamptz[], $12::text[],
        $13::text[], $14::numeric[])
    ON CONFLICT (tenant_id, contract_id, period_start, product_key, pool_id)
    DO UPDATE SET amount = excluded.amount
    RETURNING 1
), periods AS (
    UPDATE contract_periods p SET spend = v.spend, overage = v.overage
    FROM unnest($15::text[], $16::text[], $17::timestamptz[], $18::numeric[], $19::numeric[])
        AS v(t, c, s, spend, overage)
    WHERE p.tenant_id = v.t AND p.contract_id = v.c AND p.period_start = v.s
    RETURNING 1
), rated AS (
    INSERT INTO rated_events (tenant_id, event_id, request_hash, contract_id, event_time,
        period_start, charge, result)
    SELECT * FROM unnest($20::text[], $21::text[], $22::bytea[], $23::text[],
        $24::timestamptz[], $25::timestamptz[], $26::numeric[], $27::jsonb[])
    RETURNING 1
), entries AS (
    INSERT INTO aggregation_entries AS e (tenant_id, contract_id, period_start, product_key,
        cell, entry_key, value)
    SELECT t, c, s, p, ARRAY(SELECT json_array_elements_text(cell::json)), k, v
    FROM unnest($28::text[], $29::text[], $30::timestamptz[], $31::text[], $32::text[],
        $33::text[], $34::numeric[]) AS v(t, c, s, p, cell, k, v)
    ON CONFLICT (tenant_id, contract_id, period_start, product_key, cell, entry_key)
    DO UPDATE SET value = excluded.value
    RETURNING 1
)
SELECT (SELECT count(*) FROM counters), (SELECT count(*) FROM draws),
    (SELECT count(*) FROM periods), (SELECT count(*) FROM rated),
    (SELECT count(*) FROM entries)
"""

ENTRIES_AROUND = """
SELECT k.c AS contract_id, k.s AS period_start, k.p AS product_key, k.cell, e.entry_key, e.value
FROM (
    SELECT t, c, s, p, ARRAY(SELECT json_array_elements_text(cell::json)) AS cell, mark
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])
        AS v(t, c, s, p, cell, mark)
) k
CROSS JOIN LATERAL (
    (SELECT entry_key, value FROM aggregation_entries a
     WHERE a.tenant_id = k.t AND a.contract_id = k.c AND a.period_start = k.s
       AND a.product_key = k.p AND a.cell = k.cell AND a.entry_key <= k.mark
     ORDER BY a.entry_key DESC LIMIT 1)
    UNION ALL
    (SELECT entry_key, value FROM aggregation_entries a
     WHERE a.tenant_id = k.t AND a.contract_id = k.c AND a.period_start = k.s
       AND a.product_key = k.p AND a.cell = k.cell AND a.entry_key > k.mark
     ORDER BY a.entry_key LIMIT 1)
) e
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as `width` column lists, the shape `unnest` takes (empty lists for no rows)."""
    return [[row[i] for row in rows] for i in range(width)]


def pools_with_balances(pools: Sequence[Pool], accounts: dict[str, Account]) -> dict[str, Pool]:
    """The contract's pools with their balance and pending as the locked accounts hold them."""
    current: dict[str, Pool] = {}
    for pool in pools:
        account = accounts.get(pool_account_id(pool.pool_id))
        if account is None or pool.kind is CommitmentKind.POSTPAID_COMMIT:
            current[pool.pool_id] = pool
            continue
        current[pool.pool_id] = replace(
            pool,
            balance=account.credit_balance,
            pending=account.debits_pending,
        )
    return current


def _pool(row: asyncpg.Record) -> Pool:
    definition = _json(row["definition"])
    definition["created_seq"] = row["created_seq"]
    if row["balance"] is not None:
        definition["balance"] = str(row["balance"])
        definition["pending"] = str(row["pending"])
    return pool_from_dict(definition)


def _json(value: object) -> dict[str, Any]:
    data = json.loads(value) if isinstance(value, str) else value
    assert isinstance(data, dict)
    return data
