"""The ledger in PostgreSQL: lock accounts in a fixed order, apply transfers purely, write both.

Every movement of money (usage, grants, top-ups, adjustments, holds) goes through
`post_transfers`, so the journal rules (`rating_service.core.ledger.journal.apply_transfers`) are
checked in one place and the table CHECKs stand behind them. Raw asyncpg: this is on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from rating_service.core.ledger.accounts import DEFAULT_FLAGS, Account, AccountFlags, AccountKind
from rating_service.core.ledger.invariants import DriftReport, recompute
from rating_service.core.ledger.journal import apply_transfers
from rating_service.core.ledger.transfers import Transfer, TransferCode, TransferFlags
from rating_service.store.database import Connection

_ACCOUNT_COLUMNS = (
    "account_id, kind, currency, flags, debits_posted, credits_posted, debits_pending,"
    " credits_pending"
)


async def open_accounts(
    conn: Connection,
    tenant_id: str,
    contract_id: str | None,
    accounts: Iterable[tuple[str, AccountKind, str | None]],
    currency: str,
) -> None:
    """Create accounts (id, kind, product) that do not exist yet; existing ones are kept."""
    rows = [
        (account_id, tenant_id, contract_id, kind.value, product, currency, _flags(kind))
        for account_id, kind, product in accounts
    ]
    if rows:
        await conn.executemany(
            "INSERT INTO accounts (account_id, tenant_id, contract_id, kind, product_key,"
            " currency, flags) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (tenant_id, account_id) DO NOTHING",
            rows,
        )


async def lock_accounts(
    conn: Connection, tenant_id: str, account_ids: Iterable[str]
) -> dict[str, Account]:
    """Lock accounts in account-id order (every writer does, so none deadlocks) and read them."""
    ids = sorted(set(account_ids))
    rows = await conn.fetch(
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts"
        " WHERE tenant_id = $1 AND account_id = ANY($2::text[])"
        " ORDER BY account_id FOR UPDATE",
        tenant_id,
        ids,
    )
    return {row["account_id"]: account_from_row(row) for row in rows}


async def open_pending(
    conn: Connection, tenant_id: str, pending_ids: Iterable[str]
) -> dict[str, Transfer]:
    """The pending transfers among `pending_ids` that nothing has posted or voided yet."""
    ids = sorted(set(pending_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT p.* FROM transfers p WHERE p.tenant_id = $1 AND p.transfer_id = ANY($2::text[])"
        " AND p.flags = $3 AND NOT EXISTS (SELECT 1 FROM transfers r"
        " WHERE r.tenant_id = p.tenant_id AND r.pending_id = p.transfer_id)",
        tenant_id,
        ids,
        TransferFlags.PENDING.value,
    )
    return {row["transfer_id"]: transfer_from_row(row) for row in rows}


async def post_transfers(
    conn: Connection,
    tenant_id: str,
    transfers: Sequence[Transfer],
    locked: Mapping[str, Account] | None = None,
) -> dict[str, Account]:
    """Apply transfers to their accounts (locking them unless `locked` already holds them).

    All or nothing: a transfer that breaks a balance rule raises FailedPrecondition before
    anything is written. Returns the accounts after the transfers.
    """
    posting = await balance_transfers(conn, tenant_id, transfers, locked)
    if transfers:
        await conn.execute(_WRITE_POSTINGS, *posting_columns([posting]))
    return posting.accounts


@dataclass(frozen=True, slots=True)
class Posting:
    """A tenant's transfers checked against its locked accounts, and the accounts after them."""

    tenant_id: str
    transfers: Sequence[Transfer]
    accounts: dict[str, Account]
    """Every account locked for the posting, as the transfers leave it."""
    changed: tuple[Account, ...]
    """The accounts the transfers move, in account-id order."""


async def balance_transfers(
    conn: Connection,
    tenant_id: str,
    transfers: Sequence[Transfer],
    locked: Mapping[str, Account] | None = None,
) -> Posting:
    """Check transfers by the journal rules and compute the accounts after them; write nothing.

    Accounts missing from `locked` are locked now; a transfer that breaks a balance rule raises
    FailedPrecondition. The hot path writes the posting with the rest of its batch
    (`posting_columns`), everyone else through `post_transfers`.
    """
    accounts = dict(locked) if locked is not None else {}
    if not transfers:
        return Posting(tenant_id, (), accounts, ())
    names = {t.debit_account_id for t in transfers} | {t.credit_account_id for t in transfers}
    missing = names - set(accounts)
    if missing:
        accounts.update(await lock_accounts(conn, tenant_id, missing))
    pending = await open_pending(conn, tenant_id, (t.pending_id for t in transfers if t.pending_id))
    after = apply_transfers(accounts, transfers, pending)
    return Posting(tenant_id, transfers, after, tuple(after[name] for name in sorted(names)))


