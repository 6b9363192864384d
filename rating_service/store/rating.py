"""The hot path's SQL: customers' contracts and pools, and one transaction per debit batch.

A batch transaction, for every event in it at once, in five round trips: begin; lock the
billing periods (the mutex for their usage counters and draws, and for rating their events);
in one statement read their counters and draws, find replays and lock the accounts; after
pure rating, write accounts, transfers, counters, draws, periods, rated events, outbox rows
and captured reservations in one statement; commit. Periods and accounts are each locked in
key order, periods first, so concurrent batches on any number of servers never deadlock.
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
    AccountFlags,
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
from rating_service.store.ledger import (
    WRITE_POSTINGS_CTES,
    balance_transfers,
    open_accounts,
    posting_columns,
)

log = logging.getLogger("rating.store")

ZERO = Decimal(0)

_RESERVATION_LOCK_SPACE = 0x48_4F_4C_44
"""The advisory-lock key space of reservation ids ("HOLD"), apart from every other lock."""


EntryMark = tuple[str, str, datetime, str, tuple[str, ...], str]
"""Where an event falls among its meter's entries: (tenant, contract, period start, product,
cell, entry key)."""


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
    rated: list[tuple[str, str, RatedEvent, datetime, Decimal]]
    """(tenant id, fingerprint, outcome, event time, cost) per event rated in the batch."""
    outbox: list[tuple[str, Topic, str, OutboxPayload]]
    """(tenant id, topic, dedupe key, payload)."""
    captured: list[tuple[str, str]]
    """(tenant id, reservation id) of the reservations the batch captured."""


MarginInputs = tuple[
    dict[str, tuple[Decimal, Decimal]], list[tuple[str, str, Decimal]], dict[str, Decimal]
]
"""(revenue, cost) by product; (product, pool or overage, amount) drawn; cost basis by pool."""


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

    async def period_usage(
        self, tenant_id: str, contract_id: str, period_start: datetime, product_key: str
    ) -> Decimal:
        """A product's quantity counted so far in a contract's period (every cell added up)."""
        used = await self.pool.fetchval(
            "SELECT coalesce(sum(quantity), 0) FROM usage_counters WHERE tenant_id = $1"
            " AND contract_id = $2 AND period_start = $3 AND product_key = $4",
            tenant_id,
            contract_id,
            period_start,
            product_key,
        )
        assert isinstance(used, Decimal), f"a NUMERIC sum reads as Decimal, got {used!r}"
        return used

    async def margin_inputs(
        self, tenant_id: str, contract_id: str, period_start: datetime
    ) -> MarginInputs:
        """A period's (revenue, cost) per product, its draws, and the pools' cost basis."""
        async with self.pool.acquire() as conn:
            usage = await conn.fetch(
                "SELECT product_key, sum(amount) AS revenue, sum(cost) AS cost FROM usage_counters"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3"
                " GROUP BY product_key",
                tenant_id,
                contract_id,
                period_start,
            )
            draws = await conn.fetch(
                "SELECT product_key, pool_id, amount FROM period_draws"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3",
                tenant_id,
                contract_id,
                period_start,
            )
            pools = await conn.fetch(
                "SELECT pool_id, cost_basis FROM pools WHERE tenant_id = $1 AND contract_id = $2",
                tenant_id,
                contract_id,
            )
        return (
            {row["product_key"]: (row["revenue"], row["cost"]) for row in usage},
            [(row["product_key"], row["pool_id"], row["amount"]) for row in draws],
            {row["pool_id"]: row["cost_basis"] for row in pools},
        )

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
        """The committed outcomes among (tenant id, event id) keys (nothing locked)."""
        stored, _ = await self.read_locked(conn, {}, {}, keys, ())
        return stored

    async def lock_periods(
        self,
        conn: Connection,
        tenant_of: Mapping[str, str],
        periods: Mapping[tuple[str, datetime], datetime],
    ) -> dict[tuple[str, datetime], PeriodLedger]:
        """Create-or-lock each (contract, period start) row in key order; its spend and state.

        The ledgers come back without their counters and draws: `read_locked` reads those in
        a later statement, whose snapshot is taken after these locks are held (a read in this
        statement could miss what the lock's previous holder committed while we waited).
        `tenant_of` names each contract's tenant (every key of these tables leads with it).
        """
        keys = sorted(periods)
        # Contract ids are unique across tenants, so (contract, start) order is a total order
        # every writer shares, whatever tenants its batch mixes.
        rows = await conn.fetch(
            "INSERT INTO contract_periods AS p (tenant_id, contract_id, period_start, period_end)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])"
            " ORDER BY 2, 3"
            " ON CONFLICT (tenant_id, contract_id, period_start)"
            " DO UPDATE SET period_end = p.period_end"
            " RETURNING contract_id, period_start, spend, state",
            [tenant_of[c] for c, _ in keys],
            [c for c, _ in keys],
            [s for _, s in keys],
            [periods[k] for k in keys],
        )
        return {
            (row["contract_id"], row["period_start"]): PeriodLedger(row["spend"], row["state"])
            for row in rows
        }

    async def read_locked(
        self,
        conn: Connection,
        tenant_of: Mapping[str, str],
        ledgers: Mapping[tuple[str, datetime], PeriodLedger],
        events: Iterable[tuple[str, str]],
        accounts: Sequence[tuple[str, str]],
        marks: Iterable[EntryMark] = (),
    ) -> tuple[dict[tuple[str, str], StoredOutcome], dict[str, Account]]:
        """Under the period locks, in one statement: counters, draws, entries, replays, accounts.

        Fills the counters, draws and aggregation entries of `ledgers` in place (for entries,
        the stored one at or before each of `marks` and the first after it: all an aggregation
        needs to place the mark); returns the stored outcomes among (tenant, event id)
        `events`, and `accounts` ((account id, tenant) in account-id order, as
        `contract_accounts` gives them) locked and read.
        """
        periods = sorted(ledgers)
        pairs = sorted(set(events))
        wanted = sorted(set(marks))
        row = await conn.fetchrow(
            _READ_LOCKED,
            [tenant_of[c] for c, _ in periods],
            [c for c, _ in periods],
            [s for _, s in periods],
            [t for t, _ in pairs],
            [e for _, e in pairs],
            [t for _, t in accounts],
            [a for a, _ in accounts],
            *_columns([(*w[:4], json.dumps(list(w[4])), w[5]) for w in wanted], 6),
        )
        assert row is not None
        for contract_id, start, product, cell, quantity, amount, count, cost in row["counters"]:
            ledgers[(contract_id, start)].counters[(product, tuple(cell))] = Counter(
                quantity, amount, count, cost
            )
        for contract_id, start, product, cell, entry_key, value in row["entries"]:
            known = ledgers[(contract_id, start)].entries.setdefault((product, tuple(cell)), {})
            known[entry_key] = value
        for contract_id, start, product, pool_id, amount in row["draws"]:
            ledgers[(contract_id, start)].draws[(product, pool_id)] = amount
        stored = {
            (tenant_id, event_id): StoredOutcome(
                bytes(request_hash).decode(), RatedEvent.from_json(_json(result))
            )
            for tenant_id, event_id, request_hash, result in row["stored"]
        }
        locked = {
            account_id: Account(
                account_id, AccountKind(kind), currency, AccountFlags(flags), *totals
            )
            for account_id, kind, currency, flags, *totals in row["accounts"]
        }
        return stored, locked

    async def open_contract_accounts(
        self,
        conn: Connection,
        tenant_of: Mapping[str, str],
        products: Mapping[str, set[str]],
        currencies: Mapping[str, str],
        known: set[str],
        opened: set[str],
    ) -> None:
        """Open the revenue and overage accounts of the contracts' products not in `known`.

        Those opened are added to `opened`, so a warm server spends no round trip here; the
        caller learns them once the transaction commits.
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
        """Open what is missing of, then lock, every account the contracts' events may move."""
        await self.open_contract_accounts(conn, tenant_of, products, currencies, known, opened)
        _, locked = await self.read_locked(
            conn, tenant_of, {}, (), contract_accounts(tenant_of, products, pools)
        )
        return locked

    async def write_batch(self, conn: Connection, batch: BatchWrite) -> None:
        """Write what a batch rated, in one statement; the caller commits."""
        postings = [
            await balance_transfers(conn, tenant_id, transfers, batch.locked)
            for tenant_id, transfers in batch.tenant_transfers.items()
        ]
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
                c.cost,
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
            for tenant_id, fingerprint, result, at, _ in batch.rated
        ]
        outbox_rows = [
            (tenant_id, topic.value, key, json.dumps(payload))
            for tenant_id, topic, key, payload in batch.outbox
        ]
        # One statement, every table: each round trip costs the hot path more than the work.
        await conn.execute(
            _WRITE_BATCH,
            *posting_columns(postings),
            *_columns(counter_rows, 9),
            *_columns(draw_rows, 6),
            *_columns(period_rows, 5),
            *_columns(rated_rows, 8),
            *_columns(outbox_rows, 4),
            *_columns(batch.captured, 2),
            *_columns(entry_rows, 7),
            [cost for *_, cost in batch.rated],
        )


