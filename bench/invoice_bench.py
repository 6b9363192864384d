"""End-to-end benchmark: invoicing one billing period for many contracts, beside its baselines.

Run with `uv run python bench/invoice_bench.py [--contracts 1000] [--events 100000]`
(`make bench-invoices`).

It starts PostgreSQL (embedded, in a temporary directory, or a fresh database beside
RATING_DATABASE_URL) and the Temporal dev server (or uses RATING_TEMPORAL_ADDRESS), migrates,
creates a tenant with the example catalog, and runs the worker in this process (`run_worker`, on
a task queue of its own, with a short grace window). Contracts are opened through ContractAdmin,
the path AdminService takes (outbox row included, so their billing workflows start as in
production), and their usage is rated in this process by the DebitEngine behind RateAndDebit.
The catalog's platform fee is billed in arrears here, so each period's invoice carries a fee line
beside its usage lines and the opening invoices (nothing due in advance) are skipped.

  throughput  N contracts whose only period ends at the same moment T (their term end, so the
              invoice is also the final one), each with a few rated events. Their billing
              workflows sleep until T + grace; measured from then until the last of the N
              invoices is paid: invoices/s, and how long after T + grace each was issued and
              paid (p50 / p99), with the CPU each process of the stack used meanwhile.
  latency     two contracts sharing a period that has already ended, one with 10 rated events
              and one with --events; the worker is started once their usage is in, and each
              InvoiceWorkflow is timed start to close (Temporal's describe()), step by step from
              its history.
  baseline    N more contracts' period invoices made by calling Invoicing in a loop, one at a
              time, without Temporal: close + draft + finalize (the database work, the floor),
              then render + collect (all five steps); the throughput run is set against both.

One table is printed at the end, and the issue's targets checked below it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import math
import multiprocessing
import os
import resource
import secrets
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from rating_bench import (
    _keep_session,
    _tree_ticks,
    create_database,
    drop_database,
    postgres_server,
    postmaster_pid,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.cli.dev import EXAMPLE_CATALOG
from rating_service.cli.progress import step
from rating_service.core.auth import Caller, Role
from rating_service.core.errors import DomainError
from rating_service.core.pricing.meter import UsageEvent
from rating_service.outbox.topics import Topic
from rating_service.payments import SimulatedGateway
from rating_service.runtime.embedded import TemporalDevServer, free_port
from rating_service.runtime.worker import connect_temporal, run_worker
from rating_service.services.catalog import Catalogs
from rating_service.services.contract import ContractAdmin
from rating_service.services.invoice import Invoicing
from rating_service.services.rating.engine import DebitEngine
from rating_service.services.rating.reservations import Reservations
from rating_service.settings import Settings
from rating_service.store.books import ContractBooks
from rating_service.store.catalog import CatalogStore
from rating_service.store.contract import ContractStore
from rating_service.store.database import asyncpg_dsn, create_engine
from rating_service.store.rating import RatingStore
from rating_service.store.tenant import TenantStore
from rating_service.workflows.invoice import invoice_workflow_id

TENANT_NAME = "invoice-bench"
RATE_CARD = "list"
PAYMENT_METHOD = "pm_ok"
"""The simulated gateway's card that always pays: every invoice is charged and settled."""

EVENTS_PER_CONTRACT = 3
"""Usage of each throughput and baseline contract: one event of each token type."""
TOKEN_TYPES = ("input", "cached_input", "output")
SMALL_EVENTS = 10
"""The latency phase's small contract."""

RATING_BATCH = 2000
"""Events handed to the DebitEngine at once (it commits them up to 512 per transaction)."""
SEEDING_PROCESSES = 2
"""Processes opening contracts: one per core of the benchmark machine."""
SEEDING_CHUNK = 100
"""Contracts a seeding process opens per call, so progress can be reported between calls."""
PAST_PERIOD = timedelta(hours=1)
"""Length of the latency and baseline contracts' period, which has ended when they are opened."""

# Targets from the issue, checked under the table.
INVOICES_PER_SECOND = 10.0
MIN_THROUGHPUT_CONTRACTS = 100
"""Fewer contracts than this are invoiced within one invoice's latency: no throughput figure."""
LATENCY_RATIO = 2.0

POLL_SECONDS = 0.25
PROGRESS_SECONDS = 5.0
NOISY_CORES = 0.15
"""Other processes using more CPU than this while invoicing make the throughput figure suspect."""
STALL_SECONDS = 120.0
"""No invoice paid for this long while some are due: the run is failed, not waited out."""


