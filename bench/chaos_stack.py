"""The chaos stack: PostgreSQL, Temporal, servers and worker, as processes that can be killed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos_options import Options

from rating_service.core.encryption import new_key

REPO_ROOT = Path(__file__).resolve().parents[1]
CHANNEL_OPTIONS = [
    # A restarted server is found again within half a second, not after gRPC's default
    # reconnect backoff (up to two minutes), which would be measured as its recovery.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


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
        # One process per server, so that kill -9 takes a whole server down at once (the
        # processes of a supervised server would drain, and hold the port while they do).
        "RATING_SERVER_PROCESSES": "1",
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


def asyncpg_url(database_url: str) -> str:
    """The stack's database URL in the form asyncpg connects with."""
    from rating_service.store.database import asyncpg_dsn

    return asyncpg_dsn(database_url)
