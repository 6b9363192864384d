"""End-to-end benchmark: the rating server under load, beside its baselines, in one run.

Run with `uv run python bench/rating_bench.py [--scenarios ceiling,naive,quote,hot,zipf,...]`.

It starts PostgreSQL (embedded, in a temporary directory, or a fresh database beside
RATING_DATABASE_URL), migrates it, prepares a tenant with an admin and a rater key, loads the
example catalog, opens the contracts and pools the scenarios debit (through the same contract
administration code AdminService uses), starts the server as a subprocess (`rating serve` with
RATING_BENCH_BASELINES=true, `--server-processes` of it on one port, by default the server's own
default) and drives it with bench/loadgen.py over `--connections` per load-generator process:

  ceiling  BenchService.Noop: the server stack and the load generator around no work.
  naive    BenchService.NaiveDebit on one pool: a transaction per request (UPDATE + INSERT).
  quote    CatalogService.Quote of four lines priced against the example rate card.
  hot      RatingService.RateAndDebit, every event on one contract.
  hot-limited  as hot, on a contract with three rate limits no run reaches: the limits' cost.
  entitlement  RatingService.CheckEntitlement of the hot customer's metered feature.
  zipf     RatingService.RateAndDebit over 10,000 contracts, Zipf-distributed (s = 1.1).
  stream   RatingService.StreamRateAndDebit on the hot contract: a few streams (--streams),
           each keeping the server's window of events (256) unanswered; events/s.
  batch100 RatingService.BatchRateAndDebit of 100 events on the hot contract; events/s.

Each scenario runs closed loop at a fixed concurrency (its maximum throughput), then open loop at
a fraction (default ½) of that throughput, where the p99 target applies (stream and batch100,
measured in events/s, run closed loop only). One table is printed at the end with the ratios to
the ceiling and to naive, the events/s of hot, batch100 and stream side by side, and the
issue's targets checked below it.

Beside this entry point: rating_scenarios (what each scenario sends), rating_seeding (tenant and
contracts), rating_server (the server under test), rating_measure (the runs), rating_report (the
table), and, shared with the invoicing benchmark, bench_database and bench_cpu.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import sql_hot_row
from bench_cpu import OthersCpu, TreeCpu, tree_rss_bytes
from bench_database import create_database, drop_database, postgres_server, postmaster_pid
from book_memory import bytes_per_book
from rating_measure import measure_all
from rating_report import (
    render_event_rates,
    render_memory,
    render_sql_hot_row,
    render_table,
    target_checks,
)
from rating_scenarios import ALL_SCENARIOS
from rating_seeding import prepare
from rating_server import ServerProcess, check_rate_and_debit, start_server

from rating_service.cli.progress import step
from rating_service.settings import Settings

NOISY_CORES = 0.15
"""Other processes using more CPU than this during a run make its figures suspect."""


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
        "--connections",
        type=int,
        default=8,
        help="TCP connections per load-generator process (server processes share a port by"
        " connection: fewer connections than server processes leave some of them idle)",
    )
    parser.add_argument(
        "--server-processes",
        type=int,
        default=None,
        help="server processes on the port (RATING_SERVER_PROCESSES; default: the server's"
        " own default, one per CPU core; 0 too)",
    )
    parser.add_argument(
        "--streams", type=int, default=4, help="stream: streams in total, each a window deep"
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="batch100: batches in flight in total"
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
    if args.connections < 1 or (args.server_processes is not None and args.server_processes < 0):
        parser.error("--connections ≥ 1 and --server-processes ≥ 0")
    if args.streams < args.processes or args.batch_concurrency < args.processes:
        parser.error("--streams and --batch-concurrency need one per load-generator process")
    return args


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
            server = start_server(database_url, workdir, prepared, args.server_processes)
            check_rate_and_debit(server, prepared, scenarios)
            roots = [server.process.pid]
            postmaster = postmaster_pid(workdir / "pgdata")
            if postmaster is not None:
                roots.append(postmaster)
            others = OthersCpu(roots)
            stack = TreeCpu(
                {"server": server.process.pid}
                | ({} if postmaster is None else {"database": postmaster})
            )
            resident_before = tree_rss_bytes(server.process.pid)
            rows = measure_all(args, server.address, prepared, scenarios, others, stack)
            resident_after = tree_rss_bytes(server.process.pid)
            with step("the one-row SQL debit loop (pgbench), 1 and 32 clients"):
                baseline = asyncio.run(sql_hot_row.measure(database_url, (1, 32), args.duration))
            print(
                f"\nserver: rating serve, {server.processes} process(es) on one port;"
                f" load generator: {args.processes} process(es) × {args.connections}"
                f" connection(s), closed loop c={args.concurrency}, {args.duration:g}s measured"
                f" after {args.warmup:g}s warm-up\n"
            )
            print(render_table(rows))
            events = render_event_rates(rows)
            if events:
                print("\n" + events)
            print("\n" + render_sql_hot_row(rows, baseline))
            sample = prepared.zipf_customers[:2001] or prepared.hot_customers
            with step(f"the memory of {len(sample):,} customers' cached books"):
                per_book = asyncio.run(bytes_per_book(database_url, prepared.tenant_id, sample))
            cache_bound = Settings().contract_cache_customers
            print("\n" + render_memory(resident_before, resident_after, per_book, cache_bound))
            noisy = [r for r in rows if r.others_cores is not None and r.others_cores > NOISY_CORES]
            if noisy:
                worst = max(r.others_cores or 0.0 for r in noisy)
                print(
                    f"\n⚠ other processes used up to {worst:.2f} of the {os.cpu_count()} cores"
                    f" during {len(noisy)} of the runs: those figures understate this stack"
                )
            checks = target_checks(rows, args.open_loop_fraction, baseline)
            if checks:
                print("\ntargets:\n" + "\n".join(checks))
        finally:
            if server is not None:
                server.stop()
            if not embedded:
                asyncio.run(drop_database(base_url, database_url))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    # The embedded PostgreSQL forks pg_ctl after gRPC has started threads; gRPC's fork handlers
    # are not needed for that (as in `rating dev`).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
