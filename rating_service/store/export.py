"""Exports' SQL: a tenant's rows streamed through a server-side cursor, and exporters' positions.

A one-shot export reads in one read-only REPEATABLE READ transaction (one consistent snapshot
however long it takes) through a cursor, a page at a time: nothing is loaded whole.

A continuous exporter reads rated events in commit order: by `written_xid` (the id of the
transaction that wrote the row, migration 0014), then event id. It plans a batch only up to
the oldest transaction still running (`pg_snapshot_xmin`): every transaction below it has
ended, so no row can appear below a planned batch's end later; a row written by a
transaction still running will have a `written_xid` at or above that horizon, after the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from rating_service.core.export import COLUMNS, START, ExportBatch, ExportKind, Position, Row

_SELECT: dict[ExportKind, str] = {
    ExportKind.EVENTS: (
        "SELECT event_id, contract_id, event_time, period_start,"
        " result->>'invoice_currency', charge, created_at, result::text"
        " FROM rated_events WHERE tenant_id = $1"
    ),
    ExportKind.INVOICES: (
        "SELECT invoice_id, number, contract_id, customer_id, billing_date, revision,"
        " period_start, period_end, currency, state, total, created_at, issued_at, paid_at,"
        " voided_at FROM invoices WHERE tenant_id = $1"
    ),
    ExportKind.LEDGER: (
        "SELECT seq, transfer_id, debit_account_id, credit_account_id, amount, flags,"
        " pending_id, code, reference, memo, created_at FROM transfers WHERE tenant_id = $1"
    ),
}
"""Each kind's columns (in `COLUMNS` order) for one tenant."""

_RANGE: dict[ExportKind, tuple[str, str]] = {
    ExportKind.EVENTS: ("event_time", "written_xid, event_id"),
    ExportKind.INVOICES: ("billing_date", "billing_date, invoice_id"),
    ExportKind.LEDGER: ("created_at", "seq"),
}
"""What `since` / `until` compare (see core.export.SINCE_COLUMN), and the order rows go out in
(events in the commit order the index keeps, so no sort holds the first page back)."""

_EVENTS_AFTER = (
    f"{_SELECT[ExportKind.EVENTS]} AND (written_xid, event_id) > ($2, $3)"
    " AND (written_xid, event_id) <= ($4, $5) ORDER BY written_xid, event_id"
)

_PLAN = """
WITH readable AS (
    SELECT written_xid, event_id FROM rated_events
    WHERE tenant_id = $1 AND (written_xid, event_id) > ($2, $3)
        AND written_xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    ORDER BY written_xid, event_id
    LIMIT $4
)
SELECT written_xid, event_id FROM readable ORDER BY written_xid DESC, event_id DESC LIMIT 1
"""
"""The end of the next batch: at most $4 events after the position, all below the horizon."""


@dataclass(frozen=True, slots=True)
class ExportPosition:
    """Where a tenant's exporter to one destination has got to, and its planned batch."""

    committed: Position
    next_batch: int
    pending: ExportBatch | None


class ExportStore:
    """Reads a tenant's rows for export, and keeps continuous exporters' positions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def stream(
        self,
        tenant_id: str,
        kind: ExportKind,
        since: datetime | None,
        until: datetime | None,
        page_size: int = 2000,
    ) -> AsyncIterator[list[Row]]:
        """The tenant's rows of `kind` with `since <= moment < until`, a page at a time."""
        moment, order = _RANGE[kind]
        query = (
            f"{_SELECT[kind]} AND ($2::timestamptz IS NULL OR {moment} >= $2)"
            f" AND ($3::timestamptz IS NULL OR {moment} < $3) ORDER BY {order}"
        )
        width = len(COLUMNS[kind])
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            cursor = await conn.cursor(query, tenant_id, since, until)
            while True:
                records = await cursor.fetch(page_size)
                if not records:
                    return
                yield [tuple(record[i] for i in range(width)) for record in records]
                if len(records) < page_size:
                    return

    async def position(self, tenant_id: str, destination: str) -> ExportPosition:
        """The exporter's position (the start, for one that never ran)."""
        row = await self._pool.fetchrow(
            "SELECT written_xid, event_id, batch, pending_xid, pending_event_id"
            " FROM export_positions WHERE tenant_id = $1 AND destination = $2",
            tenant_id,
            destination,
        )
        return _position(row)

    async def plan_batch(
        self, tenant_id: str, destination: str, batch_size: int
    ) -> ExportBatch | None:
        """The batch to export next: the one planned and not committed, else a new one of at
        most `batch_size` events (stored as planned before it is returned); None when no
        event is ready to export."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO export_positions (tenant_id, destination) VALUES ($1, $2)"
                " ON CONFLICT (tenant_id, destination) DO NOTHING",
                tenant_id,
                destination,
            )
            position = _position(
                await conn.fetchrow(
                    "SELECT written_xid, event_id, batch, pending_xid, pending_event_id"
                    " FROM export_positions WHERE tenant_id = $1 AND destination = $2"
                    " FOR UPDATE",
                    tenant_id,
                    destination,
                )
            )
            if position.pending is not None:
                return position.pending
            start = position.committed
            end = await conn.fetchrow(
                _PLAN, tenant_id, start.written_xid, start.event_id, batch_size
            )
            if end is None:
                return None
            await conn.execute(
                "UPDATE export_positions SET pending_xid = $3, pending_event_id = $4,"
                " updated_at = now() WHERE tenant_id = $1 AND destination = $2",
                tenant_id,
                destination,
                end["written_xid"],
                end["event_id"],
            )
            return ExportBatch(
                position.next_batch, start, Position(end["written_xid"], end["event_id"])
            )

    async def batch_events(self, tenant_id: str, batch: ExportBatch) -> list[Row]:
        """The rated events of a planned batch, in commit order (the same rows every time)."""
        records = await self._pool.fetch(
            _EVENTS_AFTER,
            tenant_id,
            batch.start.written_xid,
            batch.start.event_id,
            batch.end.written_xid,
            batch.end.event_id,
        )
        width = len(COLUMNS[ExportKind.EVENTS])
        return [tuple(record[i] for i in range(width)) for record in records]

    async def commit_batch(self, tenant_id: str, destination: str, batch: ExportBatch) -> bool:
        """Move the position past a batch whose files are written; False if it was already."""
        status = await self._pool.execute(
            "UPDATE export_positions SET written_xid = $3, event_id = $4, batch = batch + 1,"
            " pending_xid = NULL, pending_event_id = NULL, updated_at = now()"
            " WHERE tenant_id = $1 AND destination = $2 AND batch = $5"
            " AND pending_xid IS NOT NULL",
            tenant_id,
            destination,
            batch.end.written_xid,
            batch.end.event_id,
            batch.number,
        )
        return bool(status == "UPDATE 1")


def _position(row: asyncpg.Record | None) -> ExportPosition:
    """An `export_positions` row as a position (no row: the start, batch 1)."""
    if row is None:
        return ExportPosition(START, 1, None)
    committed = Position(row["written_xid"], row["event_id"])
    pending = (
        None
        if row["pending_xid"] is None
        else ExportBatch(
            row["batch"], committed, Position(row["pending_xid"], row["pending_event_id"])
        )
    )
    return ExportPosition(committed, row["batch"], pending)