# ---------------------------------------------------------------------------------------------
# Progress of long steps.


class Progress:
    """Lines under a running `step`, at most one every few seconds, then room for its `ok`."""

    def __init__(self) -> None:
        self.started = self._shown = time.monotonic()
        self._printed = False

    def show(self, line: str) -> None:
        """Print `line` (indented) if a few seconds have passed since the last one."""
        now = time.monotonic()
        if now - self._shown < PROGRESS_SECONDS:
            return
        self._shown = now
        print(("" if self._printed else "\n") + f"      {line}", flush=True)
        self._printed = True

    def count(self, done: int, total: int, unit: str) -> None:
        """`done / total unit (rate/s)`, every few seconds."""
        rate = done / max(time.monotonic() - self.started, 1e-9)
        self.show(f"{done:,} / {total:,} {unit} ({rate:,.0f}/s)")

    def close(self) -> None:
        """Indent the step's `ok` under the progress lines, if there were any."""
        if self._printed:
            print("   ", end="", flush=True)


# ---------------------------------------------------------------------------------------------
# Contracts and their usage.


@dataclass(frozen=True)
class Period:
    """The one billing period a phase's contracts share: [start, end), the end their term end."""

    start: datetime
    end: datetime

    def terms(self, customer_id: str) -> dict[str, object]:
        """A contract whose only period is this one, paid by a card that always pays."""
        return {
            "customer_id": customer_id,
            "term_start": self.start.isoformat(),
            "term_end": self.end.isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            "billing_interval_seconds": int((self.end - self.start).total_seconds()),
            "invoice_currency": "USD",
            "rate_card_key": RATE_CARD,
            # No pools: all usage is billed in arrears on the period's invoice.
            "overage_policy": "arrears",
            "payment_method": PAYMENT_METHOD,
        }

    def moment(self, index: int, count: int) -> datetime:
        """The index-th of `count` moments spread over the period, none after now."""
        span = min(self.end, datetime.now(UTC)) - self.start
        return self.start + span * index / max(count, 1)


def ended_period(length: timedelta = PAST_PERIOD) -> Period:
    """A period that ended a moment ago: its invoice is due as soon as a worker picks it up."""
    end = datetime.now(UTC).replace(microsecond=0)
    return Period(end - length, end)


@dataclass(frozen=True)
class BenchContract:
    """A contract the benchmark invoices."""

    customer_id: str
    contract_id: str


async def open_contracts(
    database_url: str,
    tenant_id: str,
    customer_ids: Sequence[str],
    period: Period,
    parallel: int = 8,
) -> list[BenchContract]:
    """A customer and a contract on `period` for each id, through ContractAdmin, in order."""
    caller = Caller(tenant_id, "invoice bench", Role.ADMIN)
    # Seeding is not measured: it skips the WAL flush at its commits and the session reset on
    # release, as bench/rating_bench.py's seeding does.
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=parallel,
        reset=_keep_session,
        server_settings={"synchronous_commit": "off"},
    )
    engine = create_engine(database_url, pool_size=1)
    # Nothing changes the catalog meanwhile: kept in memory without a change feed.
    catalogs = Catalogs(CatalogStore(engine), is_live=lambda: True)
    admin = ContractAdmin(ContractStore(pool), catalogs)
    slots = asyncio.Semaphore(parallel)

    async def open_one(customer_id: str) -> BenchContract:
        async with slots:
            await admin.create_customer(
                caller, {"customer_id": customer_id, "name": f"benchmark {customer_id}"}
            )
            contract = await admin.create_contract(caller, period.terms(customer_id))
            return BenchContract(customer_id, contract.contract_id)

    try:
        await catalogs.catalog(tenant_id)  # loaded once, before the parallel writers want it
        return list(await asyncio.gather(*(open_one(c) for c in customer_ids)))
    finally:
        await engine.dispose()
        await pool.close()


def open_contracts_here(
    database_url: str, tenant_id: str, customer_ids: list[str], period: Period
) -> list[BenchContract]:
    """`open_contracts` on an event loop of this process (for a seeding process)."""
    return asyncio.run(open_contracts(database_url, tenant_id, customer_ids, period))


