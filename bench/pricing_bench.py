"""Microbenchmark: the cost of rating one event through `incremental_charge`, per price model.

Run with `uv run python bench/pricing_bench.py [iterations]`. Each model prices the same
pseudo-random stream of (period-to-date, quantity) pairs; every call is timed alone with
time.perf_counter_ns after a warm-up, with the garbage collector paused as timeit does. The
baseline is a bare Decimal multiply (quantity × unit price) timed by the same harness, so the
ratio shows what the pricing core costs beyond the arithmetic it cannot avoid.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

from rating_service.core.pricing import (
    Graduated,
    Matrix,
    MatrixCell,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    Tier,
    Volume,
    incremental_charge,
)
from rating_service.core.pricing.price_terms import PeriodTerms, PriceWithTerms

TARGET_MEDIAN_NS = 20_000
"""The issue's target (20 µs median) for tiered and matrix models on the 2-core machine."""

D = Decimal
FIVE_TIERS = (
    Tier(D(1_000_000), D("0.000003")),
    Tier(D(10_000_000), D("0.0000025"), D("1.00")),
    Tier(D(100_000_000), D("0.000002")),
    Tier(D(1_000_000_000), D("0.0000015")),
    Tier(None, D("0.000001")),
)
LLM_MODELS = ("gpt-4o", "gpt-4o-mini", "o3", "o4-mini", "claude-sonnet", "claude-haiku")
TOKEN_TYPES = ("input", "cached_input", "output")

Event = tuple[Decimal, Decimal, Mapping[str, str]]


def matrix_of_graduated_cells() -> Matrix:
    """6 models × 3 token types, each cell a graduated price with 3 tiers."""
    cells = []
    for m, model in enumerate(LLM_MODELS):
        for t, token_type in enumerate(TOKEN_TYPES):
            base = D(m + 1) * D(t + 1) * D("0.0000001")
            cells.append(
                MatrixCell(
                    (model, token_type),
                    Graduated(
                        (
                            Tier(D(1_000_000), base * 3),
                            Tier(D(50_000_000), base * 2),
                            Tier(None, base),
                        )
                    ),
                )
            )
    return Matrix(("model", "token_type"), tuple(cells))


def events(count: int, with_dimensions: bool) -> list[Event]:
    """A reproducible stream of events with period-to-date quantities spread over every tier."""
    rng = random.Random(20250101)
    stream: list[Event] = []
    for _ in range(count):
        period_to_date = D(rng.randrange(0, 2_000_000_000))
        quantity = D(rng.randrange(1, 8_000))
        dimensions = (
            {"model": rng.choice(LLM_MODELS), "token_type": rng.choice(TOKEN_TYPES)}
            if with_dimensions
            else {}
        )
        stream.append((period_to_date, quantity, dimensions))
    return stream


def time_calls(
    call: Callable[[Decimal, Decimal, Mapping[str, str]], object], stream: list[Event], warmup: int
) -> list[int]:
    """Nanoseconds of each call over the stream after its first `warmup` events (run untimed)."""
    for period_to_date, quantity, dimensions in stream[:warmup]:
        call(period_to_date, quantity, dimensions)
    clock = time.perf_counter_ns
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for period_to_date, quantity, dimensions in stream[warmup:]:
            start = clock()
            call(period_to_date, quantity, dimensions)
            samples.append(clock() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def percentile(samples: list[int], percent: int) -> int:
    """The nearest-rank percentile of the samples, in nanoseconds."""
    ordered = sorted(samples)
    rank = -(-percent * len(ordered) // 100)  # ceiling without floats
    return ordered[max(rank, 1) - 1]


def microseconds(nanoseconds: int) -> str:
    """Nanoseconds written as microseconds with two decimals (Decimal: no floats here either)."""
    return str((Decimal(nanoseconds) / 1000).quantize(Decimal("0.01")))


def main(iterations: int) -> None:
    """Time every model and print the table."""
    price = D("0.0000025")
    models: list[tuple[str, PriceModel, bool, bool]] = [
        ("per_unit", PerUnit(price), False, False),
        ("graduated (5 tiers)", Graduated(FIVE_TIERS), False, True),
        ("volume (5 tiers)", Volume(FIVE_TIERS), False, True),
        (
            # Every period term that adds work per event: free units, free amount, the cap.
            "graduated + terms",
            PriceWithTerms(
                Graduated(FIVE_TIERS),
                PeriodTerms(
                    free_units=D(100_000),
                    free_amount=D(5),
                    maximum_spend=D(3000),
                    first_tier_fee_at_zero=True,
                ),
            ),
            False,
            True,
        ),
        ("package", Package(D(1000), D("0.002"), D(100_000)), False, False),
        ("matrix 6x3 graduated", matrix_of_graduated_cells(), True, True),
        ("percentage", Percentage(D("0.2"), D("0.30"), D("1"), D("500")), False, False),
    ]
    warmup = max(1000, iterations // 10)

    def baseline(
        period_to_date: Decimal, quantity: Decimal, dimensions: Mapping[str, str]
    ) -> object:
        return quantity * price

    print(f"pricing one event through incremental_charge, {iterations} calls each")
    print(f"python {sys.version.split()[0]}, times in µs per call (timer overhead included)")
    header = (
        f"{'model':<22} {'median':>8} {'p99':>8} {'base med':>9} {'base p99':>9}"
        f" {'ratio':>6}  target"
    )
    print(header)
    print("-" * len(header))
    for name, model, with_dimensions, targeted in models:
        stream = events(iterations + warmup, with_dimensions)

        def rate(
            period_to_date: Decimal,
            quantity: Decimal,
            dimensions: Mapping[str, str],
            model: PriceModel = model,
        ) -> object:
            return incremental_charge(model, period_to_date, quantity, dimensions)

        samples = time_calls(rate, stream, warmup)
        base = time_calls(baseline, stream, warmup)
        median, base_median = percentile(samples, 50), percentile(base, 50)
        ratio = (Decimal(median) / Decimal(base_median)).quantize(Decimal("0.1"))
        verdict = (
            ("ok" if median <= TARGET_MEDIAN_NS else "MISSED") + " (≤ 20)" if targeted else "-"
        )
        print(
            f"{name:<22} {microseconds(median):>8} {microseconds(percentile(samples, 99)):>8}"
            f" {microseconds(base_median):>9} {microseconds(percentile(base, 99)):>9}"
            f" {ratio!s:>6}  {verdict}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
