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

This module runs a scenario start to finish; beside it: chaos_options (the options), chaos_stack
(the processes and how each is killed), chaos_tenant (tenant, contracts, webhook receiver),
chaos_load (the journaled callers), chaos_faults (the faults and their recovery), chaos_check and
chaos_self_test (the checks, and the checker's own test), chaos_report (the table and details).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from chaos_check import check, read_journal
from chaos_faults import Faults, measure_recovery, supervise
from chaos_load import Load
from chaos_options import Options, parse_args
from chaos_report import Outcome, print_details, render_table
from chaos_self_test import self_test_checker
from chaos_stack import Clock, Stack, asyncpg_url, start_stack, stop_stack, wait_serving
from chaos_tenant import CUSTOMERS, Tenant, WebhookReceiver, prepare_tenant

STATUS_EVERY_SECONDS = 5.0


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
            asyncpg_url(stack.database_url), tenant.tenant_id, journal, receiver.delivered
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
    conn = await asyncpg.connect(asyncpg_url(stack.database_url))
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