async def seed_contracts(
    database_url: str, tenant_id: str, label: str, count: int, period: Period
) -> list[BenchContract]:
    """`count` contracts on `period` (more than a chunk: by seeding processes, in no order)."""
    batch = secrets.token_hex(3)
    customers = [f"cus_{label}_{batch}_{i:05d}" for i in range(count)]
    if count <= SEEDING_CHUNK:
        return await open_contracts(database_url, tenant_id, customers, period)
    # Each contract costs this side about as much CPU as the database; other processes keep
    # this one's event loop free for the worker running in it.
    chunks = [customers[i : i + SEEDING_CHUNK] for i in range(0, count, SEEDING_CHUNK)]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    opened: list[BenchContract] = []
    progress = Progress()
    with ProcessPoolExecutor(SEEDING_PROCESSES, mp_context=spawn) as processes:
        calls = [
            loop.run_in_executor(
                processes, open_contracts_here, database_url, tenant_id, chunk, period
            )
            for chunk in chunks
        ]
        for done in asyncio.as_completed(calls):
            opened.extend(await done)
            progress.count(len(opened), count, "contracts")
    progress.close()
    return opened


def usage_event(period: Period, index: int, count: int) -> UsageEvent:
    """An LLM completion of 1,000 gpt-4o-mini tokens, token type cycling, inside the period."""
    return UsageEvent(
        "llm.completion",
        period.moment(index, count),
        {"tokens": "1000", "model": "gpt-4o-mini", "token_type": TOKEN_TYPES[index % 3]},
    )


class InProcessRating:
    """The DebitEngine RateAndDebit uses, run in this process to rate the benchmark's usage."""

    def __init__(self, engine: DebitEngine, tenant_id: str) -> None:
        self._engine = engine
        self.tenant_id = tenant_id

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, database_url: str, tenant_id: str) -> AsyncIterator[InProcessRating]:
        """An engine over its own pool, its committer running until the block ends."""
        # Seeding, not measured: commits skip the WAL flush (see open_contracts).
        pool = await asyncpg.create_pool(
            asyncpg_dsn(database_url),
            min_size=1,
            max_size=4,
            server_settings={"synchronous_commit": "off"},
        )
        sql = create_engine(database_url, pool_size=1)
        store = RatingStore(pool)
        # Contracts are only added, never changed, while rating: a customer's book is read when
        # first rated (after its contract was opened) and may be kept without a change feed.
        books = ContractBooks(store, is_live=lambda: True)
        catalogs = Catalogs(CatalogStore(sql), is_live=lambda: True)
        engine = DebitEngine(store, catalogs, books, Reservations(store, books))
        engine.start()
        try:
            yield cls(engine, tenant_id)
        finally:
            await engine.stop()
            await sql.dispose()
            await pool.close()

    async def rate(self, events: Sequence[tuple[str, str, UsageEvent]]) -> None:
        """Rate (customer id, event id, UsageEvent) triples; any refusal ends the benchmark."""
        for start in range(0, len(events), RATING_BATCH):
            outcomes = await self._engine.rate_in_order(
                self.tenant_id, list(events[start : start + RATING_BATCH])
            )
            refused = [o for o in outcomes if isinstance(o, DomainError)]
            if refused:
                raise SystemExit(f"{len(refused)} events were refused, the first: {refused[0]}")

    async def rate_each(self, contracts: Sequence[BenchContract], period: Period) -> None:
        """EVENTS_PER_CONTRACT events for each contract."""
        await self.rate(
            [
                (c.customer_id, f"{c.contract_id}-{i}", usage_event(period, i, EVENTS_PER_CONTRACT))
                for c in contracts
                for i in range(EVENTS_PER_CONTRACT)
            ]
        )

    async def rate_many(self, contract: BenchContract, period: Period, count: int) -> float:
        """`count` events for one contract, with progress lines; the events rated per second."""
        progress = Progress()
        for first in range(0, count, RATING_BATCH):
            last = min(first + RATING_BATCH, count)
            await self.rate(
                [
                    (
                        contract.customer_id,
                        f"{contract.contract_id}-{i}",
                        usage_event(period, i, count),
                    )
                    for i in range(first, last)
                ]
            )
            progress.count(last, count, "events")
        progress.close()
        return count / max(time.monotonic() - progress.started, 1e-9)


# ---------------------------------------------------------------------------------------------
# The stack: database, Temporal, tenant, worker.


