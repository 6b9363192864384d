"""Exports to a warehouse: one-shot files of a tenant's rows, and a continuous Parquet feed.

A one-shot export (`rating export events|invoices|ledger`) streams a tenant's rows from one
snapshot into a CSV or Parquet file (a row group per page), at a local path or any fsspec URL.

The continuous exporter writes a tenant's rated events, exactly once each, as hourly
partitioned Parquet files under a destination directory (a path or fsspec URL). Its loop:

1. plan the next batch and store it (`export_positions.pending_*`): the events after the
   committed position, up to the oldest transaction still running (store/export.py says why
   none can appear below it later), at most `batch_size` of them;
2. write the batch's files, one per UTC hour its events fall in, each named by the batch
   number, each atomically (a hidden temporary file, fsynced, renamed; an object store's put);
3. commit: the position moves to the batch's end, the batch number on by one.

A crash before 3 leaves the batch planned: the next run exports the same rows (the range is
fixed, and every transaction below its end had ended) to the same file names, replacing
whatever the first attempt wrote. A crash after 3 leaves nothing to redo. So each event is in
exactly one file, once every batch is committed; readers skip hidden (`.`) files.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from rating_service.core.export import (
    COLUMNS,
    ColumnType,
    ExportColumn,
    ExportKind,
    Row,
    by_partition,
    column_index,
)
from rating_service.core.money import format_decimal
from rating_service.failpoints import EXPORT_AFTER_FILES_WRITTEN, Failpoints
from rating_service.store.export import ExportStore

log = logging.getLogger("rating.export")


class ExportFormat(StrEnum):
    """The file format of a one-shot export."""

    CSV = "csv"
    PARQUET = "parquet"


_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.TEXT: pa.string(),
    ColumnType.INTEGER: pa.int64(),
    ColumnType.AMOUNT: pa.string(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    ColumnType.JSON: pa.string(),
}
"""Each column type in Parquet (amounts as exact decimal strings: core/export.py says why)."""


def arrow_schema(columns: Sequence[ExportColumn]) -> pa.Schema:
    """The Parquet schema of an export's columns."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in columns])


def _exported(value: Any, column: ExportColumn) -> Any:
    """A value as the file carries it: amounts as plain decimal strings, moments in UTC."""
    if value is None:
        return None
    if column.type is ColumnType.AMOUNT:
        return format_decimal(value)
    if column.type is ColumnType.TIMESTAMP:
        return value.astimezone(UTC)
    return value