def contract_accounts(
    tenant_of: Mapping[str, str],
    products: Mapping[str, set[str]],
    pools: Mapping[str, Sequence[Pool]],
) -> list[tuple[str, str]]:
    """(account id, tenant) of every account the contracts' events may move, in id order.

    Account-id order is the order every writer locks accounts in. Pools come from the
    contracts' books: a pool created after the book was read is not drawn until the book
    refreshes, so it needs no lock now.
    """
    return sorted(
        {(revenue_account_id(c, k), tenant_of[c]) for c, keys in products.items() for k in keys}
        | {(overage_account_id(c), tenant_of[c]) for c in products}
        | {
            (pool_account_id(p.pool_id), tenant_of[c])
            for c in products
            for p in pools.get(c, ())
            if p.kind is not CommitmentKind.POSTPAID_COMMIT
        }
    )


def entries_near_marks(first: int) -> str:
    """The aggregation entries at or before each mark and just after it, as an ARRAY of rows.

    Its parameters, from `$first`: the marks' tenants, contracts, period starts, products,
    cells (JSON text arrays) and entry keys. Each is two probes of the entries' key.
    """
    t, c, s, p, cell, mark = (f"${n}" for n in range(first, first + 6))
    near = (
        "SELECT entry_key, value FROM aggregation_entries a"
        " WHERE a.tenant_id = k.t AND a.contract_id = k.c AND a.period_start = k.s"
        " AND a.product_key = k.p AND a.cell = k.cell AND a.entry_key {} k.mark"
        " ORDER BY a.entry_key {} LIMIT 1"
    )
    return f"""ARRAY(
        SELECT ROW(k.c, k.s, k.p, k.cell, e.entry_key, e.value)
        FROM (
            SELECT t, c, s, p, ARRAY(SELECT json_array_elements_text(cell::json)) AS cell, mark
            FROM unnest({t}::text[], {c}::text[], {s}::timestamptz[], {p}::text[],
                {cell}::text[], {mark}::text[]) AS v(t, c, s, p, cell, mark)
        ) k
        CROSS JOIN LATERAL (
            ({near.format("<=", "DESC")}) UNION ALL ({near.format(">", "ASC")})
        ) e
    )"""