@contextlib.contextmanager
def temporal_server(workdir: Path) -> Iterator[tuple[str, bool]]:
    """(address, started here?): RATING_TEMPORAL_ADDRESS's server, or a dev server in memory."""
    configured = os.environ.get("RATING_TEMPORAL_ADDRESS")
    if configured:
        yield configured, False
        return

    server = TemporalDevServer(free_port(), None, None, workdir / "temporal.log")
    with step("starting the Temporal dev server"):
        address = server.start()
    try:
        yield address, True
    finally:
        server.stop()


async def prepare_tenant(database_url: str) -> str:
    """A tenant with the example catalog, its platform fee billed in arrears; its id."""
    document = copy.deepcopy(read_catalog_file(EXAMPLE_CATALOG))
    for card in document["rate_cards"]:
        card["prices"]["platform-fee"] = {**card["prices"]["platform-fee"], "timing": "in_arrears"}
    engine = create_engine(database_url, pool_size=1)
    try:
        tenant = await TenantStore(engine).create_tenant(TENANT_NAME, actor="invoice bench")
        caller = Caller(tenant.tenant_id, "invoice bench", Role.ADMIN)
        await Catalogs(CatalogStore(engine)).apply(caller, document, dry_run=False)
    finally:
        await engine.dispose()
    return tenant.tenant_id


class InProcessWorker:
    """`run_worker` (workflows, activities, outbox dispatcher) as a task of this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InProcessWorker:

        self._task = asyncio.create_task(run_worker(self.settings, self._stop), name="worker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            async with asyncio.timeout(60):
                await self._task

    def check(self) -> None:
        """Raise the worker's error if it has stopped by itself."""
        if self._task is not None and self._task.done():
            error = self._task.exception()
            raise SystemExit(f"the worker stopped: {error!r}")


def worker_settings(database_url: str, temporal_address: str, grace_seconds: float) -> Settings:
    """The environment's settings, pointed at this run's database, Temporal and task queue."""
    return Settings.from_env().replace(
        database_url=database_url,
        temporal_address=temporal_address,
        temporal_task_queue=f"invoice-bench-{secrets.token_hex(4)}",
        invoice_grace_seconds=grace_seconds,
        outbox_poll_seconds=0.2,
    )


# ---------------------------------------------------------------------------------------------
# CPU per process tree, during a measured window.


class StackCpu:
    """Cores used by each part of the stack during a window, and by everything else (/proc).

    The worker is this process; the Temporal dev server, when started here, is its only live
    child then (the seeding processes have exited); PostgreSQL is the embedded postmaster's
    tree. Two cores are shared by all of them, so a busy neighbour moves every figure.
    """

    def __init__(self, postmaster: int | None, temporal_is_child: bool) -> None:
        self.postmaster = postmaster
        self.temporal_is_child = temporal_is_child
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._start, self._wall = self._reading(), time.monotonic()

    def cores(self) -> dict[str, float]:
        """Average cores each part kept busy since `start` (parts not run here are left out)."""
        wall = time.monotonic() - self._wall
        end = self._reading()
        return {name: (end[name] - self._start[name]) / wall for name in end}

    def _reading(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        reading = {"worker": own.ru_utime + own.ru_stime}
        try:
            with open("/proc/stat") as stat:
                busy = sum(int(v) for v in stat.readline().split()[1:4])  # user, nice, system
            with open("/proc/self/stat") as stat:
                # After "pid (comm) ": utime(11) stime(12) cutime(13) cstime(14).
                own_ticks = sum(int(v) for v in stat.read().rpartition(")")[2].split()[11:15])
        except OSError:
            return reading
        ticks = os.sysconf("SC_CLK_TCK")
        if self.postmaster is not None:
            reading["PostgreSQL"] = _tree_ticks([self.postmaster]) / ticks
        if self.temporal_is_child:
            reading["Temporal"] = (_tree_ticks([os.getpid()]) - own_ticks) / ticks
        reading["other processes"] = busy / ticks - sum(reading.values())
        return reading


def format_cores(cores: dict[str, float]) -> str:
    """`worker 0.95, PostgreSQL 0.40, Temporal 0.52 cores`."""
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items()) + " cores"


# ---------------------------------------------------------------------------------------------
# The three phases.


@dataclass
class Throughput:
    """The throughput run's outcome."""

    contracts: int
    lead_seconds: float
    slack_seconds: float
    """How long before T + grace the billing workflows were all waiting."""
    seconds: float
    """From T + grace to the last invoice paid."""
    issued: list[float]
    paid: list[float]
    cores: dict[str, float]

    @property
    def per_second(self) -> float:
        """Invoices issued and paid per second."""
        return self.contracts / self.seconds


