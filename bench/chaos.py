"""The chaos suite: kill parts of the stack under journaled load; prove nothing was lost or doubled.

Run with `make chaos` (`uv run python bench/chaos.py`; `--help` for longer runs). Not a CI test:
a script that takes a few minutes and prints one table.

For each scenario (`single`: one `rating serve`; `replicas`: three on one database, some events
sent to all three at once) it starts a stack of its own in a temporary directory: an embedded
PostgreSQL with a data directory of its own (so its postmaster can be killed -9 and restarted),
the Temporal dev server, one `rating worker` and the servers, all as subprocesses on free ports.
A tenant, its keys and the example catalog are made with the bootstrap code `rating tenants
create` and `rating catalog apply` use; the customers, contracts and pools through the API
(ContractService), on 30-second billing periods so invoices are issued during the run:

  hot       a large prepaid commit, most of the traffic, late usage rolled forward
  arrears   a small free credit, then overage in arrears
  block     a small free credit, refused (INSUFFICIENT_CREDIT) once it is gone
  split     a free credit drawn before a prepaid commit, with a spend cap per period
  recharge  auto-recharge buys credit when its balance is low (through the worker)

A local webhook receiver takes every notification and counts deliveries per idempotency id.

Callers send RateAndDebit, BatchRateAndDebit and Authorize → Capture / Void with their own event
ids, and journal every attempt (request, status code, per-event answer) to journal.jsonl. An
attempt that gets no definitive answer is retried with the same payload a few times, then left
for later. Meanwhile the faults come in turn, one line each: kill -9 of a server (restarted),
kill -9 of PostgreSQL (restarted after a pause), SIGTERM of a server (graceful; restarted), and
kill -9 of the worker while a period's invoices are being issued (restarted). Reservations are
open during every kill. Afterwards every event still unacknowledged is retried with its payload
until answered, open reservations are voided, the stack is left to settle, and
bench/chaos_check.py checks the journal against the database. The table's columns:

  lost / duplicated / drift   see bench/chaos_check.py (each a count of failed checks)
  recover s                   per fault, from the fault to the first successful call sent after
                              it (for a server fault, answered by that server; for the worker,
                              until the period's invoices are all paid): max / median
  errors                      every non-OK answer callers got, by status code

It exits 1 if lost, duplicated or drift is non-zero, an invoice was numbered or billed twice, or
any INTERNAL / UNKNOWN answer was seen. Each run also self-tests the checker: it breaks copies of
the journal and of the database on purpose (an event debited twice, a rated event deleted, …) and
fails if a check does not catch one. `--self-test` does only that, on a short run without faults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from chaos_check import (
    BUGS,
    DB_DOCTORS,
    DEFINITIVE,
    DROP_BEFORE,
    Journal,
    Report,
    check,
    column_of,
    doctor_journal_fresh_twice,
    doctor_journal_refused,
    read_journal,
)
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from rating_client.errors import decode_rich_status, error_info
from rating_client.gen.rating.v1 import (
    contract_pb2,
    contract_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
)
from rating_service.core.encryption import new_key

REPO_ROOT = Path(__file__).resolve().parents[1]
TENANT = "chaos"
STATUS_EVERY_SECONDS = 5.0
CALL_TIMEOUT_SECONDS = 3.0
CHANNEL_OPTIONS = [
    # A restarted server is found again within half a second, not after gRPC's default
    # reconnect backoff (up to two minutes), which would be measured as its recovery.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


# ---------------------------------------------------------------------------------------------
# Options.


@dataclass(frozen=True)
class Options:
    """How hard and how long to shake the stack."""

    scenarios: tuple[str, ...]
    callers: int
    server_kills: int
    postgres_kills: int
    sigterms: int
    worker_kills: int
    warmup: float
    fault_gap: float
    postgres_down: float
    period_seconds: int
    grace_seconds: float
    gateway_latency: float
    attempts: int
    race_fraction: float
    settle_seconds: float
    quiesce_seconds: float
    seed: int
    out: Path | None
    keep: bool
    self_test_only: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python bench/chaos.py",
        description="Kill servers, PostgreSQL and the worker under journaled load; check that "
        "no event was lost or doubled and the money adds up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", default="single,replicas", help="comma-separated: single, replicas"
    )
    parser.add_argument("--callers", type=int, default=6, help="concurrent callers")
    parser.add_argument("--server-kills", type=int, default=10, help="kill -9 of a server")
    parser.add_argument("--postgres-kills", type=int, default=5, help="kill -9 of PostgreSQL")
    parser.add_argument("--sigterms", type=int, default=1, help="SIGTERM of a server (graceful)")
    parser.add_argument(
        "--worker-kills", type=int, default=1, help="kill -9 of the worker while invoicing"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before faults")
    parser.add_argument(
        "--fault-gap", type=float, default=1.0, help="seconds between a recovery and the next fault"
    )
    parser.add_argument(
        "--postgres-down", type=float, default=2.0, help="seconds PostgreSQL stays dead"
    )
    parser.add_argument(
        "--period-seconds", type=int, default=30, help="billing period of every contract"
    )
    parser.add_argument(
        "--grace-seconds", type=float, default=5.0, help="late-event window before invoicing"
    )
    parser.add_argument(
        "--gateway-latency",
        type=float,
        default=1.0,
        help="seconds the simulated gateway takes per charge (keeps invoices in flight longer)",
    )
    parser.add_argument(
        "--attempts", type=int, default=6, help="attempts per call during the load (then later)"
    )
    parser.add_argument(
        "--race-fraction",
        type=float,
        default=0.3,
        help="replicas: share of calls whose first attempt goes to every replica at once",
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=90.0, help="retrying unacknowledged events, at most"
    )
    parser.add_argument(
        "--quiesce-seconds",
        type=float,
        default=60.0,
        help="waiting for invoices, outbox and holds to settle before checking, at most",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where journals and logs go (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and Temporal data after the run"
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="only check the checker: a short run without faults, then doctored copies",
    )
    args = parser.parse_args(argv)
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    if not scenarios or set(scenarios) - {"single", "replicas"}:
        parser.error("--scenarios takes single and/or replicas")
    if args.callers < 1 or args.attempts < 1 or args.period_seconds < 10:
        parser.error("--callers ≥ 1, --attempts ≥ 1, --period-seconds ≥ 10")
    if args.self_test:
        scenarios = ("single",)
    return Options(
        scenarios=scenarios,
        callers=args.callers,
        server_kills=0 if args.self_test else args.server_kills,
        postgres_kills=0 if args.self_test else args.postgres_kills,
        sigterms=0 if args.self_test else args.sigterms,
        worker_kills=0 if args.self_test else args.worker_kills,
        warmup=args.warmup if not args.self_test else 8.0,
        fault_gap=args.fault_gap,
        postgres_down=args.postgres_down,
        period_seconds=args.period_seconds,
        grace_seconds=args.grace_seconds,
        gateway_latency=args.gateway_latency,
        attempts=args.attempts,
        race_fraction=args.race_fraction,
        settle_seconds=args.settle_seconds,
        quiesce_seconds=args.quiesce_seconds,
        seed=args.seed if args.seed is not None else random.randrange(1 << 30),
        out=args.out,
        keep=args.keep,
        self_test_only=args.self_test,
    )


# ---------------------------------------------------------------------------------------------
# The stack: processes that can be killed.


class Clock:
    """Seconds since the scenario started, for every line and record."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()

    def now(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        """A progress line."""
        print(f"[{self.name} +{self.now():6.1f}s] {text}", flush=True)


class Supervised:
    """A subprocess of the stack (`rating serve` or `rating worker`), restartable, logged."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.expect_exit = False
        self.unexpected_exits: list[str] = []

    def start(self) -> None:
        """Start (again)."""
        with self.log.open("ab") as log:
            log.write(f"\n--- chaos: starting {self.name} at {datetime.now(UTC)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.expect_exit = False

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        """Whether it runs."""
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """kill -9."""
        self.expect_exit = True
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait()

    async def terminate(self, within: float = 20.0) -> float:
        """SIGTERM and wait for the exit; seconds it took (kill -9 after `within` seconds)."""
        self.expect_exit = True
        started = time.monotonic()
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, within)
            if self.process.poll() is None:
                self.kill9()
        return time.monotonic() - started

    def check_exit(self) -> str | None:
        """If it exited on its own, say so (once) and forget the process."""
        if self.process is None or self.expect_exit or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.process = None
        note = f"{self.name} exited on its own with code {code} (see {self.log})"
        self.unexpected_exits.append(note)
        return note


class Postgres:
    """The embedded PostgreSQL of one scenario: its own data directory, killable."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None
        self.base_url = ""

    def start(self) -> str:
        """Start it (init on first use); its base URL."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        self.base_url = str(self._server.get_uri())
        return self.base_url

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from postmaster.pid."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> int:
        """kill -9 the postmaster, then whatever of its children outlives it; its pid."""
        import psutil  # type: ignore[import-untyped]

        pid = self.postmaster_pid()
        assert pid is not None, "PostgreSQL is not running"
        postmaster = psutil.Process(pid)
        children = postmaster.children(recursive=True)
        postmaster.kill()
        postmaster.wait(5)
        # Backends notice their postmaster died and exit; one stuck in a query would keep the
        # shared memory and stop the restart, so what is left after a moment goes the same way.
        _, alive = psutil.wait_procs(children, timeout=1.0)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(alive, timeout=5)
        return pid

    def restart(self, attempts: int = 5) -> None:
        """Start it again on the same data directory (crash recovery runs first).

        `pg_ctl start` itself has been seen to die (SIGSEGV) right after a kill -9 on a
        loaded machine; that is the tool, not the service under test, so it is tried again.
        """
        from pgserver.postgres_server import PostgresServer

        for attempt in range(attempts):
            try:
                with PostgresServer._lock:
                    self._server.ensure_postgres_running()
                return
            except subprocess.CalledProcessError as error:
                if attempt + 1 == attempts:
                    raise
                print(f"  pg_ctl start failed ({error}); trying again", flush=True)
                time.sleep(1.0)

    def stop(self) -> None:
        """Stop it politely."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class Stack:
    """Everything one scenario runs, and where it is."""

    workdir: Path
    clock: Clock
    postgres: Postgres
    database_url: str
    temporal: Any
    temporal_address: str
    task_queue: str
    servers: list[Supervised]
    addresses: list[str]
    worker: Supervised

    def processes(self) -> list[Supervised]:
        """Servers and worker."""
        return [*self.servers, self.worker]


WEBHOOK_SECRET_KEYS = new_key("chaos")
"""The key the stack's webhook signing secrets are sealed with, made for this run."""


def stack_env(
    database_url: str, temporal_address: str, task_queue: str, opts: Options
) -> dict[str, str]:
    """The environment every process of the stack shares."""
    return {
        **os.environ,
        "RATING_DATABASE_URL": database_url,
        "RATING_TEMPORAL_ADDRESS": temporal_address,
        "RATING_TEMPORAL_TASK_QUEUE": task_queue,
        "RATING_DATABASE_POOL_SIZE": "5",
        "RATING_LOG_LEVEL": "WARNING",
        "RATING_LOG_FORMAT": "json",
        "RATING_SHUTDOWN_GRACE_SECONDS": "3",
        "RATING_HEALTH_CHECK_INTERVAL_SECONDS": "0.5",
        "RATING_RESERVATION_SWEEP_SECONDS": "1",
        "RATING_INVOICE_GRACE_SECONDS": str(opts.grace_seconds),
        "RATING_OUTBOX_POLL_SECONDS": "0.2",
        "RATING_GATEWAY_LATENCY_SECONDS": str(opts.gateway_latency),
        "RATING_WEBHOOK_TIMEOUT_SECONDS": "2",
        "RATING_WEBHOOK_RETRY_INITIAL_SECONDS": "1",
        "RATING_WEBHOOK_RETRY_MAX_SECONDS": "5",
        "RATING_SETTLEMENT_POLL_SECONDS": "5",
        "RATING_METRICS_ADDRESS": "127.0.0.1:0",
        "RATING_WEBHOOK_SECRET_KEYS": WEBHOOK_SECRET_KEYS,
    }


async def start_stack(workdir: Path, clock: Clock, replicas: int, opts: Options) -> Stack:
    """PostgreSQL, Temporal, migrations, then the servers and the worker."""
    from rating_service.cli.dev import ensure_database
    from rating_service.runtime.embedded import TemporalDevServer, free_port
    from rating_service.store import migrations

    postgres = Postgres(workdir / "pgdata")
    started = time.monotonic()
    base_url = await asyncio.to_thread(postgres.start)
    database_url = await ensure_database(base_url, "rating")
    await asyncio.to_thread(migrations.upgrade, database_url)
    clock.say(
        f"PostgreSQL up and migrated ({time.monotonic() - started:.1f}s),"
        f" postmaster {postgres.postmaster_pid()}"
    )
    temporal = TemporalDevServer(free_port(), None, None, workdir / "temporal.log")
    address = await asyncio.to_thread(temporal.start)
    clock.say(f"Temporal dev server on {address}")
    task_queue = f"chaos-{secrets.token_hex(3)}"
    env = stack_env(database_url, address, task_queue, opts)
    servers, addresses = [], []
    for n in range(replicas):
        port = free_port()
        addresses.append(f"127.0.0.1:{port}")
        servers.append(
            Supervised(
                f"server#{n}",
                [sys.executable, "-m", "rating_service.cli", "serve"],
                {**env, "RATING_LISTEN_ADDRESS": f"127.0.0.1:{port}"},
                workdir / f"server{n}.log",
            )
        )
    worker = Supervised(
        "worker",
        [sys.executable, "-m", "rating_service.cli", "worker"],
        env,
        workdir / "worker.log",
    )
    stack = Stack(
        workdir,
        clock,
        postgres,
        database_url,
        temporal,
        address,
        task_queue,
        servers,
        addresses,
        worker,
    )
    for server in servers:
        server.start()
    worker.start()
    for n in range(replicas):
        await wait_serving(stack, n)
    clock.say(f"{replicas} server(s) serving on {', '.join(addresses)}; worker pid {worker.pid}")
    return stack


async def wait_serving(stack: Stack, n: int, within: float = 60.0) -> float:
    """Poll server n's health until SERVING; seconds it took."""
    from rating_service.api.health import probe

    started = time.monotonic()
    while time.monotonic() - started < within:
        if not stack.servers[n].alive():
            raise SystemExit(
                f"{stack.servers[n].name} died while starting; see {stack.servers[n].log}"
            )
        if await probe(stack.addresses[n], timeout_seconds=1.0) == "SERVING":
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise SystemExit(f"{stack.servers[n].name} did not report SERVING in {within:.0f}s")


async def stop_stack(stack: Stack, keep: bool) -> None:
    """Stop everything; keep the logs and journal (and the data with `keep`)."""
    for process in stack.processes():
        await process.terminate()
    await asyncio.to_thread(stack.temporal.stop)
    await asyncio.to_thread(stack.postgres.stop)
    if not keep:
        import shutil

        shutil.rmtree(stack.workdir / "pgdata", ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The tenant, its catalog, contracts and webhook endpoint.


@dataclass(frozen=True)
class Customer:
    """A chaos customer: its contract terms and pools, and its share of the traffic."""

    name: str
    weight: float
    overage_policy: str
    pools: tuple[dict[str, Any], ...]
    extra: dict[str, Any] = field(default_factory=dict)


CUSTOMERS = (
    Customer(
        "hot",
        0.55,
        "block",
        ({"kind": "prepaid_commit", "amount": "1000000"},),
        {"late_usage": "roll_forward"},
    ),
    Customer("arrears", 0.12, "arrears", ({"kind": "credit", "amount": "0.50"},)),
    Customer("block", 0.12, "block", ({"kind": "credit", "amount": "1.00"},)),
    Customer(
        "split",
        0.11,
        "arrears",
        (
            {"kind": "credit", "amount": "0.30", "priority": 0},
            {"kind": "prepaid_commit", "amount": "100", "priority": 1},
        ),
        {"spend_cap": "0.40"},
    ),
    Customer(
        "recharge",
        0.10,
        "block",
        ({"kind": "credit", "amount": "0.30"},),
        {"auto_recharge": {"threshold": "0.20", "amount": "0.50"}},
    ),
)


@dataclass
class Tenant:
    """What the load needs: keys, customer ids, contracts, billing times."""

    tenant_id: str
    admin_token: str
    rater_token: str
    customers: dict[str, str]
    """customer name → customer id."""
    contracts: dict[str, str]
    """customer name → contract id."""
    term_start: datetime
    webhook_secret: str = ""


async def prepare_tenant(stack: Stack, opts: Options, webhook_url: str) -> Tenant:
    """Tenant and keys (bootstrap), example catalog, webhook endpoint, then contracts by API."""
    from rating_service.cli.catalog_file import read_catalog_file
    from rating_service.cli.dev import EXAMPLE_CATALOG
    from rating_service.core.auth import Caller, Role, issue_key
    from rating_service.core.encryption import EncryptionKeys
    from rating_service.outbox.topics import NOTIFICATION_TOPICS
    from rating_service.services.catalog import Catalogs
    from rating_service.services.webhook import Notifications
    from rating_service.store.catalog import CatalogStore
    from rating_service.store.database import asyncpg_dsn, create_engine
    from rating_service.store.tenant import TenantStore

    engine = create_engine(stack.database_url, pool_size=1)
    pool = await asyncpg.create_pool(asyncpg_dsn(stack.database_url), min_size=1, max_size=2)
    try:
        store = TenantStore(engine)
        tenant = await store.create_tenant(TENANT, actor="rating chaos")
        now = datetime.now(UTC)
        admin = issue_key(tenant.tenant_id, Role.ADMIN, "chaos admin", now)
        rater = issue_key(tenant.tenant_id, Role.RATER, "chaos callers", now)
        await store.add_key(admin.key, actor="rating chaos")
        await store.add_key(rater.key, actor="rating chaos")
        caller = Caller(tenant.tenant_id, "rating chaos", Role.ADMIN)
        await Catalogs(CatalogStore(engine)).apply(
            caller, read_catalog_file(EXAMPLE_CATALOG), dry_run=False
        )
        keys = EncryptionKeys.parse(WEBHOOK_SECRET_KEYS, "RATING_WEBHOOK_SECRET_KEYS")
        added = await Notifications(pool, keys).add_endpoint(
            tenant.tenant_id, webhook_url, NOTIFICATION_TOPICS, "rating chaos"
        )
    finally:
        await pool.close()
        await engine.dispose()
    start = datetime.now(UTC).replace(microsecond=0)
    customers, contracts = {}, {}
    metadata = (("authorization", f"Bearer {admin.token}"),)
    async with aio.insecure_channel(stack.addresses[0], options=CHANNEL_OPTIONS) as channel:
        api = contract_pb2_grpc.ContractServiceStub(channel)
        for customer in CUSTOMERS:
            customer_id = f"{customer.name}-{secrets.token_hex(3)}"
            await api.CreateCustomer(
                contract_pb2.CreateCustomerRequest(customer_id=customer_id, name=customer.name),
                metadata=metadata,
                timeout=10,
            )
            terms: dict[str, Any] = {
                "customer_id": customer_id,
                "term_start": start.isoformat(),
                "billing_anchor": {"day": 1},
                "billing_frequency": "monthly",
                "billing_interval_seconds": opts.period_seconds,
                "invoice_currency": "USD",
                "rate_card_key": "list",
                "overage_policy": customer.overage_policy,
                "payment_method": "pm_ok",
                "overrides": [
                    {
                        "product_key": "platform-fee",
                        "effective_from": start.isoformat(),
                        # In arrears and small: each period's invoice carries a fee and usage.
                        "replace_price": {
                            "model": "flat_fee",
                            "amount": "1",
                            "timing": "in_arrears",
                        },
                    }
                ],
                "alert_thresholds": [
                    {"threshold_id": "low", "kind": "balance_below", "amount": "0.25"}
                ],
                **customer.extra,
            }
            reply = await api.CreateContract(
                contract_pb2.CreateContractRequest(
                    contract=json_format.ParseDict(terms, contract_pb2.Contract())
                ),
                metadata=metadata,
                timeout=10,
            )
            contract_id = reply.contract.contract_id
            for n, terms_of_pool in enumerate(customer.pools):
                request = json_format.ParseDict(
                    {
                        "grant_id": f"{customer_id}-pool-{n}",
                        "contract_id": contract_id,
                        **terms_of_pool,
                    },
                    contract_pb2.AddCommitmentRequest(),
                )
                await api.AddCommitment(request, metadata=metadata, timeout=10)
            customers[customer.name] = customer_id
            contracts[customer.name] = contract_id
    return Tenant(
        tenant.tenant_id, admin.token, rater.token, customers, contracts, start, added.secret
    )


class WebhookReceiver:
    """A local endpoint that verifies each delivery and counts 2xx answers per idempotency id."""

    def __init__(self) -> None:
        self.secret = ""
        self.delivered: Counter[str] = Counter()
        self.refused = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on a free port; the URL."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/chaos"

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from rating_service.services.webhook import (
            EVENT_ID_HEADER,
            SIGNATURE_HEADER,
            InvalidSignature,
            verify_signature,
        )

        status = "400 Bad Request"
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if not self.secret:
                status = "503 Service Unavailable"
            else:
                try:
                    verify_signature(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), body)
                    self.delivered[headers.get(EVENT_ID_HEADER.lower(), "")] += 1
                    status = "204 No Content"
                except InvalidSignature:
                    self.refused += 1
                    status = "401 Unauthorized"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


# ---------------------------------------------------------------------------------------------
# The load: callers with their own ids, every attempt journaled.


@dataclass
class Unit:
    """One call that must be answered definitively: its RPC, request, and the events in it."""

    op: str
    """rate, batch, authorize, capture or void."""
    key: str
    request: Any
    """The RPC's request message."""
    settled: bool = False
    outcome: str = ""
    """The settling answer's code (for a batch: OK once every item is answered)."""
    response: Any = None


METHODS = {
    "rate": "RateAndDebit",
    "batch": "BatchRateAndDebit",
    "authorize": "Authorize",
    "capture": "Capture",
    "void": "Void",
}
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def answer_of(event_id: str, response: rating_pb2.RateAndDebitResponse) -> dict[str, Any]:
    """The journal's form of a charged event's answer."""
    return {
        "event_id": event_id,
        "code": "OK",
        "reason": "",
        "replay": response.replay,
        "charge": response.charge,
        "contract_id": response.contract_id,
    }


def events_of(unit: Unit) -> list[str]:
    """Event ids in a unit's request."""
    if unit.op == "rate" or unit.op == "capture":
        return [unit.request.event.event_id]
    if unit.op == "batch":
        return [e.event_id for e in unit.request.events]
    return []


class Load:
    """The callers, the journal, and what the status line shows."""

    def __init__(self, stack: Stack, tenant: Tenant, opts: Options, journal: Path) -> None:
        self.stack = stack
        self.tenant = tenant
        self.opts = opts
        self.clock = stack.clock
        self.rng = random.Random(opts.seed)
        self.channels = [aio.insecure_channel(a, options=CHANNEL_OPTIONS) for a in stack.addresses]
        self.stubs = [rating_pb2_grpc.RatingServiceStub(c) for c in self.channels]
        self.metadata = (("authorization", f"Bearer {tenant.rater_token}"),)
        self._journal = journal.open("a")
        self.stop = asyncio.Event()
        self.pending: list[Unit] = []
        """Units left unanswered after their attempts; retried after the load."""
        self.open_reservations: dict[str, Unit] = {}
        """Authorized reservations not yet captured or voided."""
        self.attempts = 0
        self.ok = 0
        self.codes: Counter[str] = Counter()
        self.last_ok: dict[int, float] = {}
        self._ids = 0
        self._names = [c.name for c in CUSTOMERS]
        self._weights = [c.weight for c in CUSTOMERS]

    async def close(self) -> None:
        """Close the channels and the journal."""
        for channel in self.channels:
            await channel.close(grace=None)
        self._journal.close()

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{self.clock.name}-{prefix}-{self._ids:06d}"

    # --- what is sent ----------------------------------------------------------------------

    def usage_event(self, customer: str | None = None) -> rating_pb2.UsageEvent:
        """A usage event of a random kind for a customer drawn by traffic weight."""
        rng = self.rng
        name = customer or rng.choices(self._names, self._weights)[0]
        roll = rng.random()
        if roll < 0.75:
            event_type = "llm.completion"
            properties = {
                "model": rng.choice(("gpt-4o", "gpt-4o-mini")),
                "token_type": rng.choice(("input", "output", "cached_input")),
                "tokens": str(rng.randint(100, 3000)),
            }
        elif roll < 0.9:
            event_type, properties = "embedding.created", {"tokens": str(rng.randint(1000, 200000))}
        else:
            event_type = "image.generated"
            properties = {"quality": rng.choice(("standard", "standard", "hd"))}
        return rating_pb2.UsageEvent(
            event_id=self._next_id("ev"),
            customer_id=self.tenant.customers[name],
            event_type=event_type,
            timestamp=_timestamp(datetime.now(UTC)),
            properties=properties,
        )

    # --- one attempt -----------------------------------------------------------------------

    async def attempt(self, unit: Unit, server: int, caller: int, phase: str) -> bool:
        """Send a unit once to a server; journal it; whether it is now settled."""
        sent = self.clock.now()
        code, reason, message, response = "OK", "", "", None
        try:
            method = getattr(self.stubs[server], METHODS[unit.op])
            response = await method(
                unit.request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS
            )
        except aio.AioRpcError as error:
            code, message = error.code().name, (error.details() or "")[:200]
            status = decode_rich_status(error.trailing_metadata())
            info = None if status is None else error_info(status)
            reason = "" if info is None else info.reason
        answers = self._answers(unit, code, reason, response)
        if unit.op == "batch" and code == "OK":
            settled = all(a["code"] in DEFINITIVE for a in answers)
        else:
            settled = code in DEFINITIVE
        record = {
            "t": round(self.clock.now(), 4),
            "sent": round(sent, 4),
            "phase": phase,
            "caller": caller,
            "server": server,
            "op": unit.op,
            "key": unit.key,
            "request": json_format.MessageToDict(unit.request, preserving_proto_field_name=True),
            "code": code,
            "reason": reason,
            "message": message,
            "answers": answers,
        }
        if response is not None and unit.op in ("authorize", "void"):
            record["result"] = {"replay": response.replay}
        self._journal.write(json.dumps(record) + "\n")
        self.attempts += 1
        if code == "OK":
            self.ok += 1
            self.last_ok[server] = self.clock.now()
        else:
            self.codes[code] += 1
        for a in answers if code == "OK" else ():
            if a["code"] != "OK":
                self.codes[a["code"]] += 1
        if settled and not unit.settled:
            unit.settled, unit.outcome, unit.response = True, code, response
        return settled

    def _answers(self, unit: Unit, code: str, reason: str, response: Any) -> list[dict[str, Any]]:
        if code != "OK":
            return [{"event_id": e, "code": code, "reason": reason} for e in events_of(unit)]
        if unit.op == "rate":
            return [answer_of(unit.key, response)]
        if unit.op == "capture":
            return [answer_of(unit.request.event.event_id, response.debit)]
        if unit.op == "batch":
            answers = []
            for event, item in zip(unit.request.events, response.results, strict=False):
                if item.WhichOneof("result") == "response":
                    answers.append(answer_of(event.event_id, item.response))
                else:
                    answers.append(
                        {
                            "event_id": event.event_id,
                            "code": CODE_NAMES.get(item.error.code, str(item.error.code)),
                            "reason": item.error.reason,
                        }
                    )
            return answers
        return []

    async def settle(
        self, unit: Unit, caller: int, attempts: int | None, race: bool, phase: str = "load"
    ) -> bool:
        """Attempt a unit until definitively answered or out of attempts (None: no limit)."""
        n = 0
        deadline = time.monotonic() + self.opts.settle_seconds
        while not unit.settled:
            if attempts is not None and n >= attempts:
                return False
            if attempts is None and time.monotonic() > deadline:
                return False
            if race and n == 0 and len(self.stubs) > 1:
                await asyncio.gather(
                    *(self.attempt(unit, s, caller, phase) for s in range(len(self.stubs)))
                )
            else:
                await self.attempt(unit, self.rng.randrange(len(self.stubs)), caller, phase)
            n += 1
            if not unit.settled:
                await asyncio.sleep(min(0.05 * 2**n, 1.0) * self.rng.uniform(0.5, 1.5))
        return True

    # --- callers ---------------------------------------------------------------------------

    async def caller(self, n: int) -> None:
        """One internal service: calls in a loop until the load stops."""
        rng = self.rng
        while not self.stop.is_set():
            roll = rng.random()
            race = rng.random() < self.opts.race_fraction
            if roll < 0.6:
                event = self.usage_event()
                unit = Unit("rate", event.event_id, rating_pb2.RateAndDebitRequest(event=event))
                await self._settle_or_defer(unit, n, race)
            elif roll < 0.8:
                customer = rng.choices(self._names, self._weights)[0]
                events = [self.usage_event(customer) for _ in range(rng.randint(2, 6))]
                unit = Unit(
                    "batch", events[0].event_id, rating_pb2.BatchRateAndDebitRequest(events=events)
                )
                await self._settle_or_defer(unit, n, race)
            else:
                await self.reservation(n, race)
            await asyncio.sleep(rng.uniform(0.0, 0.04))

    async def reservation(self, n: int, race: bool) -> None:
        """Authorize, stream for a moment (holds open across faults), then capture or void."""
        rng = self.rng
        name = rng.choice(("hot", "hot", "arrears", "split"))
        reservation_id = self._next_id("rsv")
        authorize = Unit(
            "authorize",
            reservation_id,
            rating_pb2.AuthorizeRequest(
                reservation_id=reservation_id,
                customer_id=self.tenant.customers[name],
                product_key="llm-tokens",
                amount=str(Decimal(rng.randint(5, 40)) / 1000),
                timestamp=_timestamp(datetime.now(UTC)),
                ttl_seconds=30,
            ),
        )
        self.open_reservations[reservation_id] = authorize
        if not await self._settle_or_defer(authorize, n, False):
            return
        if authorize.outcome != "OK":
            self.open_reservations.pop(reservation_id, None)
            return
        await asyncio.sleep(rng.uniform(0.5, 4.0))  # the streamed completion
        if rng.random() < 0.75:
            event = self.usage_event(name)
            event.event_type = "llm.completion"
            event.properties.clear()
            event.properties.update(
                {"model": "gpt-4o", "token_type": "output", "tokens": str(rng.randint(100, 3000))}
            )
            unit = Unit(
                "capture",
                reservation_id,
                rating_pb2.CaptureRequest(reservation_id=reservation_id, event=event),
            )
        else:
            unit = Unit(
                "void", reservation_id, rating_pb2.VoidRequest(reservation_id=reservation_id)
            )
        if await self._settle_or_defer(unit, n, race and unit.op == "capture"):
            self.open_reservations.pop(reservation_id, None)

    async def _settle_or_defer(self, unit: Unit, n: int, race: bool) -> bool:
        if await self.settle(unit, n, self.opts.attempts, race):
            return True
        self.pending.append(unit)
        if unit.op in ("capture", "void"):
            # Its capture or void is retried later; voiding it as well would race that.
            self.open_reservations.pop(unit.key, None)
        return False

    # --- afterwards ------------------------------------------------------------------------

    async def settle_all(self) -> tuple[int, int]:
        """Retry every unanswered unit until answered; void reservations left open.

        Returns (units retried, still unanswered).
        """
        units = list(self.pending)
        for reservation_id, authorize in list(self.open_reservations.items()):
            units.append(
                Unit("void", reservation_id, rating_pb2.VoidRequest(reservation_id=reservation_id))
            )
            if authorize in self.pending:
                # Its Authorize is answered first (it may hold), then the void releases it.
                units.remove(authorize)
                units.insert(0, authorize)
        slots = asyncio.Semaphore(8)

        async def one(unit: Unit) -> None:
            async with slots:
                await self.settle(unit, -1, None, False, phase="settle")

        authorizes = [u for u in units if u.op == "authorize"]
        await asyncio.gather(*(one(u) for u in authorizes))
        await asyncio.gather(*(one(u) for u in units if u.op != "authorize"))
        return len(units), sum(1 for u in units if not u.settled)


# ---------------------------------------------------------------------------------------------
# Faults.


@dataclass
class Fault:
    """One fault injected: when, what, on which target, and how long until things worked."""

    at: float
    kind: str
    target: int | None
    detail: str
    recovered: float | None = None


def fault_plan(opts: Options, rng: random.Random) -> list[str]:
    """Server kills with PostgreSQL kills spread among them and the SIGTERMs in the middle."""
    plan = ["server"] * opts.server_kills
    for n in range(opts.postgres_kills):
        plan.insert(round((n + 0.5) * len(plan) / opts.postgres_kills) + n, "postgres")
    for _ in range(opts.sigterms):
        plan.insert(len(plan) // 2, "sigterm")
    return plan


class Faults:
    """Injects the faults in turn, one line each, and records them."""

    def __init__(self, stack: Stack, load: Load, tenant: Tenant, opts: Options) -> None:
        self.stack = stack
        self.load = load
        self.tenant = tenant
        self.opts = opts
        self.clock = stack.clock
        self.rng = random.Random(opts.seed + 1)
        self.faults: list[Fault] = []
        self.plan = fault_plan(opts, self.rng)
        self.total = len(self.plan) + opts.worker_kills
        self.busy = asyncio.Lock()
        """Held while a process is being killed and restarted, so the supervisor keeps off."""

    def _line(self, fault: Fault, text: str) -> None:
        self.clock.say(f"fault {len(self.faults)}/{self.total}: {text}")

    async def run(self) -> None:
        """The planned faults, each after the previous one recovered and a gap."""
        await asyncio.sleep(self.opts.warmup)
        for kind in self.plan:
            async with self.busy:
                if kind == "server":
                    await self.kill_server()
                elif kind == "sigterm":
                    await self.sigterm_server()
                else:
                    await self.kill_postgres()
            await asyncio.sleep(self.opts.fault_gap)

    async def kill_server(self) -> None:
        """kill -9 a server (with reservations open), restart it, wait until it serves."""
        n = self.rng.randrange(len(self.stack.servers))
        server = self.stack.servers[n]
        holds = len(self.load.open_reservations)
        pid = server.pid
        server.kill9()
        fault = Fault(self.clock.now(), "server kill -9", n, f"pid {pid}")
        self.faults.append(fault)
        server.start()
        took = await wait_serving(self.stack, n)
        self._line(
            fault,
            f"kill -9 {server.name} (pid {pid}, {holds} reservations open) → restarted,"
            f" serving after {took:.1f}s",
        )

    async def sigterm_server(self) -> None:
        """SIGTERM a server (graceful drain), restart it."""
        n = self.rng.randrange(len(self.stack.servers))
        server = self.stack.servers[n]
        pid = server.pid
        fault = Fault(self.clock.now(), "server SIGTERM", n, f"pid {pid}")
        self.faults.append(fault)
        drained = await server.terminate()
        server.start()
        took = await wait_serving(self.stack, n)
        self._line(
            fault,
            f"SIGTERM {server.name} (pid {pid}) → exited after {drained:.1f}s, restarted,"
            f" serving after {took:.1f}s",
        )

    async def kill_postgres(self) -> None:
        """kill -9 the postmaster, keep it down a moment, restart it (crash recovery)."""
        holds = len(self.load.open_reservations)
        pid = await asyncio.to_thread(self.stack.postgres.kill9)
        fault = Fault(self.clock.now(), "postgres kill -9", None, f"postmaster {pid}")
        self.faults.append(fault)
        await asyncio.sleep(self.opts.postgres_down)
        started = time.monotonic()
        await asyncio.to_thread(self.stack.postgres.restart)
        self._line(
            fault,
            f"kill -9 PostgreSQL (postmaster {pid}, {holds} reservations open), down"
            f" {self.opts.postgres_down:.0f}s → restarted in {time.monotonic() - started:.1f}s"
            f" (postmaster {self.stack.postgres.postmaster_pid()})",
        )

    async def kill_worker_while_invoicing(self) -> None:
        """When a period's invoices are under way, kill -9 the worker; restart it; time recovery.

        Not under `busy`: it touches only the worker, and must not wait for a server restart
        to end, or the invoices would be done before it strikes.
        """
        await asyncio.sleep(self.opts.warmup)
        for _ in range(self.opts.worker_kills):
            for _tries in range(3):  # a period whose invoices all went through unseen: the next
                billing_date, states = await self._invoicing_under_way()
                if states is not None:
                    break
            else:
                self.clock.say("⚠ never caught invoices under way: the worker was not killed")
                return
            pid = self.stack.worker.pid
            self.stack.worker.kill9()
            fault = Fault(self.clock.now(), "worker kill -9", None, f"pid {pid}")
            self.faults.append(fault)
            await asyncio.sleep(1.0)
            self.stack.worker.start()
            shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            self._line(
                fault,
                f"kill -9 worker (pid {pid}) while invoicing the period ending"
                f" {billing_date:%H:%M:%S} (invoices: {shown}) → restarted",
            )
            started = time.monotonic()
            while time.monotonic() - started < 120:
                states = await self._invoice_states(billing_date)
                if states.get("paid", 0) >= len(CUSTOMERS):
                    fault.recovered = self.clock.now()
                    break
                await asyncio.sleep(0.25)
            waited = (
                "not all paid"
                if fault.recovered is None
                else f"after {fault.recovered - fault.at:.1f}s"
            )
            self.clock.say(
                f"  the period ending {billing_date:%H:%M:%S}: invoices"
                f" {dict(sorted(states.items()))}, {waited}"
            )

    async def _invoicing_under_way(self) -> tuple[datetime, dict[str, int] | None]:
        """Wait for the next period's invoicing; its invoice states once some but not all are
        paid (None if they all went through between two looks)."""
        period = timedelta(seconds=self.opts.period_seconds)
        grace = timedelta(seconds=self.opts.grace_seconds)
        now = datetime.now(UTC)
        k = max(1, int((now - grace - self.tenant.term_start) / period) + 1)
        billing_date = self.tenant.term_start + k * period
        due = billing_date + grace
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = await self._invoice_states(billing_date)
            if states and states.get("paid", 0) < len(CUSTOMERS):
                return billing_date, states
            if states.get("paid", 0) >= len(CUSTOMERS):
                return billing_date, None
            await asyncio.sleep(0.1)
        return billing_date, None

    async def _invoice_states(self, billing_date: datetime) -> dict[str, int]:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(_dsn(self.stack.database_url), timeout=2)
            try:
                rows = await conn.fetch(
                    "SELECT state, count(*) AS n FROM invoices"
                    " WHERE tenant_id = $1 AND billing_date = $2 GROUP BY 1",
                    self.tenant.tenant_id,
                    billing_date,
                )
                return {row["state"]: row["n"] for row in rows}
            finally:
                await conn.close()
        return {}


def _dsn(url: str) -> str:
    from rating_service.store.database import asyncpg_dsn

    return asyncpg_dsn(url)


async def supervise(stack: Stack, faults: Faults, stop: asyncio.Event) -> None:
    """Restart any process that exits without being told to, and say so (that is a finding)."""
    while not stop.is_set():
        async with faults.busy:
            for n, process in enumerate(stack.processes()):
                note = process.check_exit()
                if note is not None:
                    stack.clock.say(f"⚠ {note}; restarting it")
                    process.start()
                    if n < len(stack.servers):
                        with contextlib.suppress(SystemExit):
                            await wait_serving(stack, n)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def status_lines(
    stack: Stack, load: Load, receiver: WebhookReceiver, stop: asyncio.Event
) -> None:
    """A status line every few seconds."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_EVERY_SECONDS)
        if stop.is_set():
            return
        up = sum(1 for s in stack.servers if s.alive())
        errors = ", ".join(f"{c} {n}" for c, n in load.codes.most_common()) or "none"
        stack.clock.say(
            f"status: {load.attempts} attempts, {load.ok} OK | errors {errors} |"
            f" {len(load.pending)} deferred, {len(load.open_reservations)} reservations open |"
            f" servers {up}/{len(stack.servers)}, postgres"
            f" {'up' if stack.postgres.postmaster_pid() else 'down'}, worker"
            f" {'up' if stack.worker.alive() else 'down'}"
            f" | webhooks {sum(receiver.delivered.values())}"
        )


# ---------------------------------------------------------------------------------------------
# A scenario, start to finish.


@dataclass
class Outcome:
    """A scenario's row of the table, and what is printed under it."""

    name: str
    events: int
    faults: list[Fault]
    report: Report
    journal: Journal
    unexpected_exits: list[str]
    self_test: list[tuple[str, bool, str]]
    workdir: Path
    unresolved_after_settle: int

    def recovery(self) -> tuple[float | None, float | None]:
        """(max, median) seconds to recover over the faults."""
        times = [f.recovered - f.at for f in self.faults if f.recovered is not None]
        if not times:
            return None, None
        return max(times), statistics.median(times)


def measure_recovery(faults: Sequence[Fault], journal: Journal) -> None:
    """Fill in each fault's recovery: the first OK call sent after it (by the right server)."""
    oks = sorted(
        (r["sent"], r["t"], r["server"])
        for r in journal.attempts
        if r["code"] == "OK" and "sent" in r
    )
    for fault in faults:
        if fault.recovered is not None:
            continue
        for sent, answered, server in oks:
            if sent >= fault.at and (fault.target is None or server == fault.target):
                fault.recovered = answered
                break


async def run_scenario(
    name: str, replicas: int, opts: Options, out: Path, with_self_test: bool
) -> Outcome:
    """Stack up, tenant, load + faults, settle, check, (self-test,) stack down."""
    workdir = out / name
    workdir.mkdir(parents=True, exist_ok=True)
    journal_path = workdir / "journal.jsonl"
    clock = Clock(name)
    fault_count = opts.server_kills + opts.postgres_kills + opts.sigterms + opts.worker_kills
    clock.say(
        f"scenario {name}: {replicas} server(s), {opts.callers} callers, {fault_count} faults;"
        f" journal {journal_path}"
    )
    stack = await start_stack(workdir, clock, replicas, opts)
    receiver = WebhookReceiver()
    try:
        url = await receiver.start()
        tenant = await prepare_tenant(stack, opts, url)
        receiver.secret = tenant.webhook_secret
        clock.say(
            f"tenant {tenant.tenant_id}: {len(CUSTOMERS)} contracts on {opts.period_seconds}s"
            f" periods from {tenant.term_start:%H:%M:%S} ({', '.join(tenant.customers)})"
        )
        load = Load(stack, tenant, opts, journal_path)
        faults = Faults(stack, load, tenant, opts)
        done = asyncio.Event()
        callers = [asyncio.create_task(load.caller(n)) for n in range(opts.callers)]
        background = [
            asyncio.create_task(supervise(stack, faults, done)),
            asyncio.create_task(status_lines(stack, load, receiver, done)),
        ]
        injected = [asyncio.create_task(faults.run())]
        if opts.worker_kills:
            injected.append(asyncio.create_task(faults.kill_worker_while_invoicing()))
        try:
            await asyncio.gather(*injected)
            if opts.self_test_only or not faults.total:
                await asyncio.sleep(opts.period_seconds + opts.grace_seconds)  # one invoice
            await asyncio.sleep(3.0)
            load.stop.set()
            clock.say("load stopping: callers finish what they are sending")
            await asyncio.gather(*callers)
        finally:
            load.stop.set()
            for task in callers:
                task.cancel()
        for process in stack.processes():  # anything dead comes back before the retries
            if not process.alive():
                process.start()
        for n in range(replicas):
            await wait_serving(stack, n)
        clock.say(
            f"retrying {len(load.pending)} unanswered call(s) and voiding"
            f" {len(load.open_reservations)} open reservation(s), same payloads"
        )
        retried, unresolved = await load.settle_all()
        clock.say(f"settled: {retried - unresolved} of {retried} answered, {unresolved} still not")
        await quiesce(stack, tenant, opts)
        done.set()
        await asyncio.gather(*background)
        await load.close()
        for process in stack.processes():
            await process.terminate()
        await asyncio.sleep(1.0)  # a last webhook in flight
        journal = read_journal(journal_path)
        measure_recovery(faults.faults, journal)
        clock.say("checking the journal against the database")
        report = await check(
            _dsn(stack.database_url), tenant.tenant_id, journal, receiver.delivered
        )
        self_test = await self_test_checker(stack, tenant, journal, clock) if with_self_test else []
        (workdir / "faults.json").write_text(
            json.dumps([f.__dict__ for f in faults.faults], indent=1, default=str)
        )
        exits = [note for p in stack.processes() for note in p.unexpected_exits]
        return Outcome(
            name,
            len(journal.events),
            faults.faults,
            report,
            journal,
            exits,
            self_test,
            workdir,
            unresolved,
        )
    finally:
        await receiver.close()
        await stop_stack(stack, opts.keep)


async def quiesce(stack: Stack, tenant: Tenant, opts: Options) -> None:
    """Wait until reservations are resolved, the outbox delivered and due invoices paid."""
    period = timedelta(seconds=opts.period_seconds)
    started = time.monotonic()
    last = ""
    conn = await asyncpg.connect(_dsn(stack.database_url))
    try:
        while True:
            now = datetime.now(UTC)
            k = int((now - timedelta(seconds=opts.grace_seconds + 1) - tenant.term_start) / period)
            due_until = tenant.term_start + k * period
            row = await conn.fetchrow(
                "SELECT"
                " (SELECT count(*) FROM reservations"
                "   WHERE tenant_id = $1 AND state = 'held') AS held,"
                " (SELECT count(*) FROM outbox WHERE delivered_at IS NULL) AS outbox,"
                " (SELECT count(*) FROM invoices WHERE tenant_id = $1 AND billing_date <= $2"
                "   AND billing_date > $3 AND state = 'paid') AS paid",
                tenant.tenant_id,
                due_until,
                tenant.term_start,
            )
            assert row is not None
            due = k * len(CUSTOMERS)
            last = (
                f"{row['held']} holds, {row['outbox']} outbox rows,"
                f" {row['paid']}/{due} period invoices paid"
            )
            if not row["held"] and not row["outbox"] and row["paid"] >= due:
                stack.clock.say(f"quiet: {last}")
                return
            if time.monotonic() - started > opts.quiesce_seconds:
                stack.clock.say(
                    f"⚠ not quiet after {opts.quiesce_seconds:.0f}s: {last}; checking anyway"
                )
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# The checker's self-test: doctored copies must fail.


async def self_test_checker(
    stack: Stack, tenant: Tenant, journal: Journal, clock: Clock
) -> list[tuple[str, bool, str]]:
    """Break copies of the journal and the database on purpose; each must be caught."""
    from rating_service.store.database import with_database

    results: list[tuple[str, bool, str]] = []
    source = _dsn(stack.database_url)
    charged = [s for s in journal.events.values() if s.state == "charged"]
    if not charged:
        return [("there is a charged event to doctor", False, "none was charged")]
    for label, (doctored, event_id) in {
        "journal: a charged event acknowledged as fresh twice": doctor_journal_fresh_twice(journal),
        "journal: a charged event whose caller was told it was refused": doctor_journal_refused(
            journal
        ),
    }.items():
        report = await check(source, tenant.tenant_id, doctored, reconcile=False)
        column = "duplicated"
        caught = column_of(report, column) > 0
        results.append((label, caught, f"{column} {column_of(report, column)} ({event_id})"))
    admin = await asyncpg.connect(_dsn(with_database(stack.database_url, "postgres")))
    try:
        for n, (label, (sql, column)) in enumerate(DB_DOCTORS.items()):
            name = f"chaos_doctored_{n}"
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "rating"')
            url = _dsn(with_database(stack.database_url, name))
            conn = await asyncpg.connect(url)
            try:
                if label in DROP_BEFORE:
                    await conn.execute(DROP_BEFORE[label])
                status = await conn.execute(sql, tenant.tenant_id)
            except asyncpg.PostgresError as error:
                results.append((f"database: {label}", False, f"could not doctor: {error}"))
                continue
            finally:
                await conn.close()
            # Reconciling is slow and only sees account totals: run it where that is the defect.
            report = await check(url, tenant.tenant_id, journal, reconcile="account" in label)
            caught = column_of(report, column) > 0
            results.append(
                (f"database: {label}", caught, f"{status}; {column} {column_of(report, column)}")
            )
            await admin.execute(f'DROP DATABASE "{name}"')
    finally:
        await admin.close()
    clock.say(
        f"checker self-test: {sum(1 for _, ok, _ in results if ok)}/{len(results)} doctored"
        " defects caught"
    )
    return results


# ---------------------------------------------------------------------------------------------
# The report.


def errors_cell(journal: Journal) -> str:
    """Non-OK answers by status code, INTERNAL and UNKNOWN always shown."""
    codes = Counter(journal.codes)
    for code in BUGS:
        codes.setdefault(code, 0)
    return ", ".join(
        f"{code} {n}" for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))
    )


