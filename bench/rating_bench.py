"""End-to-end benchmark: the rating server under load, beside its baselines, in one run.

Run with `uv run python bench/rating_bench.py [--scenarios ceiling,naive,quote,hot,zipf]`.

It starts PostgreSQL (embedded, in a temporary directory, or a fresh database beside
RATING_DATABASE_URL), migrates it, prepares a tenant with an admin and a rater key, loads the
example catalog, opens the contracts and pools the scenarios debit (through the same contract
administration code AdminService uses), starts the server as a subprocess (`rating serve` with
RATING_BENCH_BASELINES=true) and drives it with bench/loadgen.py:

  ceiling  BenchService.Noop: the server stack and the load generator around no work.
  naive    BenchService.NaiveDebit on one pool: a transaction per request (UPDATE + INSERT).
  quote    CatalogService.Quote of four lines priced against the example rate card.
  hot      RatingService.RateAndDebit, every event on one contract.
  zipf     RatingService.RateAndDebit over 10,000 contracts, Zipf-distributed (s = 1.1).

Each scenario runs closed loop at a fixed concurrency (its maximum throughput), then open loop at
a fraction (default ½) of that throughput, where the p99 target applies. One table is printed at
the end with the ratios to the ceiling and to naive, and the issue's targets checked below it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from loadgen import LoadResult, LoadSpec, RequestFactory, ZipfSampler, run_load

from rating_client.gen.rating.v1 import bench_pb2, catalog_pb2, rating_pb2
from rating_service.cli.progress import step

REPO_ROOT = Path(__file__).resolve().parents[1]
NOOP = "/rating.v1.BenchService/Noop"
NAIVE_DEBIT = "/rating.v1.BenchService/NaiveDebit"
QUOTE = "/rating.v1.CatalogService/Quote"
RATE_AND_DEBIT = "/rating.v1.RatingService/RateAndDebit"

ALL_SCENARIOS = ("ceiling", "naive", "quote", "hot", "zipf")
ZIPF_CONTRACTS = 10_000
ZIPF_EXPONENT = 1.1
POOL_CREDIT = Decimal("1000000000")
"""Each seeded pool's credit: far more than any run can spend, so no debit is refused."""
PRODUCT_KEY = "llm-tokens"
DEBIT_AMOUNT = "0.00015"
"""What one usage event costs: 1,000 gpt-4o-mini input tokens at $0.15 per 1M."""
TERM_START = datetime(2024, 1, 1, tzinfo=UTC)
"""When the seeded contracts and pools start: well before any event the benchmark sends."""
EVENT_PROPERTIES = {"tokens": "1000", "model": "gpt-4o-mini", "token_type": "input"}

# Targets from the issue, checked under the table.
HOT_VS_NAIVE = 3.0
SHARE_OF_CEILING = 0.6
P99_AT_HALF_LOAD_MS = 25.0

SEEDING_PROCESSES = 2
"""Processes opening the zipf contracts: one per core of the benchmark machine."""

NOISY_CORES = 0.15
"""Other processes using more CPU than this during a run make its figures suspect."""


# ---------------------------------------------------------------------------------------------
# Request factories: picklable, sent to each load-generator process.


@dataclass(frozen=True)
class NoopCall:
    """BenchService.Noop."""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """The empty request."""
        return NOOP, bench_pb2.NoopRequest()


@dataclass(frozen=True)
class NaiveDebitCall:
    """BenchService.NaiveDebit of one pool, a new event id per call."""

    pool_id: str
    run: str = ""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """A debit of one event's price."""
        return NAIVE_DEBIT, bench_pb2.NaiveDebitRequest(
            pool_id=self.pool_id, amount=DEBIT_AMOUNT, event_id=f"{self.run}-{worker}-{index}"
        )


@dataclass(frozen=True)
class QuoteCall:
    """CatalogService.Quote of a realistic month: tokens, fine-tuning tiers, resolutions."""

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """The README's example quote."""
        return QUOTE, _quote_request()