async def measure_throughput(
    args: argparse.Namespace,
    database_url: str,
    tenant_id: str,
    settings: Settings,
    cpu: StackCpu,
) -> Throughput:
    """Open N contracts sharing period end T, let their workflows sleep, time T + grace → paid."""
    count: int = args.contracts
    lead: float = args.lead if args.lead is not None else auto_lead(count)
    opened_at = datetime.now(UTC).replace(microsecond=0)
    period = Period(opened_at, opened_at + timedelta(seconds=lead))
    due = period.end + timedelta(seconds=settings.invoice_grace_seconds)
    print(
        f"\nthroughput: {count:,} contracts, period end T = now + {lead:.0f}s, grace "
        f"{settings.invoice_grace_seconds:g}s (--lead sets how long setting up may take)"
    )
    temporal = await connect_temporal(settings)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with InProcessWorker(settings) as worker:
            with step(f"opening {count:,} contracts (their billing workflows start meanwhile)"):
                contracts = await seed_contracts(database_url, tenant_id, "tp", count, period)
            with step(f"rating {EVENTS_PER_CONTRACT} events for each"):
                async with InProcessRating.open(database_url, tenant_id) as rating:
                    await rating.rate_each(contracts, period)
            with step("waiting for every billing workflow to sleep until T + grace"):
                await wait_until_waiting(conn, temporal, settings.temporal_task_queue, count, due)
                worker.check()
            slack = (due - datetime.now(UTC)).total_seconds()
            print(f"  • {slack:.1f}s to spare before T + grace; waiting", flush=True)
            await asyncio.sleep(max(slack, 0.0))
            cpu.start()
            with step(f"invoicing {count:,} contracts, from T + grace until the last is paid"):
                await wait_until_paid(conn, worker, tenant_id, period.end, count, due)
            cores = cpu.cores()
        rows = await conn.fetch(
            "SELECT issued_at, paid_at FROM invoices WHERE tenant_id = $1 AND billing_date = $2",
            tenant_id,
            period.end,
        )
    finally:
        await conn.close()
    issued = sorted((r["issued_at"] - due).total_seconds() for r in rows)
    paid = sorted((r["paid_at"] - due).total_seconds() for r in rows)
    return Throughput(count, lead, slack, max(paid), issued, paid, cores)


def auto_lead(contracts: int) -> float:
    """How long after opening the first contract its period ends: room to set all of them up.

    On the 2-core benchmark machine a contract takes about 10 ms to open and rate, and its
    billing workflow's first steps (started from the outbox, the skipped opening invoice, the
    timer) about 80 ms more of the worker's time: 120 ms a contract leaves some margin. Where
    setting up overruns it the run stops and says so; give a larger --lead.
    """
    return 30.0 + 0.12 * contracts


async def wait_until_waiting(
    conn: asyncpg.Connection[Any], temporal: Client, task_queue: str, count: int, due: datetime
) -> None:
    """Until every contract's workflow has started and its opening invoice is done."""
    query = f"TaskQueue = '{task_queue}' AND WorkflowType = 'Invoice'"
    while True:
        undelivered = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND delivered_at IS NULL",
            Topic.CONTRACT_CREATED,
        )
        if not undelivered:
            opening = (await temporal.count_workflows(query)).count
            running = (
                await temporal.count_workflows(f"{query} AND ExecutionStatus = 'Running'")
            ).count
            if opening >= count and not running:
                return
        if datetime.now(UTC) >= due:
            raise SystemExit(
                "\nsetting up took longer than --lead allows: the period ended before every"
                " contract's billing workflow was waiting for it; run again with a larger --lead"
            )
        await asyncio.sleep(POLL_SECONDS * 4)