def posting_columns(postings: Iterable[Posting]) -> list[list[Any]]:
    """Postings as the 16 arrays `WRITE_POSTINGS_CTES` takes ($1–$16): accounts, then transfers."""
    postings = list(postings)
    changed = [(p.tenant_id, a) for p in postings for a in p.changed]
    moved = [(p.tenant_id, t) for p in postings for t in p.transfers]
    return [
        [t for t, _ in changed],
        [a.account_id for _, a in changed],
        [a.debits_posted for _, a in changed],
        [a.credits_posted for _, a in changed],
        [a.debits_pending for _, a in changed],
        [a.credits_pending for _, a in changed],
        [t for t, _ in moved],
        [m.transfer_id for _, m in moved],
        [m.debit_account_id for _, m in moved],
        [m.credit_account_id for _, m in moved],
        [m.amount for _, m in moved],
        [m.flags.value for _, m in moved],
        [m.pending_id for _, m in moved],
        [m.code.value for _, m in moved],
        [m.reference for _, m in moved],
        [m.memo for _, m in moved],
    ]


WRITE_POSTINGS_CTES = """
totals AS (
    UPDATE accounts a SET debits_posted = v.dp, credits_posted = v.cp,
        debits_pending = v.dq, credits_pending = v.cq
    FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[],
        $6::numeric[]) AS v(t, id, dp, cp, dq, cq)
    WHERE a.tenant_id = v.t AND a.account_id = v.id
    RETURNING 1
), moved AS (
    INSERT INTO transfers (tenant_id, transfer_id, debit_account_id, credit_account_id, amount,
        flags, pending_id, code, reference, memo)
    SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[],
        $12::int[], $13::text[], $14::text[], $15::text[], $16::text[])
    RETURNING 1
)"""
"""Account totals and transfers ($1–$16, as `posting_columns` gives them) as two CTEs."""

_WRITE_POSTINGS = (
    f"WITH {WRITE_POSTINGS_CTES} SELECT (SELECT count(*) FROM totals), (SELECT count(*) FROM moved)"
)


async def transfers_by_reference(
    conn: Connection, tenant_id: str, reference: str
) -> list[Transfer]:
    """The transfers an operation made (an idempotent retry finds them here)."""
    rows = await conn.fetch(
        "SELECT * FROM transfers WHERE tenant_id = $1 AND reference = $2 ORDER BY transfer_id",
        tenant_id,
        reference,
    )
    return [transfer_from_row(row) for row in rows]


def account_from_row(row: asyncpg.Record) -> Account:
    """An Account from its row."""
    return Account(
        str(row["account_id"]),
        AccountKind(str(row["kind"])),
        str(row["currency"]),
        AccountFlags(int(row["flags"])),
        _decimal(row["debits_posted"]),
        _decimal(row["credits_posted"]),
        _decimal(row["debits_pending"]),
        _decimal(row["credits_pending"]),
    )


def transfer_from_row(row: asyncpg.Record) -> Transfer:
    """A Transfer from its row."""
    pending = row["pending_id"]
    return Transfer(
        str(row["transfer_id"]),
        str(row["debit_account_id"]),
        str(row["credit_account_id"]),
        _decimal(row["amount"]),
        TransferCode(str(row["code"])),
        str(row["reference"]),
        TransferFlags(int(row["flags"])),
        None if pending is None else str(pending),
        str(row["memo"]),
    )


def _decimal(value: object) -> Decimal:
    assert isinstance(value, Decimal), f"NUMERIC columns read as Decimal, got {value!r}"
    return value


def _flags(kind: AccountKind) -> int:
    return DEFAULT_FLAGS.get(kind, AccountFlags.NONE).value


async def reconcile(conn: Connection) -> dict[str, DriftReport]:
    """Replay every tenant's journal from zero against its accounts; tenant → drift report."""
    reports: dict[str, DriftReport] = {}
    for tenant in await conn.fetch("SELECT tenant_id FROM tenants ORDER BY tenant_id"):
        reports[tenant["tenant_id"]], _ = await reconcile_tenant(conn, tenant["tenant_id"])
    return reports


async def reconcile_tenant(conn: Connection, tenant_id: str) -> tuple[DriftReport, int]:
    """One tenant's journal replayed from zero against its accounts: the report, and how
    many accounts were checked."""
    accounts = {
        row["account_id"]: account_from_row(row)
        for row in await conn.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE tenant_id = $1", tenant_id
        )
    }
    journal = [
        transfer_from_row(row)
        for row in await conn.fetch(
            "SELECT * FROM transfers WHERE tenant_id = $1 ORDER BY seq", tenant_id
        )
    ]
    return recompute(accounts, journal), len(accounts)