_READ_LOCKED = f"""
WITH periods AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(t, c, s)
), locked AS MATERIALIZED (
    SELECT a.account_id, a.kind, a.currency, a.flags, a.debits_posted, a.credits_posted,
        a.debits_pending, a.credits_pending
    FROM accounts a JOIN unnest($6::text[], $7::text[]) AS k(t, id)
        ON a.tenant_id = k.t AND a.account_id = k.id
    ORDER BY a.account_id FOR UPDATE OF a
)
SELECT
    ARRAY(SELECT ROW(u.contract_id, u.period_start, u.product_key, u.cell, u.quantity, u.amount,
            u.events, u.cost)
        FROM usage_counters u JOIN periods k
            ON u.tenant_id = k.t AND u.contract_id = k.c AND u.period_start = k.s) AS counters,
    ARRAY(SELECT ROW(d.contract_id, d.period_start, d.product_key, d.pool_id, d.amount)
        FROM period_draws d JOIN periods k
            ON d.tenant_id = k.t AND d.contract_id = k.c AND d.period_start = k.s) AS draws,
    ARRAY(SELECT ROW(r.tenant_id, r.event_id, r.request_hash, r.result)
        FROM rated_events r JOIN unnest($4::text[], $5::text[]) AS k(t, e)
            ON r.tenant_id = k.t AND r.event_id = k.e) AS stored,
    ARRAY(SELECT ROW(locked.*) FROM locked) AS accounts,
    {entries_near_marks(8)} AS entries
"""
"""Counters and draws of locked periods ($1–$3), stored outcomes ($4–$5), accounts to lock
($6–$7), aggregation entries next to marks ($8–$13). Under READ COMMITTED the statement's
snapshot is taken after the period locks, so it sees whatever their previous holders
committed; `FOR UPDATE` reads each account as its latest committed version, whenever its lock
is granted."""