async def wait_until_paid(
    conn: asyncpg.Connection[Any],
    worker: InProcessWorker,
    tenant_id: str,
    billing_date: datetime,
    count: int,
    since: datetime,
) -> None:
    """Poll the invoices table until `count` invoices of the billing date are paid."""
    progress = Progress()
    last_paid, last_change = -1, progress.started
    while True:
        worker.check()
        row = await conn.fetchrow(
            "SELECT count(issued_at) AS issued, count(*) FILTER (WHERE state = 'paid') AS paid"
            " FROM invoices WHERE tenant_id = $1 AND billing_date = $2",
            tenant_id,
            billing_date,
        )
        assert row is not None
        now = time.monotonic()
        if row["paid"] != last_paid:
            last_paid, last_change = row["paid"], now
        if row["paid"] >= count:
            progress.close()
            return
        elapsed = (datetime.now(UTC) - since).total_seconds()
        issued, paid = row["issued"], row["paid"]
        progress.show(f"+{elapsed:.0f}s: {issued:,} issued, {paid:,} paid of {count:,}")
        if now - last_change > STALL_SECONDS:
            raise SystemExit(
                f"\nno invoice was paid for {STALL_SECONDS:.0f}s ({row['paid']} of {count});"
                " look for failed Invoice workflows in Temporal"
            )
        await asyncio.sleep(POLL_SECONDS)


@dataclass
class InvoiceTiming:
    """One InvoiceWorkflow, start to close, and each step's time (schedule to completion)."""

    events: int
    seconds: float
    steps: list[tuple[str, float]]


async def measure_latency(
    args: argparse.Namespace, database_url: str, tenant_id: str, settings: Settings
) -> list[InvoiceTiming]:
    """Two contracts, 10 and --events events, in one ended period; time each invoice workflow."""
    sizes = (SMALL_EVENTS, args.events)
    period = ended_period()
    print(f"\nlatency: two contracts of {SMALL_EVENTS} and {args.events:,} events, one period")
    with step("opening the two contracts (no worker running)"):
        contracts = await seed_contracts(database_url, tenant_id, "lat", len(sizes), period)
    async with InProcessRating.open(database_url, tenant_id) as rating:
        for contract, events in zip(contracts, sizes, strict=True):
            with step(f"rating {events:,} events"):
                await rating.rate_many(contract, period, events)
    # A task queue of its own: nothing the throughput run's worker left behind is in its way.
    settings = settings.replace(temporal_task_queue=f"{settings.temporal_task_queue}-latency")
    temporal = await connect_temporal(settings)
    handles = [
        temporal.get_workflow_handle(
            invoice_workflow_id(tenant_id, c.contract_id, period.end.isoformat(), 0)
        )
        for c in contracts
    ]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with InProcessWorker(settings) as worker:
            with step("starting the worker; invoicing both contracts"):
                await wait_until_paid(
                    conn, worker, tenant_id, period.end, len(sizes), datetime.now(UTC)
                )
                for handle in handles:  # paid is the last step; the workflow closes next
                    async with asyncio.timeout(STALL_SECONDS):
                        await handle.result()
    finally:
        await conn.close()
    timings = []
    for handle, events in zip(handles, sizes, strict=True):
        described = await handle.describe()
        assert described.close_time is not None, "the workflow's result came back: it closed"
        seconds = (described.close_time - described.start_time).total_seconds()
        timings.append(InvoiceTiming(events, seconds, await step_times(handle)))
    return timings


async def step_times(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, float]]:
    """Each activity of a workflow's history: (name, seconds from scheduled to completed)."""
    history = await handle.fetch_history()
    scheduled: dict[int, tuple[str, datetime]] = {}
    steps = []
    for event in history.events:
        at = event.event_time.ToDatetime(tzinfo=UTC)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, at)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            name, since = scheduled[attributes.scheduled_event_id]
            steps.append((name.removesuffix("_invoice"), (at - since).total_seconds()))
    return steps


@dataclass
class Baseline:
    """Invoicing without Temporal: N invoices' close + draft + finalize, then render + collect."""

    contracts: int
    core_seconds: float
    rest_seconds: float

    @property
    def core_per_second(self) -> float:
        """Invoices closed, drafted and finalized per second."""
        return self.contracts / self.core_seconds

    @property
    def all_per_second(self) -> float:
        """Invoices taken through all five steps per second."""
        return self.contracts / (self.core_seconds + self.rest_seconds)