@functools.cache
def _quote_request() -> catalog_pb2.QuoteRequest:
    # Built once per process: every call sends the same lines, and building them is load-
    # generator CPU taken from the server on a 2-core machine.
    line = catalog_pb2.UsageLine
    return catalog_pb2.QuoteRequest(
        rate_card_key="list",
        lines=[
            line(
                product_key=PRODUCT_KEY,
                quantity="1200000",
                dimensions={"model": "gpt-4o", "token_type": "input"},
            ),
            line(
                product_key=PRODUCT_KEY,
                quantity="300000",
                dimensions={"model": "gpt-4o", "token_type": "output"},
            ),
            line(product_key="fine-tuning", quantity="120"),
            line(product_key="support-resolutions", quantity="40"),
        ],
    )


@dataclass
class RateAndDebitCall:
    """RatingService.RateAndDebit of one LLM completion, for one of `customer_ids`.

    With one customer every event lands on the same contract (hot pool); with many and
    `zipf_exponent` set, the customer is drawn from a Zipf distribution over them.
    """

    customer_ids: tuple[str, ...]
    zipf_exponent: float | None = None
    run: str = ""
    _sampler: ZipfSampler | None = field(default=None, repr=False, compare=False)

    def build(self, worker: int, index: int) -> tuple[str, Message]:
        """A usage event with a unique id, stamped now."""
        customer = self.customer_ids[self._pick(worker)]
        timestamp = Timestamp()
        timestamp.GetCurrentTime()
        return RATE_AND_DEBIT, rating_pb2.RateAndDebitRequest(
            event=rating_pb2.UsageEvent(
                event_id=f"{self.run}-{worker}-{index}",
                customer_id=customer,
                event_type="llm.completion",
                timestamp=timestamp,
                properties=EVENT_PROPERTIES,
            )
        )

    def _pick(self, worker: int) -> int:
        if self.zipf_exponent is None:
            return 0
        if self._sampler is None:
            # Built in the worker on first use (the CDF is not worth pickling); seeded per worker
            # so processes do not draw the same sequence.
            self._sampler = ZipfSampler(len(self.customer_ids), self.zipf_exponent, seed=worker)
        return self._sampler.sample()


# ---------------------------------------------------------------------------------------------
# Seeding, through the product's own contract administration (as `rating dev` does).


@dataclass(frozen=True)
class SeededContract:
    """A contract the benchmark debits: its customer and its one funded pool."""

    customer_id: str
    contract_id: str
    pool_id: str


async def open_funded_contracts(
    database_url: str,
    tenant_id: str,
    customer_ids: Sequence[str],
    credit: Decimal = POOL_CREDIT,
    parallel: int = 8,
) -> list[SeededContract]:
    """For each customer: a contract on rate card `list` in USD and one prepaid pool of `credit`.

    Written through ContractAdmin, the path AdminService and `rating dev` use (customer,
    contract, ledger accounts, the grant's funding transfers, audit rows, NOTIFY), `parallel`
    customers at a time. Results are in the order of `customer_ids`.
    """
    from rating_service.core.auth import Caller, Role
    from rating_service.core.money import format_decimal
    from rating_service.services.catalog import Catalogs
    from rating_service.services.contract import ContractAdmin
    from rating_service.store.catalog import CatalogStore
    from rating_service.store.contract import ContractStore
    from rating_service.store.database import asyncpg_dsn, create_engine

    caller = Caller(tenant_id, "rating bench", Role.ADMIN)
    # Seeding is not measured: it skips the WAL flush at each of its commits (PostgreSQL
    # flushes within a moment anyway), and the session reset a pool sends on every release
    # (nothing here leaves session state behind); both cost more than the writes themselves.
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=parallel,
        reset=_keep_session,
        server_settings={"synchronous_commit": "off"},
    )
    engine = create_engine(database_url, pool_size=1)
    # The catalog was loaded before and nothing changes it while seeding, so it may be kept in
    # memory without a change feed (reloading it for every contract was most of the cost).
    catalogs = Catalogs(CatalogStore(engine), is_live=lambda: True)
    admin = ContractAdmin(ContractStore(pool), catalogs)
    slots = asyncio.Semaphore(parallel)

    async def open_one(customer_id: str) -> SeededContract:
        async with slots:
            await admin.create_customer(
                caller, {"customer_id": customer_id, "name": f"benchmark {customer_id}"}
            )
            contract = await admin.create_contract(
                caller,
                {
                    "customer_id": customer_id,
                    "term_start": TERM_START.isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    # The pool never runs dry in a run; if it did, refusals would show as errors.
                    "overage_policy": "block",
                },
            )
            granted = await admin.add_commitment(
                caller,
                {
                    "grant_id": f"bench-{customer_id}",
                    "contract_id": contract.contract_id,
                    "kind": "prepaid_commit",
                    "amount": format_decimal(credit),
                    "starts_at": TERM_START.isoformat(),
                },
            )
            return SeededContract(
                customer_id, contract.contract_id, granted.commitment.pool.pool_id
            )

    try:
        await catalogs.catalog(tenant_id)  # loaded once, before the parallel writers want it
        return list(await asyncio.gather(*(open_one(c) for c in customer_ids)))
    finally:
        await engine.dispose()
        await pool.close()


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """A pool `reset` that sends nothing."""


