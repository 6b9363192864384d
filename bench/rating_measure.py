"""The rating benchmark's runs: closed loop at a fixed concurrency, then open loop below it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from bench_cpu import OthersCpu, TreeCpu
from loadgen import LoadSpec, run_load
from rating_report import Row
from rating_scenarios import (
    EVENT_THROUGHPUT,
    STREAM_WINDOW,
    Prepared,
    events_per_call,
    factories,
    fresh,
)


def measure(scenario: str, spec: LoadSpec, others: OthersCpu, stack: TreeCpu) -> Row:
    """Run one spec, printing progress and the outcome."""
    total = spec.warmup_seconds + spec.duration_seconds
    print(f"  ▶ {scenario:<8} {spec.label:<16} ({total:.0f}s) …", flush=True)

    def progress(elapsed: float) -> None:
        print(f"      {scenario} {spec.label}: {elapsed:.0f}s / {total:.0f}s", flush=True)

    others.start()
    stack.start()
    result = run_load(spec, progress)
    spent = stack.seconds()
    others_cores = others.cores()
    per_call = events_per_call(scenario)
    events = f" ({result.throughput * per_call:,.0f} events/s)" if per_call > 1 else ""
    print(
        f"    {scenario} {spec.label}: {result.throughput:,.0f} calls/s{events}, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"errors {result.error_count}"
        + (f", {result.missed} not sent (in-flight cap)" if result.missed else "")
        + (f", {result.late} sent late" if result.late else "")
        + ("" if others_cores is None else f"; other processes used {others_cores:.2f} cores"),
        flush=True,
    )
    return Row(scenario, result, others_cores, per_call, spent)


def measure_all(
    args: argparse.Namespace,
    address: str,
    prepared: Prepared,
    scenarios: Sequence[str],
    others: OthersCpu,
    stack: TreeCpu,
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
        "connections": args.connections,
    }

    def closed_loop(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
        """How hard a scenario is driven: calls in flight, or streams and their window."""
        if scenario == "stream":
            return {**common, "concurrency": args.streams, "stream_window": STREAM_WINDOW}
        if scenario == "batch100":
            return {**common, "concurrency": args.batch_concurrency}
        return {**common, "concurrency": args.concurrency}

    rows = [
        measure(
            scenario,
            LoadSpec(factory=fresh(made[scenario]), mode="closed", **closed_loop(scenario, args)),
            others,
            stack,
        )
        for scenario in scenarios
    ]
    if args.open_loop_fraction > 0:
        for row in list(rows):
            rate = row.result.throughput * args.open_loop_fraction
            if rate <= 0 or row.scenario in EVENT_THROUGHPUT:
                continue
            spec = LoadSpec(
                factory=fresh(made[row.scenario]),
                mode="open",
                concurrency=args.max_in_flight,
                rate=rate,
                **common,
            )
            rows.append(measure(row.scenario, spec, others, stack))
    return rows
