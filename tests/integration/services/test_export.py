"""The continuous exporter over a real PostgreSQL: every rated event in exactly one file.

Rated events are written straight into `rated_events` (the exporter reads nothing else), so
these tests stay fast; the CLI tests export events the API rated.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import fsspec
import pyarrow.parquet as pq
import pytest

from rating_service.failpoints import EXPORT_AFTER_FILES_WRITTEN, Failpoints, InjectedFailure
from rating_service.services.export import ContinuousExporter, WarehouseFeed
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from rating_service.store.export import ExportStore
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import running_worker, worker_settings

HOUR = datetime(2026, 11, 30, 9, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database."""
    created = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=0, max_size=4)
    yield created
    await created.close()


async def rate(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant_id: str,
    event_id: str,
    event_time: datetime,
    charge: str = "0.0012345678901234567890123",
) -> None:
    """A rated event as the hot path stores it (the columns the exporter reads)."""
    await conn.execute(
        "INSERT INTO rated_events (tenant_id, event_id, request_hash, contract_id, event_time,"
        " period_start, charge, result) VALUES ($1, $2, $3, 'c-1', $4, $5, $6, $7)",
        tenant_id,
        event_id,
        b"hash",
        event_time,
        datetime(2026, 11, 1, tzinfo=UTC),
        Decimal(charge),
        json.dumps({"event_id": event_id, "invoice_currency": "USD", "charge": charge}),
    )


def exported(directory: Path) -> tuple[Counter[str], dict[str, str]]:
    """Every event id in the directory's Parquet files (with how often), and each one's file."""
    seen: Counter[str] = Counter()
    files: dict[str, str] = {}
    for path in sorted(directory.rglob("*.parquet")):
        for event_id in pq.read_table(path).column("event_id").to_pylist():
            seen[event_id] += 1
            files[event_id] = str(path.relative_to(directory))
    return seen, files


async def test_an_export_killed_midway_and_resumed_has_every_event_exactly_once(
    pool: asyncpg.Pool, acme: TenantKeys, globex: TenantKeys, tmp_path: Path
) -> None:
    # 25 events over three hours; globex's 4 share the hours and must never appear.
    ids = [f"e{n:02d}" for n in range(25)]
    for n, event_id in enumerate(ids):
        await rate(pool, acme.tenant_id, event_id, HOUR + timedelta(minutes=7 * n))
    for n in range(4):
        await rate(pool, globex.tenant_id, f"g{n}", HOUR + timedelta(minutes=n))
    store = ExportStore(pool)
    destination = str(tmp_path / "events")

    def exporter(failpoints: Failpoints | None = None) -> ContinuousExporter:
        return ContinuousExporter(
            store, acme.tenant_id, destination, batch_size=10, failpoints=failpoints
        )

    assert await exporter().export_batch() == 10  # batch 1 committed
    # Killed after batch 2's files are written, before its position is committed.
    crashing = exporter(Failpoints({EXPORT_AFTER_FILES_WRITTEN: 1}))
    with pytest.raises(InjectedFailure):
        await crashing.export_batch()
    position = await store.position(acme.tenant_id, destination)
    assert position.next_batch == 2 and position.pending is not None
    seen, _ = exported(tmp_path / "events")
    assert sum(seen.values()) == 20  # batch 2's files are there, not yet committed

    # Meanwhile more events are rated: the resumed batch 2 must not take them in.
    for n in range(25, 30):
        await rate(pool, acme.tenant_id, f"e{n:02d}", HOUR + timedelta(minutes=7 * n))
    ids += [f"e{n:02d}" for n in range(25, 30)]

    # Resumed by a new exporter (a restarted process): batch 2 rewritten in place, then 3.
    assert await exporter().catch_up() == 20
    seen, files = exported(tmp_path / "events")
    assert sorted(seen) == ids
    assert set(seen.values()) == {1}, "an event exported twice"
    # Event 9 (09:00 + 63 min) is in batch 1, hour 10; event 10 (09:00 + 70 min) in batch 2.
    assert files["e09"] == "dt=2026-11-30/hour=10/part-0000000001.parquet"
    assert files["e10"] == "dt=2026-11-30/hour=10/part-0000000002.parquet"
    assert files["e00"] == "dt=2026-11-30/hour=09/part-0000000001.parquet"
    position = await store.position(acme.tenant_id, destination)
    assert position.next_batch == 4 and position.pending is None
    assert not list((tmp_path / "events").rglob(".*")), "a temporary file was left behind"

    # Nothing new: nothing written, the position stays.
    assert await exporter().catch_up() == 0
    assert (await store.position(acme.tenant_id, destination)).next_batch == 4


