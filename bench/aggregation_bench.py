"""Microbenchmark: the pure rating core's cost per meter aggregation (no database, no gRPC).

Run with `uv run python bench/aggregation_bench.py [events]`. Each aggregation of
rating_service/examples/meters.yaml (plus a plain sum) rates the same number of events through
`prepare_event` and `rate_prepared` on one period, the ledger holding the entries next to each
event's mark as the store would read them; the median per event is printed beside the plain
sum's. What the database adds per aggregation (one more probe pair in the locked read, one row
in the batch's write) shows in `bench/rating_bench.py --scenarios hot,hot-max,…`.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from bisect import bisect_right, insort
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.core.contracts import (
    BillingAnchor,
    BillingFrequency,
    Contract,
    ContractStatus,
    OveragePolicy,
)
from rating_service.core.money import currency_of
from rating_service.core.pricing.catalog import catalog_from_document
from rating_service.core.pricing.meter import UsageEvent
from rating_service.core.rating.rate import PeriodLedger, prepare_event, rate_prepared

START = datetime(2026, 12, 1, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[1] / "rating_service" / "examples" / "meters.yaml"
SCENARIOS: dict[str, tuple[str, Callable[[int], dict[str, str]]]] = {
    "sum (corrections)": ("finetune.job", lambda i: {"seconds": str(i % 97)}),
    "max": ("gpu.concurrency", lambda i: {"gpus": str((i * 7) % 97)}),
    "unique_count": ("user.request", lambda i: {"user_id": f"user-{i}"}),
    "latest": ("storage.reading", lambda i: {"gb": str((i * 7) % 97)}),
    "time_weighted_sum": ("gpu.instance", lambda i: {"gpus": str((i * 7) % 97)}),
    "max per day": ("session.concurrency", lambda i: {"sessions": str((i * 7) % 97)}),
}


def main(count: int) -> None:
    """Rate `count` events per aggregation; print the median µs per event."""
    document = read_catalog_file(EXAMPLE)
    document["rate_cards"][0]["key"] = "list"
    catalog = catalog_from_document(document)
    contract = Contract(
        "ctr_bench",
        "cus_bench",
        "tnt_bench",
        START,
        None,
        BillingAnchor(1),
        BillingFrequency.MONTHLY,
        currency_of("USD"),
        "list",
        OveragePolicy.ARREARS,
        (),
        None,
        (),
        ContractStatus.ACTIVE,
    )
    now = START + timedelta(days=40)
    medians = {}
    # Twice through, the first pass a warm-up (caches, the allocator), only the second timed.
    for name, (event_type, properties) in [*SCENARIOS.items(), *SCENARIOS.items()]:
        period = PeriodLedger(Decimal(0), "open")
        stored: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        values: dict[tuple[str, tuple[str, ...], str], Decimal] = {}
        timings = []
        gc.disable()
        try:
            for i in range(count):
                at = START + timedelta(seconds=i)
                event = UsageEvent(event_type, at, properties(i))
                began = time.perf_counter_ns()
                prepared = prepare_event(catalog, [contract], "tnt_bench", f"e{i}", "f", event, now)
                # What the store's locked read hands over: the entries next to the mark.
                elapsed = time.perf_counter_ns() - began
                period.entries.clear()
                for m in prepared.measured:
                    keys = stored.setdefault((m.product.key, m.cell), [])
                    if m.mark is not None:
                        at_mark = bisect_right(keys, m.mark)
                        near = keys[max(at_mark - 1, 0) : at_mark + 1]
                        period.entries[(m.product.key, m.cell)] = {
                            k: values[(m.product.key, m.cell, k)] for k in near
                        }
                period.new_entries.clear()
                began = time.perf_counter_ns()
                rate_prepared(prepared, {}, period)
                timings.append(elapsed + time.perf_counter_ns() - began)
                for (product, cell, key), value in period.new_entries.items():
                    if (product, cell, key) not in values:
                        insort(stored[(product, cell)], key)
                    values[(product, cell, key)] = value
        finally:
            gc.enable()
        medians[name] = statistics.median(timings) / 1000
    plain = medians["sum (corrections)"]
    print(f"pure rating core, median per event over {count:,} events (prepare + rate):")
    for name, micros in medians.items():
        print(f"  {name:<18} {micros:8.1f} µs   {micros / plain:4.2f}× sum (corrections)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000)
