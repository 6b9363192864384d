"""The chaos suite's report: one row per scenario, then each failed check, fault and cause."""

from __future__ import annotations

import contextlib
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chaos_check import BUGS, Journal, Report
from chaos_faults import Fault


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
