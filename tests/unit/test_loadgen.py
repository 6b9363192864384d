"""The load generator's pure parts: latency histograms, open-loop schedule, Zipf sampler."""

from __future__ import annotations

import math
import pickle
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from rating_client.gen.rating.v1 import bench_pb2

# bench/ holds scripts run by path (`python bench/rating_bench.py`), not a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from loadgen import (
    BUCKET_SECONDS,
    FunctionFactory,
    LatencyHistogram,
    LoadSpec,
    WorkerResult,
    ZipfSampler,
    merge_results,
    scheduled_count,
    scheduled_offset,
    split_evenly,
)

BUCKET_MS = BUCKET_SECONDS * 1000


def within_its_bucket(reported_ms: float, exact_ms: float) -> bool:
    """A percentile is reported as the upper edge of its bucket: at most one bucket above."""
    return exact_ms - 1e-9 <= reported_ms <= exact_ms + BUCKET_MS + 1e-9


def histogram_of(latencies_ms: list[float]) -> LatencyHistogram:
    """A histogram of latencies given in ms."""
    histogram = LatencyHistogram()
    for latency in latencies_ms:
        histogram.record(latency / 1000)
    return histogram


def nearest_rank(values: list[float], percent: float) -> float:
    """The textbook nearest-rank percentile of raw values."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


# --- percentiles and merging ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "expected_ms"),
    [
        (50, 50.0),  # 1..100 ms: rank ⌈0.50 × 100⌉ = 50 → 50 ms
        (90, 90.0),  # rank 90
        (99, 99.0),  # rank 99
        (100, 100.0),  # rank 100, the max
        (0.1, 1.0),  # rank ⌈0.1⌉ = 1, the min
    ],
)
def test_percentile_is_nearest_rank_to_one_bucket(percent: float, expected_ms: float) -> None:
    histogram = histogram_of([float(ms) for ms in range(1, 101)])
    assert within_its_bucket(histogram.percentile_ms(percent), expected_ms)


def test_percentile_never_exceeds_the_exact_max() -> None:
    histogram = histogram_of([0.123_456])
    assert histogram.percentile_ms(99) == pytest.approx(0.123_456)
    assert histogram.max_seconds * 1000 == pytest.approx(0.123_456)


def test_empty_histogram_has_no_percentile() -> None:
    assert math.isnan(LatencyHistogram().percentile_ms(50))


def test_zero_and_sub_bucket_latencies_land_in_the_first_bucket() -> None:
    histogram = histogram_of([0.0, 0.004, 0.009])
    assert histogram.counts == {0: 3}


def test_merging_per_process_histograms_is_exact() -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(0.5, 0.8) for _ in range(20_000)]
    # Three "processes", each with its share of the calls.
    parts = [histogram_of(latencies[i::3]) for i in range(3)]
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(part)
    whole = histogram_of(latencies)
    assert merged.counts == whole.counts
    assert merged.max_seconds == whole.max_seconds
    assert merged.count == 20_000
    for percent in (50, 90, 99, 99.9):
        assert within_its_bucket(merged.percentile_ms(percent), nearest_rank(latencies, percent))


def test_merge_results_adds_counts_and_errors() -> None:
    first = WorkerResult(histogram_of([1.0, 2.0]), completed=2, errors={"UNAVAILABLE": 1})
    second = WorkerResult(
        histogram_of([3.0]),
        completed=1,
        errors={"UNAVAILABLE": 2, "INTERNAL": 1},
        missed=4,
        late=2,
    )
    merged = merge_results(spec=None, parts=[first, second])  # type: ignore[arg-type]
    assert merged.completed == 3
    assert merged.errors == {"INTERNAL": 1, "UNAVAILABLE": 3}
    assert merged.missed == 4
    assert merged.late == 2
    assert merged.histogram.count == 3


# --- splitting load and the open-loop schedule ----------------------------------------------


@pytest.mark.parametrize(
    ("total", "parts", "expected"),
    [
        (64, 1, [64]),
        (64, 2, [32, 32]),
        (7, 3, [3, 2, 2]),  # 7 = 3 + 2 + 2
        (1, 2, [1, 0]),  # fewer slots than processes: one idles
    ],
)
def test_split_evenly(total: int, parts: int, expected: list[int]) -> None:
    assert split_evenly(total, parts) == expected
    assert sum(expected) == total


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_workers_together_send_at_even_spacing(processes: int) -> None:
    rate = 1000.0
    offsets = sorted(
        scheduled_offset(index, rate, worker, processes)
        for worker in range(processes)
        for index in range(100)
    )
    # Globally the k-th call is due at k / rate: 0 ms, 1 ms, 2 ms, …
    assert offsets == pytest.approx([k / rate for k in range(100 * processes)])


def test_each_worker_runs_at_its_share_of_the_rate() -> None:
    # 2 workers at 1,000/s total: each sends every 2 ms, worker 1 shifted by 1 ms.
    assert [scheduled_offset(i, 1000, 0, 2) for i in range(3)] == pytest.approx([0, 0.002, 0.004])
    assert [scheduled_offset(i, 1000, 1, 2) for i in range(3)] == pytest.approx(
        [0.001, 0.003, 0.005]
    )


@pytest.mark.parametrize(
    ("seconds", "rate", "processes"),
    [(10.0, 1000.0, 1), (10.0, 1000.0, 2), (12.0, 1234.5, 3), (0.0005, 1000.0, 2), (0.0, 500.0, 1)],
)
def test_scheduled_count_matches_the_schedule(seconds: float, rate: float, processes: int) -> None:
    for worker in range(processes):
        brute_force = 0
        while scheduled_offset(brute_force, rate, worker, processes) < seconds:
            brute_force += 1
        assert scheduled_count(seconds, rate, worker, processes) == brute_force


def test_scheduled_counts_add_up_to_rate_times_duration() -> None:
    # 1,500 calls/s for 12 s over 2 workers: 18,000 calls, 9,000 each.
    counts = [scheduled_count(12.0, 1500.0, worker, 2) for worker in range(2)]
    assert counts == [9000, 9000]


# --- the Zipf sampler -----------------------------------------------------------------------


def test_zipf_probabilities_follow_the_power_law() -> None:
    sampler = ZipfSampler(10_000, 1.1)
    assert math.fsum(sampler.probability(k) for k in range(10_000)) == pytest.approx(1.0)
    # P(k) ∝ 1 / (k + 1)^s, so P(0) / P(1) = 2^1.1 and P(0) / P(9) = 10^1.1.
    assert sampler.probability(0) / sampler.probability(1) == pytest.approx(2**1.1)
    assert sampler.probability(0) / sampler.probability(9) == pytest.approx(10**1.1)


def test_zipf_draws_have_the_expected_shape() -> None:
    sampler = ZipfSampler(10_000, 1.1, seed=42)
    draws = 200_000
    counts = [0] * 10_000
    for _ in range(draws):
        counts[sampler.sample()] += 1
    assert all(0 <= k < 10_000 for k, n in enumerate(counts) if n)
    # The head: rank 0 gets P(0) ≈ 10.2 % of the draws (within 5 % of that).
    assert counts[0] / draws == pytest.approx(sampler.probability(0), rel=0.05)
    assert counts[0] > counts[1] > counts[9] > counts[99]
    # The top 1 % of contracts take about half the traffic; the tail is still reached.
    top_share = sum(counts[:100]) / draws
    expected_top = math.fsum(sampler.probability(k) for k in range(100))
    assert top_share == pytest.approx(expected_top, rel=0.02)
    assert sum(1 for n in counts[5000:] if n) > 1000


def test_zipf_same_seed_same_draws() -> None:
    first, second = ZipfSampler(100, 1.1, seed=3), ZipfSampler(100, 1.1, seed=3)
    assert [first.sample() for _ in range(50)] == [second.sample() for _ in range(50)]


@pytest.mark.parametrize(("n", "s"), [(0, 1.1), (10, 0.0)])
def test_zipf_refuses_a_degenerate_distribution(n: int, s: float) -> None:
    with pytest.raises(ValueError):
        ZipfSampler(n, s)


# --- request factories ----------------------------------------------------------------------


def naive_debit_request(worker: int, index: int, pool_id: str) -> tuple[str, Message]:
    """A module-level request builder, as FunctionFactory names one."""
    request = bench_pb2.NaiveDebitRequest(pool_id=pool_id, event_id=f"{worker}-{index}")
    return "/rating.v1.BenchService/NaiveDebit", request


def test_function_factory_survives_pickling_and_builds_per_call() -> None:
    factory = FunctionFactory(f"{__name__}:naive_debit_request", ("pool_1",))
    sent = pickle.loads(pickle.dumps(factory))  # what a worker process receives
    path, request = sent.build(worker=1, index=7)
    assert path == "/rating.v1.BenchService/NaiveDebit"
    assert isinstance(request, bench_pb2.NaiveDebitRequest)
    assert (request.pool_id, request.event_id) == ("pool_1", "1-7")


# --- streams and events per call ----------------------------------------------------------------


def test_streams_run_closed_loop_only_and_say_their_shape() -> None:
    common: dict[str, Any] = {"target": "x", "factory": None, "metadata": ()}
    spec = LoadSpec(mode="closed", concurrency=4, stream_window=256, **common)
    assert spec.label == "streams 4×256"
    with pytest.raises(ValueError, match="closed loop only"):
        LoadSpec(mode="open", concurrency=4, rate=100, stream_window=256, **common)


def test_event_rates_put_batches_and_streams_beside_single_calls() -> None:
    from rating_report import Row, event_rates, render_event_rates, target_checks

    def row(scenario: str, completed: int, per_call: int) -> Row:
        spec = LoadSpec(target="x", factory=None, metadata=(), mode="closed", concurrency=1)  # type: ignore[arg-type]
        spec = replace(spec, duration_seconds=2.0)
        result = merge_results(spec, [WorkerResult(completed=completed)])
        return Row(scenario, result, None, per_call)

    # hot: 1,000 calls in 2 s = 500 events/s; batch100: 30 calls × 100 in 2 s = 1,500;
    # stream: 6,000 events in 2 s = 3,000, 6× hot.
    rows = [row("hot", 1000, 1), row("batch100", 30, 100), row("stream", 6000, 1)]
    assert event_rates(rows) == {"hot": 500.0, "batch100": 1500.0, "stream": 3000.0}
    rendered = render_event_rates(rows)
    assert "3.00× hot" in rendered and "6.00× hot" in rendered
    assert "  ✓ stream vs hot, events/s: 6.00× (≥ 5.0×)" in target_checks(rows, 0.5)