async def measure_baseline(args: argparse.Namespace, database_url: str, tenant_id: str) -> Baseline:
    """N contracts like the throughput run's, invoiced by calling Invoicing in a loop."""
    count: int = args.contracts
    period = ended_period()
    print(f"\nbaseline: {count:,} contracts invoiced by calling Invoicing in a loop, no Temporal")
    with step(f"opening {count:,} contracts (no worker running)"):
        contracts = await seed_contracts(database_url, tenant_id, "base", count, period)
    with step(f"rating {EVENTS_PER_CONTRACT} events for each"):
        async with InProcessRating.open(database_url, tenant_id) as rating:
            await rating.rate_each(contracts, period)
    # The worker's pool and engine, as it builds them (synchronous_commit as configured).
    size = Settings.from_env().database_pool_size
    pool = await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=0, max_size=size)
    engine = create_engine(database_url, size)
    try:
        invoicing = Invoicing(pool, engine, SimulatedGateway(pool))
        invoice_ids = []
        with step("close + draft + finalize, one invoice at a time"):
            started = time.perf_counter()
            for contract in contracts:
                await invoicing.close_period(tenant_id, contract.contract_id, period.end)
                draft = await invoicing.draft(tenant_id, contract.contract_id, period.end)
                assert draft is not None, "every period end is invoiced"
                invoice_ids.append(
                    (await invoicing.finalize(tenant_id, draft.invoice_id)).invoice_id
                )
            core = time.perf_counter() - started
        with step("render + collect, one invoice at a time"):
            started = time.perf_counter()
            for invoice_id in invoice_ids:
                await invoicing.render(tenant_id, invoice_id)
                await invoicing.collect(tenant_id, invoice_id, 1)
            rest = time.perf_counter() - started
    finally:
        await pool.close()
        await engine.dispose()
    return Baseline(count, core, rest)