async def open_naive_pool(database_url: str, tenant_id: str) -> SeededContract:
    """The naive baseline's pool: a funded contract plus the revenue account its debits credit.

    The rating engine opens a contract's revenue accounts on first use; NaiveDebit only looks
    one up, so it is opened here.
    """
    from rating_service.core.ledger.accounts import AccountKind, revenue_account_id
    from rating_service.store.database import asyncpg_dsn
    from rating_service.store.ledger import open_accounts

    seeded = (await open_funded_contracts(database_url, tenant_id, ["cus_bench_naive"]))[0]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        revenue = revenue_account_id(seeded.contract_id, PRODUCT_KEY)
        await open_accounts(
            conn,
            tenant_id,
            seeded.contract_id,
            [(revenue, AccountKind.REVENUE, PRODUCT_KEY)],
            "USD",
        )
    finally:
        await conn.close()
    return seeded


async def seed_contracts(database_url: str, tenant_id: str, count: int) -> list[str]:
    """`count` active, funded contracts for RateAndDebit; their customer ids, in order.

    The hot scenario asks for 1, zipf for 10,000 (index 0 is the most drawn). Each is in force
    now on rate card `list` of the example catalog, in USD, with one prepaid pool holding far
    more than a run spends. Seeded before the server starts, so no cache needs telling.
    """
    batch = secrets.token_hex(3)
    customers = [f"cus_bench_{batch}_{i:05d}" for i in range(count)]
    if count < 1000:
        await open_funded_contracts(database_url, tenant_id, customers)
        return customers
    # Each contract costs this side about as much CPU as the database (a few dozen statements
    # through the admin code), so one process per core keeps both cores busy.
    shares = [customers[i::SEEDING_PROCESSES] for i in range(SEEDING_PROCESSES)]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(shares), mp_context=spawn) as processes:
        await asyncio.gather(
            *(
                loop.run_in_executor(processes, open_contracts_here, database_url, tenant_id, share)
                for share in shares
            )
        )
    return customers


def open_contracts_here(database_url: str, tenant_id: str, customer_ids: list[str]) -> None:
    """`open_funded_contracts` on an event loop of this process (for a seeding process)."""
    asyncio.run(open_funded_contracts(database_url, tenant_id, customer_ids))


# ---------------------------------------------------------------------------------------------
# The stack: database, tenant, server.


@dataclass(frozen=True)
class Prepared:
    """What the scenarios need from the prepared database."""

    tenant_id: str
    rater_token: str
    naive_pool_id: str
    hot_customers: tuple[str, ...]
    zipf_customers: tuple[str, ...]


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[tuple[str, bool]]:
    """(base URL, embedded?): RATING_DATABASE_URL's server, or an embedded one in `workdir`."""
    configured = os.environ.get("RATING_DATABASE_URL")
    if configured:
        yield configured, False
        return
    from rating_service.runtime.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(workdir / "pgdata")
    with step("starting PostgreSQL (embedded)"), warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers); harmless.
        warnings.simplefilter("ignore")
        base_url = embedded.start()
    try:
        yield base_url, True
    finally:
        embedded.stop()


