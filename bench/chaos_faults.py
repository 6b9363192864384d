"""The chaos faults: kill -9 or SIGTERM of a server, PostgreSQL or the worker; time to recover."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from chaos_check import Journal
from chaos_load import Load
from chaos_options import Options
from chaos_stack import Stack, asyncpg_url, wait_serving
from chaos_tenant import CUSTOMERS, Tenant


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
            conn = await asyncpg.connect(asyncpg_url(self.stack.database_url), timeout=2)
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
