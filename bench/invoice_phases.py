"""The invoicing benchmark's phases: throughput via Temporal, latency, the loop baseline."""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from bench_cpu import StackCpu
from invoice_contracts import (
    EVENTS_PER_CONTRACT,
    InProcessRating,
    Period,
    ended_period,
    seed_contracts,
)
from invoice_report import Baseline, InvoiceTiming, Progress, Throughput
from invoice_stack import InProcessWorker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from rating_service.cli.progress import step
from rating_service.outbox.topics import Topic
from rating_service.runtime.bootstrap import ProcessRole, bootstrap
from rating_service.runtime.temporal import connect_temporal
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from rating_service.workflows.invoice import invoice_workflow_id

SMALL_EVENTS = 10
"""The latency phase's small contract."""
POLL_SECONDS = 0.25
STALL_SECONDS = 120.0
"""No invoice paid for this long while some are due: the run is failed, not waited out."""


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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return Throughput(count, lead, slack, max(paid), issued, paid, cores, peak)


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
    settings = Settings.from_env().replace(database_url=database_url)
    async with bootstrap(settings, ProcessRole.WORKER) as built:
        invoicing = built.invoicing
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
        with step("collect, one invoice at a time"):
            started = time.perf_counter()
            for invoice_id in invoice_ids:
                await invoicing.collect(tenant_id, invoice_id, 1)
            collect = time.perf_counter() - started
        # What issuing an invoice used to include; paid invoices' documents are rendered now.
        with step("render HTML + PDF, one invoice at a time"):
            started = time.perf_counter()
            for invoice_id in invoice_ids:
                await invoicing.render(tenant_id, invoice_id)
            render = time.perf_counter() - started
    return Baseline(count, core, collect, render)
