"""The one-row SQL baseline: pgbench debiting one hot row, beside the server on the same database.

The transaction is the one a plain design would run per debit, with no server in front of it:

    UPDATE hot_row SET balance = balance - 0.01 WHERE id = 1 AND balance >= 0.01;
    INSERT INTO hot_row_debits (amount) VALUES (0.01);

run by `pgbench` (the one beside the embedded PostgreSQL, or on PATH) with 1 and 32 clients, each
transaction committed with `synchronous_commit` as the server's are. Without pgbench, an asyncpg
loop runs the same statements instead (and the report says so).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

SETUP = """
DROP TABLE IF EXISTS hot_row_debits;
DROP TABLE IF EXISTS hot_row;
CREATE TABLE hot_row (id int PRIMARY KEY, balance numeric NOT NULL);
CREATE TABLE hot_row_debits (debit_id bigserial PRIMARY KEY, amount numeric NOT NULL,
                             at timestamptz NOT NULL DEFAULT now());
INSERT INTO hot_row VALUES (1, 1000000000);
"""

DEBIT = (
    "UPDATE hot_row SET balance = balance - 0.01 WHERE id = 1 AND balance >= 0.01;\n"
    "INSERT INTO hot_row_debits (amount) VALUES (0.01);\n"
)

_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.M)


@dataclass(frozen=True)
class HotRowResult:
    """Debits per second (one transaction each) at a number of clients, and by what tool."""

    clients: int
    per_second: float
    latency_ms: float
    tool: str


def pgbench_path() -> str | None:
    """The pgbench beside the embedded PostgreSQL's binaries, else one on PATH."""
    try:
        import pgserver  # the embedded server's package ships the client tools

        beside = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
        if beside.exists():
            return str(beside)
    except ImportError:
        pass
    return shutil.which("pgbench")


async def prepare(database_url: str) -> None:
    """A fresh hot row with a balance no run can exhaust, and an empty debit log."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(SETUP)
    finally:
        await conn.close()


def run_pgbench(pgbench: str, database_url: str, clients: int, seconds: float) -> HotRowResult:
    """pgbench's transactions per second and average latency for `clients` clients."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(DEBIT)
        script.flush()
        done = subprocess.run(
            [
                pgbench,
                "--no-vacuum",
                f"--file={script.name}",
                f"--client={clients}",
                f"--jobs={min(clients, 2)}",
                f"--time={max(1, round(seconds))}",
                database_url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    tps, latency = _TPS.search(done.stdout), _LATENCY.search(done.stdout)
    if done.returncode != 0 or tps is None or latency is None:
        raise SystemExit(f"pgbench failed ({done.returncode}): {done.stderr or done.stdout}")
    return HotRowResult(clients, float(tps.group(1)), float(latency.group(1)), "pgbench")


async def run_asyncpg(database_url: str, clients: int, seconds: float) -> HotRowResult:
    """The same transaction from `clients` asyncpg connections in a loop (no pgbench here)."""
    pool = await asyncpg.create_pool(database_url, min_size=clients, max_size=clients)
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    await conn.execute(DEBIT)
                done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await pool.close()
    elapsed = time.perf_counter() - started
    return HotRowResult(clients, done / elapsed, 1000 * elapsed * clients / max(done, 1), "asyncpg")


async def measure(
    database_url: str, clients: tuple[int, ...] = (1, 32), seconds: float = 8.0
) -> list[HotRowResult]:
    """The baseline at each number of clients, on a fresh hot row each time."""
    pgbench = pgbench_path()
    results = []
    for count in clients:
        await prepare(database_url)
        if pgbench is not None:
            result = await asyncio.to_thread(run_pgbench, pgbench, database_url, count, seconds)
        else:
            result = await run_asyncpg(database_url, count, seconds)
        results.append(result)
    return results
