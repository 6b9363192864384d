"""`rating export`: events the API rated, invoices and the ledger, to CSV and Parquet, exact."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow.parquet as pq
from click.testing import CliRunner

from rating_client import RatingClient
from rating_service.cli import main
from rating_service.store.database import asyncpg_dsn
from tests.conftest import TenantKeys, eventually
from tests.integration.billing import open_account


async def rating(database_url: str, *args: str) -> str:
    """`rating ARGS…` against the test's database; its output (it must succeed)."""
    env = {"RATING_DATABASE_URL": database_url}
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def hidden_files(directory: Path) -> list[Path]:
    return list(directory.glob(".*"))


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    return list(pq.read_table(path).to_pylist())


async def test_events_invoices_and_ledger_export_to_csv_and_parquet_exact_and_alone(
    client: RatingClient,
    neighbour: RatingClient,
    acme: TenantKeys,
    database_url: str,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    account = await open_account(client, "initech")
    await account.grant("100", grant_id="g1", starts_at=now - timedelta(hours=12))
    early, late = now - timedelta(hours=2), now - timedelta(minutes=30)
    # small tokens 1234 × 0.001 = 1.234; large tokens 7 × 0.01 = 0.07; one call = 1
    for event_id, event_type, properties, at in [
        ("t1", "llm.completion", {"tokens": "1234", "model": "small"}, early),
        ("t2", "llm.completion", {"tokens": "7", "model": "large"}, early),
        ("c1", "api.call", {}, late),
    ]:
        await client.rate_and_debit(
            event_id=event_id,
            customer_id="initech",
            event_type=event_type,
            properties=properties,
            timestamp=at,
        )
    other = await open_account(neighbour, "hooli")
    await other.grant("5", grant_id="g1", starts_at=now - timedelta(hours=12))
    await other.call("other-tenant-event", at=late)
    async with asyncpg.create_pool(asyncpg_dsn(database_url), min_size=0, max_size=1) as pool:
        for tenant_id, invoice_id, total in [(acme.tenant_id, "inv-1", "12.34")]:
            await pool.execute(
                "INSERT INTO invoices (tenant_id, invoice_id, contract_id, customer_id,"
                " billing_date, revision, period_start, period_end, currency, state, number,"
                " total, document, issued_at) VALUES ($1, $2, $3, 'initech', $4, 0, $5, $4,"
                " 'USD', 'finalized', 'A-1', $6, '{}', $4)",
                tenant_id,
                invoice_id,
                account.contract_id,
                datetime(2026, 12, 1, tzinfo=UTC),
                datetime(2026, 11, 1, tzinfo=UTC),
                Decimal(total),
            )

    charges = {"t1": Decimal("1.234"), "t2": Decimal("0.07"), "c1": Decimal("1")}
    for file_format in ("csv", "parquet"):
        output = tmp_path / f"events.{file_format}"
        said = await rating(
            database_url,
            *("export", "events", "--tenant", "acme", "--format", file_format),
            *("-o", str(output)),
        )
        assert said.strip().endswith(f"wrote 3 events to {output}")
        rows = csv_rows(output) if file_format == "csv" else parquet_rows(output)
        # Amounts are exact decimal strings in both formats.
        assert {row["event_id"]: Decimal(row["charge"]) for row in rows} == charges
        assert {row["event_id"]: row["currency"] for row in rows} == dict.fromkeys(charges, "USD")
        times = {row["event_id"]: row["event_time"] for row in rows}
        if file_format == "csv":
            assert times["t1"] == early.isoformat()  # UTC, `+00:00`
        else:
            assert times["t1"] == early

    since = await rating(
        database_url,
        *("export", "events", "--tenant", "acme", "--format", "csv"),
        *("--since", (now - timedelta(hours=1)).isoformat(), "-o", str(tmp_path / "late.csv")),
    )
    assert "wrote 1 event" in since
    assert [row["event_id"] for row in csv_rows(tmp_path / "late.csv")] == ["c1"]

    await rating(
        database_url,
        *("export", "invoices", "--tenant", "acme", "-o", str(tmp_path / "invoices.parquet")),
    )
    (invoice,) = parquet_rows(tmp_path / "invoices.parquet")
    assert (invoice["invoice_id"], invoice["number"], invoice["total"]) == ("inv-1", "A-1", "12.34")
    assert invoice["paid_at"] is None

    for file_format in ("csv", "parquet"):
        output = tmp_path / f"ledger.{file_format}"
        await rating(
            database_url,
            *("export", "ledger", "--tenant", "acme", "--format", file_format, "-o", str(output)),
        )
        rows = csv_rows(output) if file_format == "csv" else parquet_rows(output)
        amounts = sorted(Decimal(row["amount"]) for row in rows)
        # The grant of 100, then one debit per event from its pool.
        assert amounts == sorted([Decimal(100), *charges.values()])
        assert [int(row["seq"]) for row in rows] == sorted(int(row["seq"]) for row in rows)


async def test_a_follow_process_killed_and_run_again_exports_every_event_once(
    acme: TenantKeys, globex: TenantKeys, database_url: str, tmp_path: Path
) -> None:
    async with asyncpg.create_pool(asyncpg_dsn(database_url), min_size=0, max_size=1) as pool:

        async def rate(tenant_id: str, first: int, last: int) -> None:
            """Events e<first>…e<last> (0.5 each, at 09:00 + n minutes) rated for the tenant."""
            await pool.execute(
                "INSERT INTO rated_events (tenant_id, event_id, request_hash, contract_id,"
                " event_time, period_start, charge, result)"
                " SELECT $1, 'e' || lpad(n::text, 3, '0'), '\\x00', 'c',"
                " $2::timestamptz + n * interval '1 minute', $2, 0.5, '{}'"
                " FROM generate_series($3::int, $4::int) AS n",
                tenant_id,
                datetime(2026, 11, 30, 9, tzinfo=UTC),
                first,
                last,
            )

        await rate(acme.tenant_id, 0, 299)
        await rate(globex.tenant_id, 0, 9)
        destination = tmp_path / "feed"
        follower = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "rating_service.cli", "export", "follow"),
            *("--tenant", "acme", "--to", str(destination), "--batch-size", "1"),
            env={**os.environ, "RATING_DATABASE_URL": database_url},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            # Killed (no chance to clean up) once it has committed a few of its 300 batches.
            await eventually(
                lambda: len(list(destination.rglob("*.parquet"))) >= 3, timeout_seconds=30
            )
        finally:
            follower.send_signal(signal.SIGKILL)
            await follower.wait()
        written_before_kill = len(list(destination.rglob("*.parquet")))
        assert written_before_kill < 300, "killed too late to test resuming"
        await rate(acme.tenant_id, 300, 309)

    said = await rating(
        database_url, "export", "follow", "--tenant", "acme", "--to", str(destination), "--once"
    )
    assert said.splitlines()[-1].startswith("exported "), said  # after its batches' log lines
    seen = [
        event_id
        for path in destination.rglob("*.parquet")
        for event_id in pq.read_table(path).column("event_id").to_pylist()
    ]
    assert sorted(seen) == [f"e{n:03d}" for n in range(310)]  # each once, and none of globex's


async def test_an_empty_export_keeps_its_columns_and_a_naive_since_is_refused(
    acme: TenantKeys, database_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "none.parquet"
    said = await rating(database_url, "export", "ledger", "--tenant", "acme", "-o", str(output))
    assert "wrote 0 transfers" in said
    table = pq.read_table(output)
    assert table.num_rows == 0
    assert table.schema.field("amount").type == "string"
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"

    env = {"RATING_DATABASE_URL": database_url}
    refused = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["export", "events", "--tenant", "acme", "--since", "2026-11-01", "-o", str(output)],
        env=env,
    )
    assert refused.exit_code == 1
    assert "has no UTC offset" in refused.output
    assert not hidden_files(tmp_path), "a temporary file was left behind"