async def create_database(base_url: str) -> str:
    """A new, migrated database beside `base_url`'s; its URL."""
    from rating_service.cli.dev import ensure_database
    from rating_service.store import migrations

    database_url = await ensure_database(base_url, f"rating_bench_{secrets.token_hex(4)}")
    await asyncio.to_thread(migrations.upgrade, database_url)
    return database_url


async def drop_database(base_url: str, database_url: str) -> None:
    """Drop a database `create_database` made on someone else's server."""
    from sqlalchemy.engine import make_url

    from rating_service.store.database import asyncpg_dsn, with_database

    name = make_url(database_url).database
    conn = await asyncpg.connect(asyncpg_dsn(with_database(base_url, "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def prepare(database_url: str, workdir: Path, scenarios: Sequence[str]) -> Prepared:
    """Tenant, keys, catalog and seeded contracts, using the helpers `rating dev` uses."""
    # Imported here, not at the top: the load-generator processes import this module to unpickle
    # the request factories, and need none of this.
    from rating_service.cli.dev import DEMO_TENANT, demo_api_key, load_example_catalog
    from rating_service.core.auth import Role, issue_key
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    with step(f"preparing tenant {DEMO_TENANT!r} with an admin and a rater key"):
        await demo_api_key(database_url, workdir / "admin-api-key")
        engine = create_engine(database_url, pool_size=1)
        try:
            store = TenantStore(engine)
            tenant = await store.find(DEMO_TENANT)
            rater = issue_key(tenant.tenant_id, Role.RATER, "rating bench", datetime.now(UTC))
            await store.add_key(rater.key, actor="rating bench")
        finally:
            await engine.dispose()
    with step("loading the example catalog"):
        await load_example_catalog(database_url)
    with step("opening the naive baseline's pool"):
        naive = await open_naive_pool(database_url, tenant.tenant_id)
    hot: list[str] = []
    zipf: list[str] = []
    if "hot" in scenarios:
        with step("opening the hot contract"):
            hot = await seed_contracts(database_url, tenant.tenant_id, 1)
    if "zipf" in scenarios:
        with step(f"opening {ZIPF_CONTRACTS:,} zipf contracts"):
            zipf = await seed_contracts(database_url, tenant.tenant_id, ZIPF_CONTRACTS)
    return Prepared(tenant.tenant_id, rater.token, naive.pool_id, tuple(hot), tuple(zipf))


class ServerProcess:
    """The server under test, as a subprocess on its own port, logging to a file."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        from rating_service.runtime.embedded import free_port

        self.port = free_port()
        self.log_file = workdir / "server.log"
        env = {
            **os.environ,
            "RATING_DATABASE_URL": database_url,
            "RATING_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            # An empty RATING_METRICS_ADDRESS reads as unset (the default :9464, which a running
            # `rating dev` may hold), so metrics go to a free port instead.
            "RATING_METRICS_ADDRESS": "127.0.0.1:0",
            "RATING_BENCH_BASELINES": "true",
            "RATING_LOG_LEVEL": "WARNING",
            "RATING_SHUTDOWN_GRACE_SECONDS": "2",
        }
        command = [sys.executable, "-m", "rating_service.cli", "serve"]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def address(self) -> str:
        """host:port of the server."""
        return f"127.0.0.1:{self.port}"

    async def wait_serving(self, timeout_seconds: float = 30.0) -> None:
        """Poll the health service until SERVING; fail with the server's log if it dies."""
        from rating_service.api.health import probe

        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if await probe(self.address, timeout_seconds=1.0) == "SERVING":
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"the server did not report SERVING in time:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then wait for the drain."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def call_once(address: str, token: str, factory: RequestFactory) -> tuple[str, str]:
    """One call as the load generator makes it: (status code name, details)."""
    from grpc import aio

    path, request = factory.build(0, 0)
    async with aio.insecure_channel(address) as channel:
        method = channel.unary_unary(
            path, request_serializer=_serialize, response_deserializer=None
        )
        try:
            await method(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except aio.AioRpcError as error:
            return str(error.code().name), str(error.details())
    return "OK", ""


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


# ---------------------------------------------------------------------------------------------
# Runs and the report.


class OthersCpu:
    """How much CPU processes outside the benchmark used during a run (Linux /proc).

    Two cores are shared by the server, PostgreSQL and the load generator, so any other busy
    process moves every figure. Busy time from /proc/stat, less what this process, its reaped
    children (load-generator workers) and the process trees of `roots` (server, postmaster) used,
    is what the others took.
    """

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self._start: tuple[float, float, float] | None = None

    def start(self) -> None:
        """Take the first reading."""
        self._start = self._reading()

    def cores(self) -> float | None:
        """Cores the others kept busy on average since `start` (None where /proc is missing)."""
        if self._start is None:
            return None
        end = self._reading()
        wall, busy, ours = (e - s for e, s in zip(end, self._start, strict=True))
        if wall <= 0 or busy < 0:
            return None
        return max(0.0, busy - ours) / wall

    def _reading(self) -> tuple[float, float, float]:
        """(monotonic seconds, CPU-seconds busy machine-wide, CPU-seconds of ours)."""
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as stat:
                user, nice, system = (int(v) for v in stat.readline().split()[1:4])
        except (OSError, ValueError):
            return time.monotonic(), 0.0, 0.0
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
        ours += _tree_ticks(self.roots) / ticks
        return time.monotonic(), (user + nice + system) / ticks, ours


def _tree_ticks(roots: Sequence[int]) -> int:
    """CPU ticks of `roots` and all their descendants, including reaped children's."""
    parents: dict[int, int] = {}
    spent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # After "pid (comm) ": state ppid … utime(11) stime(12) cutime(13) cstime(14).
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = int(fields[1])
        spent[int(entry)] = sum(int(v) for v in fields[11:15])
    tree = set(roots) & spent.keys()
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(spent[pid] for pid in tree)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server whose data directory this is, if it runs here."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    result: LoadResult
    others_cores: float | None
    """CPU other processes on the machine took during the run, in cores."""


def factories(prepared: Prepared) -> dict[str, RequestFactory]:
    """Each scenario's request factory."""
    return {
        "ceiling": NoopCall(),
        "naive": NaiveDebitCall(prepared.naive_pool_id),
        "quote": QuoteCall(),
        "hot": RateAndDebitCall(prepared.hot_customers),
        "zipf": RateAndDebitCall(prepared.zipf_customers, ZIPF_EXPONENT),
    }


def fresh(factory: RequestFactory) -> RequestFactory:
    """The factory with a new run tag, so event ids never repeat across runs."""
    if isinstance(factory, NaiveDebitCall | RateAndDebitCall):
        return replace(factory, run=secrets.token_hex(4))
    return factory


def measure(scenario: str, spec: LoadSpec, others: OthersCpu) -> Row:
    """Run one spec, printing progress and the outcome."""
    total = spec.warmup_seconds + spec.duration_seconds
    print(f"  ▶ {scenario:<8} {spec.label:<16} ({total:.0f}s) …", flush=True)

    def progress(elapsed: float) -> None:
        print(f"      {scenario} {spec.label}: {elapsed:.0f}s / {total:.0f}s", flush=True)

    others.start()
    result = run_load(spec, progress)
    others_cores = others.cores()
    print(
        f"    {scenario} {spec.label}: {result.throughput:,.0f} calls/s, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"errors {result.error_count}"
        + (f", {result.missed} not sent (in-flight cap)" if result.missed else "")
        + (f", {result.late} sent late" if result.late else "")
        + ("" if others_cores is None else f"; other processes used {others_cores:.2f} cores"),
        flush=True,
    )
    return Row(scenario, result, others_cores)


def ratio(value: float, base: float | None) -> str:
    """`0.62×`, or `–` without a base."""
    return "–" if not base else f"{value / base:.2f}×"


def render_table(rows: Sequence[Row]) -> str:
    """The report: one row per run, ratios against the closed-loop ceiling and naive."""
    closed = {row.scenario: row.result for row in rows if row.result.spec.mode == "closed"}
    ceiling = closed["ceiling"].throughput if "ceiling" in closed else None
    naive = closed["naive"].throughput if "naive" in closed else None
    header = (
        "scenario",
        "mode",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "vs ceiling",
        "vs naive",
        "others' CPU",
    )
    lines = []
    for row in rows:
        r = row.result
        errors = ", ".join(f"{n} {code}" for code, n in r.errors.items()) or "0"
        if r.missed:
            errors += f" (+{r.missed} not sent)"
        if r.late:
            errors += f" ({r.late} sent late)"
        is_closed = r.spec.mode == "closed"
        lines.append(
            (
                row.scenario,
                r.spec.label,
                f"{r.throughput:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                f"{r.max_ms:.1f}",
                errors,
                ratio(r.throughput, ceiling) if is_closed else "–",
                ratio(r.throughput, naive) if is_closed else "–",
                "?" if row.others_cores is None else f"{row.others_cores:.2f}",
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    numeric = {2, 3, 4, 5, 7, 8, 9}

    def format_row(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([format_row(header), rule, *(format_row(line) for line in lines)])


def target_checks(rows: Sequence[Row], fraction: float) -> list[str]:
    """The issue's targets that this run measured, each with ✓ or ✗."""
    closed = {row.scenario: row.result for row in rows if row.result.spec.mode == "closed"}
    opened = {row.scenario: row.result for row in rows if row.result.spec.mode == "open"}
    checks = []

    def check(name: str, value: float, target: float, unit: str, at_most: bool = False) -> None:
        ok = value <= target if at_most else value >= target
        sign = "≤" if at_most else "≥"
        checks.append(f"  {'✓' if ok else '✗'} {name}: {value:.2f}{unit} ({sign} {target}{unit})")

    ceiling = closed.get("ceiling")
    naive = closed.get("naive")
    hot = closed.get("hot")
    zipf = closed.get("zipf")
    if hot and naive and naive.throughput:
        check("hot vs naive", hot.throughput / naive.throughput, HOT_VS_NAIVE, "×")
    if hot and ceiling and ceiling.throughput:
        check("hot vs ceiling", hot.throughput / ceiling.throughput, SHARE_OF_CEILING, "×")
    if zipf and ceiling and ceiling.throughput:
        check("zipf vs ceiling", zipf.throughput / ceiling.throughput, SHARE_OF_CEILING, "×")
    for scenario, result in opened.items():
        check(
            f"{scenario} p99 at {fraction:g} × max throughput",
            result.p99_ms,
            P99_AT_HALF_LOAD_MS,
            " ms",
            at_most=True,
        )
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python bench/rating_bench.py",
        description="Benchmark the rating server against its no-op and naive-debit baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="closed loop: calls in flight in total"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="load-generator processes (each one asyncio loop)"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated, of {', '.join(ALL_SCENARIOS)} (hot and zipf need RateAndDebit)",
    )
    parser.add_argument(
        "--open-loop-fraction",
        type=float,
        default=0.5,
        help="open-loop rate as a fraction of each scenario's closed-loop throughput (0: skip)",
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=1000, help="open loop: cap on calls in flight"
    )
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(ALL_SCENARIOS))
    if unknown or not scenarios:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(ALL_SCENARIOS)}")
    # The ceiling and naive are the baselines every ratio is taken against, so they run first.
    args.scenarios = [s for s in ALL_SCENARIOS if s in scenarios]
    if args.duration <= 0 or args.warmup < 0 or args.concurrency < 1 or args.processes < 1:
        parser.error("--duration > 0, --warmup ≥ 0, --concurrency ≥ 1 and --processes ≥ 1")
    return args


def start_server(database_url: str, workdir: Path, prepared: Prepared) -> ServerProcess:
    """Start `rating serve` and make sure it serves the baselines."""
    with step("starting the server (rating serve)"):
        server = ServerProcess(database_url, workdir)
        asyncio.run(server.wait_serving())
    code, details = asyncio.run(call_once(server.address, prepared.rater_token, NoopCall()))
    if code != "OK":
        server.stop()
        raise SystemExit(
            f"BenchService.Noop answered {code} ({details}): the server must register"
            " BenchService when RATING_BENCH_BASELINES is true"
        )
    return server


def check_rate_and_debit(
    server: ServerProcess, prepared: Prepared, scenarios: Sequence[str]
) -> None:
    """Fail clearly when hot / zipf were asked for and RateAndDebit cannot serve them."""
    for scenario, factory in factories(prepared).items():
        if scenario not in scenarios or scenario not in ("hot", "zipf"):
            continue
        code, details = asyncio.run(call_once(server.address, prepared.rater_token, fresh(factory)))
        if code == "UNIMPLEMENTED":
            raise SystemExit(
                f"the {scenario} scenario needs RatingService.RateAndDebit, which this server does"
                " not implement; the baselines alone run with --scenarios ceiling,naive,quote"
            )
        if code != "OK":
            raise SystemExit(
                f"the {scenario} scenario's first RateAndDebit answered {code}: {details}\n"
                "(bench/rating_bench.py seed_contracts seeds the contracts it rates)"
            )


def run(args: argparse.Namespace) -> None:
    """Prepare the stack, run every scenario closed then open loop, print the table."""
    scenarios: list[str] = args.scenarios
    # Anything else running skews every figure; the load average says whether the box was quiet.
    print(
        f"rating bench — {os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f}), "
        f"{args.processes} load-generator process(es), scenarios {', '.join(scenarios)}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="rating-bench-") as tmp,
        postgres_server(Path(tmp)) as (base_url, embedded),
    ):
        workdir = Path(tmp)
        with step("creating and migrating a fresh database"):
            database_url = asyncio.run(create_database(base_url))
        server: ServerProcess | None = None
        try:
            prepared = asyncio.run(prepare(database_url, workdir, scenarios))
            server = start_server(database_url, workdir, prepared)
            check_rate_and_debit(server, prepared, scenarios)
            roots = [server.process.pid]
            postmaster = postmaster_pid(workdir / "pgdata")
            if postmaster is not None:
                roots.append(postmaster)
            others = OthersCpu(roots)
            rows = measure_all(args, server.address, prepared, scenarios, others)
            print(
                f"\nserver: rating serve; load generator: {args.processes} process(es),"
                f" closed loop c={args.concurrency}, {args.duration:g}s measured after"
                f" {args.warmup:g}s warm-up\n"
            )
            print(render_table(rows))
            noisy = [r for r in rows if r.others_cores is not None and r.others_cores > NOISY_CORES]
            if noisy:
                worst = max(r.others_cores or 0.0 for r in noisy)
                print(
                    f"\n⚠ other processes used up to {worst:.2f} of the {os.cpu_count()} cores"
                    f" during {len(noisy)} of the runs: those figures understate this stack"
                )
            checks = target_checks(rows, args.open_loop_fraction)
            if checks:
                print("\ntargets:\n" + "\n".join(checks))
        finally:
            if server is not None:
                server.stop()
            if not embedded:
                asyncio.run(drop_database(base_url, database_url))


def measure_all(
    args: argparse.Namespace,
    address: str,
    prepared: Prepared,
    scenarios: Sequence[str],
    others: OthersCpu,
) -> list[Row]:
    """Closed-loop runs of every scenario, then open-loop runs at a fraction of each maximum."""
    metadata = (("authorization", f"Bearer {prepared.rater_token}"),)
    made = factories(prepared)
    common: dict[str, Any] = {
        "target": address,
        "metadata": metadata,
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "processes": args.processes,
    }
    rows = [
        measure(
            scenario,
            LoadSpec(
                factory=fresh(made[scenario]), mode="closed", concurrency=args.concurrency, **common
            ),
            others,
        )
        for scenario in scenarios
    ]
    if args.open_loop_fraction > 0:
        for row in list(rows):
            rate = row.result.throughput * args.open_loop_fraction
            if rate <= 0:
                continue
            spec = LoadSpec(
                factory=fresh(made[row.scenario]),
                mode="open",
                concurrency=args.max_in_flight,
                rate=rate,
                **common,
            )
            rows.append(measure(row.scenario, spec, others))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    # The embedded PostgreSQL forks pg_ctl after gRPC has started threads; gRPC's fork handlers
    # are not needed for that (as in `rating dev`).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
