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
              then collect (every step the workflow runs); the throughput run is set against
              both. Then each invoice's HTML and PDF are rendered, as issuing one used to do
              (documents are rendered on first read now), to show what that cost.

One table is printed at the end, and the issue's targets checked below it.

Beside this entry point: invoice_contracts (the contracts and their usage), invoice_stack
(Temporal, tenant, worker), invoice_phases (the three phases), invoice_report (progress lines,
the table, the targets), and, shared with the rating benchmark, bench_database and bench_cpu.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from bench_cpu import StackCpu, format_cores
from bench_database import create_database, drop_database, postgres_server, postmaster_pid
from invoice_phases import measure_baseline, measure_latency, measure_throughput
from invoice_report import InvoiceTiming, render_table, report_rows, target_checks
from invoice_stack import TENANT_NAME, prepare_tenant, temporal_server, worker_settings

from rating_service.cli.progress import step

NOISY_CORES = 0.15
"""Other processes using more CPU than this while invoicing make the throughput figure suspect."""


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
            f" {format_cores(throughput.cores)}; per invoice: "
            + ", ".join(
                f"{name} {ms:.0f} ms" for name, ms in throughput.cpu_ms_per_invoice().items()
            )
            + f" of CPU; the worker's process peaked at {throughput.worker_peak_mib:,.0f} MiB"
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