_WRITE_BATCH = f"""
WITH {WRITE_POSTINGS_CTES}, counters AS (
    INSERT INTO usage_counters AS u (tenant_id, contract_id, period_start, product_key, cell,
        quantity, amount, events, cost)
    SELECT t, c, s, p, ARRAY(SELECT json_array_elements_text(cell::json)), q, a, e, k
    FROM unnest($17::text[], $18::text[], $19::timestamptz[], $20::text[], $21::text[],
        $22::numeric[], $23::numeric[], $24::bigint[], $25::numeric[])
        AS v(t, c, s, p, cell, q, a, e, k)
    ON CONFLICT (tenant_id, contract_id, period_start, product_key, cell) DO UPDATE
    SET quantity = excluded.quantity, amount = excluded.amount, events = excluded.events,
        cost = excluded.cost
    RETURNING 1
), draws AS (
    INSERT INTO period_draws (tenant_id, contract_id, period_start, product_key, pool_id,
        amount)
    SELECT * FROM unnest($26::text[], $27::text[], $28::timestamptz[], $29::text[],
        $30::text[], $31::numeric[])
    ON CONFLICT (tenant_id, contract_id, period_start, product_key, pool_id)
    DO UPDATE SET amount = excluded.amount
    RETURNING 1
), periods AS (
    UPDATE contract_periods p SET spend = v.spend, overage = v.overage
    FROM unnest($32::text[], $33::text[], $34::timestamptz[], $35::numeric[], $36::numeric[])
        AS v(t, c, s, spend, overage)
    WHERE p.tenant_id = v.t AND p.contract_id = v.c AND p.period_start = v.s
    RETURNING 1
), rated AS (
    INSERT INTO rated_events (tenant_id, event_id, request_hash, contract_id, event_time,
        period_start, charge, result, cost)
    SELECT * FROM unnest($37::text[], $38::text[], $39::bytea[], $40::text[],
        $41::timestamptz[], $42::timestamptz[], $43::numeric[], $44::jsonb[], $58::numeric[])
    RETURNING 1
), announced AS (
    INSERT INTO outbox (tenant_id, topic, dedupe_key, payload)
    SELECT * FROM unnest($45::text[], $46::text[], $47::text[], $48::jsonb[])
    ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
    RETURNING 1
), captured AS (
    UPDATE reservations r SET state = 'captured', resolved_at = now()
    FROM unnest($49::text[], $50::text[]) AS k(t, id)
    WHERE r.tenant_id = k.t AND r.reservation_id = k.id
    RETURNING 1
), entries AS (
    INSERT INTO aggregation_entries AS e (tenant_id, contract_id, period_start, product_key,
        cell, entry_key, value)
    SELECT t, c, s, p, ARRAY(SELECT json_array_elements_text(cell::json)), k, v
    FROM unnest($51::text[], $52::text[], $53::timestamptz[], $54::text[], $55::text[],
        $56::text[], $57::numeric[]) AS v(t, c, s, p, cell, k, v)
    ON CONFLICT (tenant_id, contract_id, period_start, product_key, cell, entry_key)
    DO UPDATE SET value = excluded.value
    RETURNING 1
)
SELECT (SELECT count(*) FROM totals), (SELECT count(*) FROM moved),
    (SELECT count(*) FROM counters), (SELECT count(*) FROM draws),
    (SELECT count(*) FROM periods), (SELECT count(*) FROM rated),
    (SELECT count(*) FROM announced), (SELECT count(*) FROM captured),
    (SELECT count(*) FROM entries)
"""
"""Everything a batch writes, in one round trip: postings ($1–$16), counters, draws,
periods, rated events, outbox rows, captured reservations, aggregation entries, and the rated
events' costs ($58)."""


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
        current[pool.pool_id] = pool.holding(account.credit_balance, account.debits_pending)
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