def arrow_table(rows: Sequence[Row], columns: Sequence[ExportColumn]) -> pa.Table:
    """Rows as an Arrow table of the columns' schema."""
    schema = arrow_schema(columns)
    arrays = [
        pa.array([_exported(row[i], column) for row in rows], type=schema.field(i).type)
        for i, column in enumerate(columns)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


class _RowWriter(Protocol):
    """Writes pages of rows to an open file."""

    def write(self, rows: Sequence[Row]) -> None:
        """Write one page."""

    def close(self) -> None:
        """Finish the file (Parquet's footer)."""


class _CsvRows:
    """CSV with a header; moments ISO 8601 in UTC, amounts plain decimals, null empty."""

    def __init__(self, file: IO[bytes], columns: Sequence[ExportColumn]) -> None:
        self._text = io.TextIOWrapper(file, encoding="utf-8", newline="")
        self._columns = columns
        self._csv = csv.writer(self._text)
        self._csv.writerow([c.name for c in columns])

    def write(self, rows: Sequence[Row]) -> None:
        """Write one page of rows."""
        for row in rows:
            self._csv.writerow(
                [
                    "" if value is None else _text(_exported(value, column))
                    for value, column in zip(row, self._columns, strict=True)
                ]
            )

    def close(self) -> None:
        """Flush the text layer, leaving the file to its opener."""
        self._text.flush()
        self._text.detach()


def _text(value: Any) -> str:
    """A CSV cell."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


class _ParquetRows:
    """Parquet, one row group per page."""

    def __init__(self, file: IO[bytes], columns: Sequence[ExportColumn]) -> None:
        self._columns = columns
        self._writer = pq.ParquetWriter(file, arrow_schema(columns))

    def write(self, rows: Sequence[Row]) -> None:
        """Write one page of rows as a row group."""
        self._writer.write_table(arrow_table(rows, self._columns))

    def close(self) -> None:
        """Write the footer."""
        self._writer.close()


async def export_rows(
    store: ExportStore,
    tenant_id: str,
    kind: ExportKind,
    output: str,
    file_format: ExportFormat,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    on_progress: Callable[[int], None] = lambda rows: None,
    page_size: int = 2000,
) -> int:
    """Stream the tenant's rows of `kind` to `output` (a path or fsspec URL); how many.

    Pages are written as they arrive (`on_progress` hears the running count after each), so
    memory holds one page whatever the table's size.
    """
    columns = COLUMNS[kind]
    written = 0
    fs, path = fsspec.core.url_to_fs(output)
    # A local file is written under a hidden name and renamed when complete, so an export
    # cut short leaves no file that looks whole; an object store uploads on close.
    local = isinstance(fs, LocalFileSystem)
    directory, name = os.path.split(path)
    target = os.path.join(directory, f".{name}.tmp") if local else path
    try:
        with fs.open(target, "wb") as file:
            writer: _RowWriter = (
                _CsvRows(file, columns)
                if file_format is ExportFormat.CSV
                else _ParquetRows(file, columns)
            )
            async for page in store.stream(tenant_id, kind, since, until, page_size):
                await asyncio.to_thread(writer.write, page)
                written += len(page)
                on_progress(written)
            if written == 0 and file_format is ExportFormat.PARQUET:
                writer.write([])  # an empty file still carries the schema
            writer.close()
        if local:
            os.replace(target, path)
    finally:
        if local:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)  # cut short: nothing half-written stays
    return written


class ContinuousExporter:
    """Exports one tenant's rated events to a destination, batch by batch, exactly once each."""

    def __init__(
        self,
        store: ExportStore,
        tenant_id: str,
        destination: str,
        *,
        batch_size: int = 10_000,
        poll_seconds: float = 5.0,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._store = store
        self._tenant_id = tenant_id
        self.destination = destination.rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.destination)
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._failpoints = failpoints or Failpoints()
        self._time_index = column_index(ExportKind.EVENTS, "event_time")

    async def export_batch(self) -> int | None:
        """Export the next batch (or finish the one a crash interrupted); its event count, or
        None when no event was ready."""
        batch = await self._store.plan_batch(self._tenant_id, self.destination, self._batch_size)
        if batch is None:
            return None
        rows = await self._store.batch_events(self._tenant_id, batch)
        files = by_partition(rows, batch.number, self._time_index)
        await asyncio.to_thread(self._write_files, files)
        self._failpoints.hit(EXPORT_AFTER_FILES_WRITTEN)
        await self._store.commit_batch(self._tenant_id, self.destination, batch)
        log.info(
            "exported a batch",
            extra={"tenant_id": self._tenant_id, "batch": batch.number, "events": len(rows)},
        )
        return len(rows)

    async def catch_up(self) -> int:
        """Export batches until none is ready; how many events."""
        exported = 0
        while (count := await self.export_batch()) is not None:
            exported += count
        return exported

    async def run(self) -> None:
        """Export until cancelled; a failure is logged and retried on the next poll."""
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage must not end the loop
                log.warning(
                    "export failed; retrying",
                    extra={"tenant_id": self._tenant_id, "error": str(error)},
                )
            await asyncio.sleep(self._poll_seconds)

    def _write_files(self, files: dict[str, list[Row]]) -> None:
        """Write each partition file of a batch atomically, replacing an earlier attempt's."""
        columns = COLUMNS[ExportKind.EVENTS]
        for relative, rows in files.items():
            buffer = io.BytesIO()
            pq.write_table(arrow_table(rows, columns), buffer)
            self._put(f"{self._root}/{relative}", buffer.getvalue())

    def _put(self, path: str, data: bytes) -> None:
        """Make `path` hold `data`, all or nothing, and durably on a local disk."""
        if not isinstance(self._fs, LocalFileSystem):
            self._fs.pipe_file(path, data)  # an object store's put is all or nothing
            return
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{name}.tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        with _opened_directory(directory) as descriptor:
            os.fsync(descriptor)  # the rename itself survives a power cut


@contextlib.contextmanager
def _opened_directory(directory: str) -> Iterator[int]:
    """A directory's descriptor, to fsync its entries."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


class WarehouseFeed:
    """Every tenant's rated events, continuously, each under `destination/tenant=<id>/`."""

    def __init__(
        self,
        store: ExportStore,
        tenant_ids: Callable[[], Awaitable[list[str]]],
        destination: str,
        *,
        batch_size: int = 10_000,
        poll_seconds: float = 60.0,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._store = store
        self._tenant_ids = tenant_ids
        self._destination = destination.rstrip("/")
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._failpoints = failpoints

    def exporter(self, tenant_id: str) -> ContinuousExporter:
        """The exporter of one tenant's events, to its own directory of the destination."""
        return ContinuousExporter(
            self._store,
            tenant_id,
            f"{self._destination}/tenant={tenant_id}",
            batch_size=self._batch_size,
            failpoints=self._failpoints,
        )

    async def catch_up(self) -> int:
        """Export every tenant's ready events; how many."""
        exported = 0
        for tenant_id in await self._tenant_ids():
            exported += await self.exporter(tenant_id).catch_up()
        return exported

    async def run(self) -> None:
        """Export until cancelled; a failure is logged and retried on the next poll."""
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage must not end the loop
                log.warning("export failed; retrying", extra={"error": str(error)})
            await asyncio.sleep(self._poll_seconds)
