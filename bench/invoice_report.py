"""The invoicing benchmark's figures and how they show: progress lines, table, targets."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

PROGRESS_SECONDS = 5.0


# Targets from the issue, checked under the table.
INVOICES_PER_SECOND = 10.0
MIN_THROUGHPUT_CONTRACTS = 100
"""Fewer contracts than this are invoiced within one invoice's latency: no throughput figure."""
LATENCY_RATIO = 2.0


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
    worker_peak_mib: float
    """The benchmark process's peak memory (the worker and its cached workflows run in it)."""

    @property
    def per_second(self) -> float:
        """Invoices issued and paid per second."""
        return self.contracts / self.seconds

    def cpu_ms_per_invoice(self) -> dict[str, float]:
        """CPU each part of the stack spent per invoice, in ms: steadier than invoices/s when
        other processes share the cores (they slow the run, not what an invoice costs)."""
        return {
            name: cores * self.seconds / self.contracts * 1000
            for name, cores in self.cores.items()
            if name != "other processes"
        }


@dataclass
class InvoiceTiming:
    """One InvoiceWorkflow, start to close, and each step's time (schedule to completion)."""

    events: int
    seconds: float
    steps: list[tuple[str, float]]


@dataclass
class Baseline:
    """Invoicing without Temporal: N invoices' close + draft + finalize, then collect, then
    the documents each would have rendered at issue (they are rendered on first read now)."""

    contracts: int
    core_seconds: float
    collect_seconds: float
    render_seconds: float

    @property
    def core_per_second(self) -> float:
        """Invoices closed, drafted and finalized per second."""
        return self.contracts / self.core_seconds

    @property
    def all_per_second(self) -> float:
        """Invoices taken through every step the workflow runs (close to collect) per second."""
        return self.contracts / (self.core_seconds + self.collect_seconds)

    @property
    def render_ms(self) -> float:
        """What rendering one invoice's HTML and PDF takes, in ms."""
        return self.render_seconds / self.contracts * 1000


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
                "invoices/s, + collect in a loop",
                f"{baseline.all_per_second:.1f}",
                f"baseline: the workflow's steps, no Temporal{ratio}",
            )
        )
        rows.append(
            (
                "render HTML + PDF, one invoice",
                f"{baseline.render_ms:.0f} ms",
                "done on first read, not while invoicing",
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