# ---------------------------------------------------------------------------------------------
# The report.


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values: the ⌈fraction × n⌉-th (NaN when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def render_table(rows: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table of (metric, measured, baseline / target), the figures right-aligned."""
    header = ("metric", "measured", "baseline / target")
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i == 1 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 1)}:|{'-' * (widths[2] + 2)}|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def report_rows(
    throughput: Throughput | None, baseline: Baseline | None, latency: Sequence[InvoiceTiming]
) -> list[tuple[str, str, str]]:
    """The table's rows, for the phases that ran."""
    rows = []
    if throughput is not None:
        n = f"{throughput.contracts:,}"
        rows.append(
            (
                f"invoices/s, {n} contracts via Temporal",
                f"{throughput.per_second:.1f}",
                f"target ≥ {INVOICES_PER_SECOND:g}",
            )
        )
    if baseline is not None:
        ratio = (
            ""
            if throughput is None
            else f" (Temporal run: {throughput.per_second / baseline.core_per_second:.2f}×)"
        )
        rows.append(
            (
                "invoices/s, close+draft+finalize loop",
                f"{baseline.core_per_second:.1f}",
                f"baseline: the database work{ratio}",
            )
        )
        ratio = (
            ""
            if throughput is None
            else f" (Temporal run: {throughput.per_second / baseline.all_per_second:.2f}×)"
        )
        rows.append(
            (
                "invoices/s, all five steps in a loop",
                f"{baseline.all_per_second:.1f}",
                f"baseline: no Temporal{ratio}",
            )
        )
    if throughput is not None:
        for label, values in (("issued", throughput.issued), ("paid", throughput.paid)):
            rows.append(
                (
                    f"{label} after T + grace, p50 / p99 / max",
                    f"{percentile(values, 0.5):.1f} / {percentile(values, 0.99):.1f} / "
                    f"{values[-1]:.1f} s",
                    "–",
                )
            )
    for timing in latency:
        rows.append(
            (
                f"invoice workflow, {timing.events:,} events",
                f"{timing.seconds * 1000:.0f} ms",
                " · ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in timing.steps)
                + " ms",
            )
        )
    if len(latency) == 2:
        small, large = latency
        rows.append(
            (
                f"latency {large.events:,} vs {small.events:,} events",
                f"{large.seconds / small.seconds:.2f}×",
                f"target ≤ {LATENCY_RATIO:g}×",
            )
        )
    return rows


def target_checks(throughput: Throughput | None, latency: Sequence[InvoiceTiming]) -> list[str]:
    """The issue's targets that this run measured, each with ✓ or ✗."""
    checks = []
    if throughput is not None and throughput.contracts < MIN_THROUGHPUT_CONTRACTS:
        checks.append(
            f"  – invoices/s: not checked below {MIN_THROUGHPUT_CONTRACTS} contracts (a few"
            " invoices take one invoice's latency, whatever the throughput)"
        )
    elif throughput is not None:
        rate = throughput.per_second
        checks.append(
            f"  {'✓' if rate >= INVOICES_PER_SECOND else '✗'} invoices/s: {rate:.1f}"
            f" (≥ {INVOICES_PER_SECOND:g})"
        )
    if len(latency) == 2:
        small, large = latency
        ratio = large.seconds / small.seconds
        ok = ratio <= LATENCY_RATIO
        checks.append(
            f"  {'✓' if ok else '✗'} invoice latency, {large.events:,} vs {small.events} events:"
            f" {ratio:.2f}× (≤ {LATENCY_RATIO:g}×)"
        )
    return checks


# ---------------------------------------------------------------------------------------------
# Entry point.


ALL_PHASES = ("throughput", "latency", "baseline")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python bench/invoice_bench.py",
        description="Benchmark closing a billing period for many contracts, on the local stack.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--contracts", type=int, default=1000, help="contracts invoiced at once (and in the loop)"
    )
    parser.add_argument(
        "--events", type=int, default=100_000, help="rated events of the latency's large contract"
    )
    parser.add_argument(
        "--grace", type=float, default=2.0, help="the worker's grace window after a period ends, s"
    )
    parser.add_argument(
        "--lead",
        type=float,
        default=None,
        help="seconds from opening the first throughput contract to its period end"
        " (default: 30 + 0.12 per contract)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(ALL_PHASES),
        help=f"comma-separated, of {', '.join(ALL_PHASES)}",
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(ALL_PHASES))
    if unknown or not phases:
        parser.error(f"unknown phases {unknown}; choose from {', '.join(ALL_PHASES)}")
    args.phases = [p for p in ALL_PHASES if p in phases]
    if args.contracts < 1 or args.events < 1 or args.grace < 0:
        parser.error("--contracts ≥ 1, --events ≥ 1 and --grace ≥ 0")
    if args.lead is not None and args.lead < 1:
        parser.error("--lead ≥ 1")
    return args


async def run_phases(
    args: argparse.Namespace, database_url: str, temporal: tuple[str, bool], cpu: StackCpu
) -> None:
    """Tenant and catalog, then each phase; the table."""
    with step(f"preparing tenant {TENANT_NAME!r} with the example catalog (fee in arrears)"):
        tenant_id = await prepare_tenant(database_url)
    settings = worker_settings(database_url, temporal[0], args.grace)
    throughput = baseline = None
    latency: list[InvoiceTiming] = []
    # The throughput run first, with the worker running while its contracts are opened; the
    # latency run starts a worker once its usage is rated; the baseline runs with none at all,
    # so no billing workflow ever picks up its contracts.
    if "throughput" in args.phases:
        throughput = await measure_throughput(args, database_url, tenant_id, settings, cpu)
    if "latency" in args.phases:
        latency = await measure_latency(args, database_url, tenant_id, settings)
    if "baseline" in args.phases:
        baseline = await measure_baseline(args, database_url, tenant_id)
    print()
    print(render_table(report_rows(throughput, baseline, latency)))
    if throughput is not None:
        print(
            f"\nthroughput run: T = {throughput.lead_seconds:.0f}s after the first contract was"
            f" opened, every billing workflow waiting {throughput.slack_seconds:.0f}s before"
            f" T + grace ({args.grace:g}s); CPU from T + grace to the last payment:"
            f" {format_cores(throughput.cores)}"
        )
        others = throughput.cores.get("other processes", 0.0)
        if others > NOISY_CORES:
            print(
                f"\n⚠ other processes used {others:.2f} of the {os.cpu_count()} cores while"
                " invoicing: the throughput figure understates this stack"
            )
    checks = target_checks(throughput, latency)
    if checks:
        print("\ntargets:\n" + "\n".join(checks))


def run(args: argparse.Namespace) -> None:
    """Bring the stack up, run the phases, take the stack down."""
    print(
        f"invoice bench — {os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f}), "
        f"phases {', '.join(args.phases)}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="invoice-bench-") as tmp,
        postgres_server(Path(tmp)) as (base_url, embedded),
        temporal_server(Path(tmp)) as temporal,
    ):
        with step("creating and migrating a fresh database"):
            database_url = asyncio.run(create_database(base_url))
        try:
            cpu = StackCpu(postmaster_pid(Path(tmp) / "pgdata"), temporal[1])
            asyncio.run(run_phases(args, database_url, temporal, cpu))
        finally:
            if not embedded:
                asyncio.run(drop_database(base_url, database_url))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    # The embedded PostgreSQL forks pg_ctl after gRPC has started threads (as in `rating dev`).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    # platformdirs warns on import when XDG_RUNTIME_DIR is unset (containers); harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