async def test_a_batch_planned_but_never_written_is_exported_by_the_next_run(
    pool: asyncpg.Pool, acme: TenantKeys, tmp_path: Path
) -> None:
    for n in range(3):
        await rate(pool, acme.tenant_id, f"e{n}", HOUR)
    store = ExportStore(pool)
    destination = str(tmp_path)
    planned = await store.plan_batch(acme.tenant_id, destination, 2)  # then the process died
    assert planned is not None and planned.number == 1
    await rate(pool, acme.tenant_id, "e3", HOUR)
    exporter = ContinuousExporter(store, acme.tenant_id, destination, batch_size=100)
    assert await exporter.export_batch() == 2  # the planned batch, as planned
    assert await exporter.export_batch() == 2  # then the rest
    seen, _ = exported(tmp_path)
    assert seen == Counter({"e0": 1, "e1": 1, "e2": 1, "e3": 1})


async def test_a_transaction_still_running_holds_back_events_committed_after_it(
    pool: asyncpg.Pool, database_url: str, acme: TenantKeys, tmp_path: Path
) -> None:
    # `early` is written first and committed last: a cursor that read `late` and moved past
    # it would never see `early`. The exporter waits for the older transaction instead.
    exporter = ContinuousExporter(ExportStore(pool), acme.tenant_id, str(tmp_path))
    await rate(pool, acme.tenant_id, "before", HOUR)
    slow = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        transaction = slow.transaction()
        await transaction.start()
        await rate(slow, acme.tenant_id, "early", HOUR)
        await rate(pool, acme.tenant_id, "late", HOUR)
        assert await exporter.catch_up() == 1
        assert exported(tmp_path)[0] == Counter({"before": 1})
        await transaction.commit()
    finally:
        await slow.close()
    assert await exporter.catch_up() == 2
    assert exported(tmp_path)[0] == Counter({"before": 1, "early": 1, "late": 1})


async def test_events_go_to_any_fsspec_destination_with_exact_charges_and_utc_times(
    pool: asyncpg.Pool, acme: TenantKeys
) -> None:
    charge = "123456789012345678901234.123456789012345678901234"  # 48 digits: no decimal128
    await rate(pool, acme.tenant_id, "e1", datetime(2026, 11, 30, 23, 59, 59, 999999, UTC), charge)
    destination = "memory://warehouse/rating"
    exporter = ContinuousExporter(ExportStore(pool), acme.tenant_id, destination)
    assert await exporter.catch_up() == 1
    fs = fsspec.filesystem("memory")
    with fs.open("/warehouse/rating/dt=2026-11-30/hour=23/part-0000000001.parquet", "rb") as f:
        table = pq.read_table(f)
    row = table.to_pylist()[0]
    assert row["charge"] == charge
    assert row["event_time"] == datetime(2026, 11, 30, 23, 59, 59, 999999, UTC)
    assert json.loads(row["result"])["charge"] == charge
    fs.rm("/warehouse", recursive=True)


async def test_the_workers_feed_exports_each_tenant_to_its_own_directory(
    pool: asyncpg.Pool, acme: TenantKeys, globex: TenantKeys, tmp_path: Path
) -> None:
    await rate(pool, acme.tenant_id, "a1", HOUR)
    await rate(pool, globex.tenant_id, "g1", HOUR)

    async def tenant_ids() -> list[str]:
        return [acme.tenant_id, globex.tenant_id]

    feed = WarehouseFeed(ExportStore(pool), tenant_ids, f"{tmp_path}/")
    assert await feed.catch_up() == 2
    assert exported(tmp_path / f"tenant={acme.tenant_id}")[0] == Counter({"a1": 1})
    assert exported(tmp_path / f"tenant={globex.tenant_id}")[0] == Counter({"g1": 1})
    assert await feed.catch_up() == 0


async def test_the_worker_exports_when_a_destination_is_set(
    settings: Settings, temporal_address: str, pool: asyncpg.Pool, acme: TenantKeys, tmp_path: Path
) -> None:
    await rate(pool, acme.tenant_id, "before-start", HOUR)
    exporting = worker_settings(
        settings,
        temporal_address,
        export_destination=str(tmp_path),
        export_poll_seconds=0.05,
    )
    tenant_files = tmp_path / f"tenant={acme.tenant_id}"
    async with running_worker(exporting):
        await rate(pool, acme.tenant_id, "while-running", HOUR)
        await eventually(lambda: sum(exported(tenant_files)[0].values()) == 2)
    assert exported(tenant_files)[0] == Counter({"before-start": 1, "while-running": 1})
