"""What an export writes: its tables' columns, and where a continuous export puts each row.

Pure: the store reads the rows, the service writes the files. Amounts are exported as decimal
strings in plain notation, never as floats and never as a fixed-scale decimal: the exact
context (`rating_service.core.money`) carries up to 50 significant digits at any scale (a
unit price of 24 fraction digits times a quantity of 24 is exact to 48), more than Parquet's
decimal128 (38 digits) holds, and no single scale of decimal256 fits both ends. A warehouse
casts the column to the decimal it wants (`CAST(charge AS DECIMAL(38, 12))`), knowing what it
rounds. Timestamps are UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class ExportKind(StrEnum):
    """What a one-shot export reads: rated events, invoices or ledger transfers."""

    EVENTS = "events"
    INVOICES = "invoices"
    LEDGER = "ledger"


class ColumnType(StrEnum):
    """How a column is written: Parquet's type for it, and its CSV text."""

    TEXT = "text"
    INTEGER = "integer"
    AMOUNT = "amount"
    """An exact decimal, as its plain-notation string (see the module's note)."""
    TIMESTAMP = "timestamp"
    """A UTC moment: Parquet timestamp[us, UTC]; ISO 8601 with `+00:00` in CSV."""
    JSON = "json"
    """A JSON document, as its text."""


@dataclass(frozen=True, slots=True)
class ExportColumn:
    """One exported column: its name, its type, and whether it may be empty (null)."""

    name: str
    type: ColumnType
    nullable: bool = False


_T, _I, _A, _S, _J = (
    ColumnType.TEXT,
    ColumnType.INTEGER,
    ColumnType.AMOUNT,
    ColumnType.TIMESTAMP,
    ColumnType.JSON,
)

COLUMNS: dict[ExportKind, tuple[ExportColumn, ...]] = {
    ExportKind.EVENTS: (
        ExportColumn("event_id", _T),
        ExportColumn("contract_id", _T),
        ExportColumn("event_time", _S),
        ExportColumn("period_start", _S),
        ExportColumn("currency", _T, nullable=True),  # from the stored result
        ExportColumn("charge", _A),
        ExportColumn("rated_at", _S),
        ExportColumn("result", _J),
    ),
    ExportKind.INVOICES: (
        ExportColumn("invoice_id", _T),
        ExportColumn("number", _T, nullable=True),
        ExportColumn("contract_id", _T),
        ExportColumn("customer_id", _T),
        ExportColumn("billing_date", _S),
        ExportColumn("revision", _I),
        ExportColumn("period_start", _S),
        ExportColumn("period_end", _S),
        ExportColumn("currency", _T),
        ExportColumn("state", _T),
        ExportColumn("total", _A),
        ExportColumn("created_at", _S),
        ExportColumn("issued_at", _S, nullable=True),
        ExportColumn("paid_at", _S, nullable=True),
        ExportColumn("voided_at", _S, nullable=True),
    ),
    ExportKind.LEDGER: (
        ExportColumn("seq", _I),
        ExportColumn("transfer_id", _T),
        ExportColumn("debit_account_id", _T),
        ExportColumn("credit_account_id", _T),
        ExportColumn("amount", _A),
        ExportColumn("flags", _I),
        ExportColumn("pending_id", _T, nullable=True),
        ExportColumn("code", _T),
        ExportColumn("reference", _T),
        ExportColumn("memo", _T),
        ExportColumn("created_at", _S),
    ),
}
"""Each kind's columns, in the order files carry them."""

SINCE_COLUMN: dict[ExportKind, str] = {
    ExportKind.EVENTS: "event_time",
    ExportKind.INVOICES: "billing_date",
    ExportKind.LEDGER: "created_at",
}
"""The moment `--since` / `--until` compare: when the event happened, the invoice's billing
date, when the transfer was posted."""

Row = tuple[Any, ...]
"""One exported row, its values in its kind's column order (amounts still Decimal)."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the rated events' commit order: after every row at or below it.

    Rows are ordered by the id of the transaction that wrote them, then by event id; the
    store only reads up to the oldest transaction still running, so nothing is ever written
    below a position once it was read past.
    """

    written_xid: int
    event_id: str


START = Position(0, "")
"""Before the first rated event."""


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """The rated events after `start` up to `end` (inclusive), exported as batch `number`.

    A batch is planned (stored) before any file is written, so that after a crash the same
    rows go to the same files again: its number names them.
    """

    number: int
    start: Position
    end: Position


def partition_path(event_time: datetime, batch: int) -> str:
    """Where an event of batch `batch` goes: its UTC hour's partition, the batch's file.

    `dt=2026-12-03/hour=09/part-0000000042.parquet`: Hive-style, so warehouses prune by
    partition; the name depends only on the batch, so rewriting a batch replaces its files.
    """
    at = event_time.astimezone(UTC)
    return f"dt={at:%Y-%m-%d}/hour={at:%H}/part-{batch:010d}.parquet"


def by_partition(rows: Iterable[Row], batch: int, time_index: int) -> dict[str, list[Row]]:
    """A batch's rows grouped by the partition file each goes to, in their order."""
    files: dict[str, list[Row]] = {}
    for row in rows:
        files.setdefault(partition_path(row[time_index], batch), []).append(row)
    return files


def column_index(kind: ExportKind, name: str) -> int:
    """Where column `name` sits in `kind`'s rows."""
    names: Sequence[str] = [column.name for column in COLUMNS[kind]]
    return names.index(name)
