"""The rating benchmark's report: one row per run, ratios to the baselines, the issue's targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from loadgen import LoadResult
from sql_hot_row import HotRowResult

# Targets from the issue, checked under the table.
LIMITS_VS_HOT = 0.95
"""Issue 17: rate limits cost the hot path at most 5% of its throughput."""

HOT_VS_SQL_HOT_ROW = 2.0
SHARE_OF_CEILING = 0.8
P99_AT_HALF_LOAD_MS = 10.0
STREAM_VS_HOT_EVENTS = 5.0


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    result: LoadResult
    others_cores: float | None
    """CPU other processes on the machine took during the run, in cores."""
    events_per_call: int = 1
    """Usage events one call rates (a batch's size; a streamed request is one)."""
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU-seconds each part of the stack ("server", "database") used over the run."""

    def cpu_us_per_event(self, part: str) -> str:
        """A part's CPU per rated event, in µs (warm-up included, at the measured rate)."""
        spec = self.result.spec
        events = self.events_per_second * (spec.warmup_seconds + spec.duration_seconds)
        if part not in self.cpu_seconds or events <= 0:
            return "?"
        return f"{self.cpu_seconds[part] / events * 1e6:,.0f}"

    @property
    def events_per_second(self) -> float:
        """Usage events rated per second."""
        return self.result.throughput * self.events_per_call


def ratio(value: float, base: float | None) -> str:
    """`0.62×`, or `–` without a base."""
    return "–" if not base else f"{value / base:.2f}×"


def render_table(rows: Sequence[Row]) -> str:
    """The report: one row per run, ratios against the closed-loop ceiling and naive."""
    closed = {row.scenario: row.result for row in rows if row.result.spec.mode == "closed"}
    ceiling = closed["ceiling"].throughput if "ceiling" in closed else None
    naive = closed["naive"].throughput if "naive" in closed else None
    header = (
        "scenario",
        "mode",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "vs ceiling",
        "vs naive",
        "server µs/event",
        "db µs/event",
        "others' CPU",
    )
    lines = []
    for row in rows:
        r = row.result
        errors = ", ".join(f"{n} {code}" for code, n in r.errors.items()) or "0"
        if r.missed:
            errors += f" (+{r.missed} not sent)"
        if r.late:
            errors += f" ({r.late} sent late)"
        is_closed = r.spec.mode == "closed"
        lines.append(
            (
                row.scenario,
                r.spec.label,
                f"{r.throughput:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                f"{r.max_ms:.1f}",
                errors,
                ratio(r.throughput, ceiling) if is_closed else "–",
                ratio(r.throughput, naive) if is_closed else "–",
                row.cpu_us_per_event("server"),
                row.cpu_us_per_event("database"),
                "?" if row.others_cores is None else f"{row.others_cores:.2f}",
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    numeric = {2, 3, 4, 5, 7, 8, 9, 10, 11}

    def format_row(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([format_row(header), rule, *(format_row(line) for line in lines)])


def render_sql_hot_row(rows: Sequence[Row], baseline: Sequence[HotRowResult]) -> str:
    """The one-row SQL loop beside the hot pool: debits/s, and the hot pool's ratio to it."""
    if not baseline:
        return ""
    rates = event_rates(rows)
    hot = rates.get("hot")
    lines = ["one-row SQL debit loop (UPDATE + INSERT per transaction, no server):"]
    for result in baseline:
        versus = "" if hot is None else f"  hot pool = {ratio(hot, result.per_second)} of it"
        lines.append(
            f"  {result.tool}, {result.clients:>2} client(s): {result.per_second:>8,.0f} debits/s,"
            f" {result.latency_ms:.2f} ms average{versus}"
        )
    return "\n".join(lines)


def target_checks(
    rows: Sequence[Row], fraction: float, baseline: Sequence[HotRowResult] = ()
) -> list[str]:
    """The issue's targets that this run measured, each with ✓ or ✗."""
    closed = {row.scenario: row.result for row in rows if row.result.spec.mode == "closed"}
    opened = {row.scenario: row.result for row in rows if row.result.spec.mode == "open"}
    checks = []

    def check(name: str, value: float, target: float, unit: str, at_most: bool = False) -> None:
        ok = value <= target if at_most else value >= target
        sign = "≤" if at_most else "≥"
        checks.append(f"  {'✓' if ok else '✗'} {name}: {value:.2f}{unit} ({sign} {target}{unit})")

    ceiling = closed.get("ceiling")
    hot = closed.get("hot")
    zipf = closed.get("zipf")
    best_sql = max((r.per_second for r in baseline), default=0.0)
    if hot and best_sql:
        check("hot vs the one-row SQL loop", hot.throughput / best_sql, HOT_VS_SQL_HOT_ROW, "×")
    if hot and ceiling and ceiling.throughput:
        check("hot vs ceiling", hot.throughput / ceiling.throughput, SHARE_OF_CEILING, "×")
    if zipf and ceiling and ceiling.throughput:
        check("zipf vs ceiling", zipf.throughput / ceiling.throughput, SHARE_OF_CEILING, "×")
    limited = closed.get("hot-limited")
    if hot and limited and hot.throughput:
        check(
            "hot with rate limits vs hot", limited.throughput / hot.throughput, LIMITS_VS_HOT, "×"
        )
    events = event_rates(rows)
    if "stream" in events and events.get("hot"):
        check(
            "stream vs hot, events/s", events["stream"] / events["hot"], STREAM_VS_HOT_EVENTS, "×"
        )
    for scenario, result in opened.items():
        check(
            f"{scenario} p99 at {fraction:g} × max throughput",
            result.p99_ms,
            P99_AT_HALF_LOAD_MS,
            " ms",
            at_most=True,
        )
    return checks


EVENT_SCENARIOS = {
    "hot": "RateAndDebit, one call per event",
    "hot-limited": "RateAndDebit under three rate limits",
    "batch100": "BatchRateAndDebit of 100 events",
    "stream": "StreamRateAndDebit",
}


def event_rates(rows: Sequence[Row]) -> dict[str, float]:
    """Closed-loop events/s of the scenarios that rate the hot contract."""
    return {
        row.scenario: row.events_per_second
        for row in rows
        if row.result.spec.mode == "closed" and row.scenario in EVENT_SCENARIOS
    }


def render_event_rates(rows: Sequence[Row]) -> str:
    """Events/s on the hot contract by each way of sending them, beside single calls."""
    rates = event_rates(rows)
    if len(rates) < 2:
        return ""
    hot = rates.get("hot")
    width = max(len(EVENT_SCENARIOS[s]) + len(s) + 3 for s in rates)
    lines = ["events/s on the hot contract (closed loop):"]
    for scenario in EVENT_SCENARIOS:
        if scenario in rates:
            name = f"{scenario} ({EVENT_SCENARIOS[scenario]})"
            lines.append(
                f"  {name:<{width}} {rates[scenario]:>10,.0f}"
                + ("" if scenario == "hot" else f"  {ratio(rates[scenario], hot)} hot")
            )
    return "\n".join(lines)


def render_memory(before: int, after: int, per_book: float, cache_bound: int) -> str:
    """The server's resident memory around the runs, and what the contract cache may add."""
    mib = 1024 * 1024
    line = (
        f"server memory (all its processes): {before / mib:,.0f} MiB before the runs,"
        f" {after / mib:,.0f} MiB after them"
    )
    if per_book:
        line += (
            f"; a cached customer's book takes {per_book / 1024:,.1f} KiB, so the contract cache"
            f" adds at most {cache_bound * per_book / mib:,.0f} MiB per process"
            f" ({cache_bound:,} customers, RATING_CONTRACT_CACHE_CUSTOMERS) however many"
            " customers (10,000 or 1,000,000) it serves"
        )
    return line