FAULT_LABELS = {
    "server kill -9": "server -9",
    "server SIGTERM": "SIGTERM",
    "postgres kill -9": "postgres -9",
    "worker kill -9": "worker -9",
}


def render_table(outcomes: Sequence[Outcome]) -> str:
    """The one table."""
    header = (
        "scenario",
        "events",
        "faults",
        "lost",
        "duplicated",
        "drift",
        "recover s (max / median)",
        "errors by status code",
    )
    rows = []
    for o in outcomes:
        worst, median = o.recovery()
        recover = "–" if worst is None else f"{worst:.1f} / {median:.1f}"
        kinds = Counter(FAULT_LABELS.get(f.kind, f.kind) for f in o.faults)
        faults = f"{len(o.faults)} (" + ", ".join(f"{k} {n}" for k, n in kinds.items()) + ")"
        rows.append(
            (
                o.name,
                f"{o.events:,}",
                faults if o.faults else "0",
                str(o.report.lost),
                str(o.report.duplicated),
                str(o.report.drift),
                recover,
                errors_cell(o.journal),
            )
        )
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def internal_causes(workdir: Path) -> Counter[str]:
    """The exceptions behind INTERNAL answers: the last line of each `internal error` traceback."""
    causes: Counter[str] = Counter()
    for log in sorted(workdir.glob("server*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if '"internal error"' not in line:
                continue
            with contextlib.suppress(ValueError):
                trace = [
                    t
                    for t in str(json.loads(line).get("exc") or "").strip().splitlines()
                    if t.strip() and not t.startswith("(Background")
                ]
                causes[(trace[-1] if trace else "?")[:140]] += 1
    return causes


def print_details(outcome: Outcome) -> None:
    """Below the table: each failed check, facts, reasons, exits, the self-test."""
    o = outcome
    print(f"\n{o.name}: journal {o.workdir / 'journal.jsonl'}, logs {o.workdir}")
    facts = ", ".join(f"{k} {v}" for k, v in o.report.facts.items())
    print(f"  facts: {facts}")
    if o.report.counts:
        print("  failed checks:")
        print("\n".join(o.report.lines()))
    else:
        print("  every check passed (exactly once, balances, counters, holds, invoices, reconcile)")
    if o.report.invoice_problems:
        print(f"  invoice problems: {o.report.invoice_problems}")
    reasons = ", ".join(f"{r} {n}" for r, n in o.journal.reasons.most_common(12))
    print(f"  non-OK answers by code and reason: {reasons or 'none'}")
    for fault in o.faults:
        took = "not recovered" if fault.recovered is None else f"{fault.recovered - fault.at:.1f}s"
        target = "" if fault.target is None else f" server#{fault.target}"
        print(f"    +{fault.at:6.1f}s {fault.kind}{target} ({fault.detail}): recovered in {took}")
    causes = internal_causes(o.workdir)
    if causes:
        print("  INTERNAL answers by cause, from the servers' logs:")
        for cause, n in causes.most_common(6):
            print(f"    {n:5d}  {cause}")
    for note in o.unexpected_exits:
        print(f"  ⚠ {note}")
    if o.unresolved_after_settle:
        print(f"  ⚠ {o.unresolved_after_settle} call(s) still unanswered after the settle phase")
    for label, ok, detail in o.self_test:
        print(f"  self-test {'✓' if ok else '✗ NOT CAUGHT'} {label}: {detail}")


async def run(opts: Options) -> int:
    """Every scenario in turn; the table; the exit code."""
    out = opts.out or Path(tempfile.mkdtemp(prefix="rating-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"rating chaos — {os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f}),"
        f" seed {opts.seed}, output in {out}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    for name in opts.scenarios:
        replicas = 3 if name == "replicas" else 1
        # The checker's self-test once per run is enough: it tests the checker, not the stack.
        outcomes.append(await run_scenario(name, replicas, opts, out, not outcomes))
    print()
    print(render_table(outcomes))
    for outcome in outcomes:
        print_details(outcome)
    failed = [o.name for o in outcomes if o.report.failed or o.unresolved_after_settle]
    self_test_failed = [o.name for o in outcomes if not all(ok for _, ok, _ in o.self_test)]
    print()
    if opts.self_test_only:
        verdict = not self_test_failed
        print(
            "self-test: "
            + ("every doctored defect was caught" if verdict else "the checker missed a defect")
        )
        return 0 if verdict else 1
    if self_test_failed:
        print(f"✗ the checker missed a doctored defect in {', '.join(self_test_failed)}")
    if failed:
        print(
            f"✗ {', '.join(failed)}: lost / duplicated / drift / invoice problems, INTERNAL or"
            " UNKNOWN answers, or calls never answered (see above)"
        )
    if not failed and not self_test_failed:
        print("✓ nothing lost, nothing doubled, no drift, no INTERNAL / UNKNOWN answers")
    return 1 if failed or self_test_failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    # pgserver forks pg_ctl while gRPC threads run (as in `rating dev`).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    sys.exit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
