"""The operator console's live numbers from a Prometheus page: rates, errors, percentiles."""

from __future__ import annotations

import pytest

from rating_service.console.metrics import MetricsReader, quantile

PAGE = """\
# HELP rating_grpc_requests_total RPCs finished, by method and status code
# TYPE rating_grpc_requests_total counter
rating_grpc_requests_total{{code="OK",method="RateAndDebit"}} {ok}
rating_grpc_requests_total{{code="FAILED_PRECONDITION",method="RateAndDebit"}} 3.0
rating_grpc_requests_total{{code="OK",method="GetBalances"}} 10.0
# HELP rating_grpc_request_seconds RPC latency in seconds
# TYPE rating_grpc_request_seconds histogram
rating_grpc_request_seconds_bucket{{le="0.001",method="RateAndDebit"}} 50.0
rating_grpc_request_seconds_bucket{{le="0.002",method="RateAndDebit"}} 90.0
rating_grpc_request_seconds_bucket{{le="0.005",method="RateAndDebit"}} 100.0
rating_grpc_request_seconds_bucket{{le="+Inf",method="RateAndDebit"}} 100.0
rating_grpc_request_seconds_count{{method="RateAndDebit"}} 100.0
rating_grpc_request_seconds_sum{{method="RateAndDebit"}} 0.15
"""


def test_rates_are_the_counters_change_over_the_time_between_reads() -> None:
    reader = MetricsReader("http://unused/metrics")
    first = reader._parse(PAGE.format(ok="100.0"), now=10.0)
    assert first.rates == {}  # one read: no rate yet
    assert first.errors == {"FAILED_PRECONDITION": 3.0}
    assert first.requests == 113.0
    second = reader._parse(PAGE.format(ok="150.0"), now=12.0)
    assert second.rates == {"RateAndDebit": 25.0}  # (150 − 100) / 2 s; GetBalances unchanged


@pytest.mark.parametrize(
    ("q", "seconds"),
    [
        # 100 observations: 50 ≤ 1 ms, 40 in (1, 2] ms, 10 in (2, 5] ms.
        (0.5, 0.001),  # rank 50: the top of the first bucket
        (0.7, 0.0015),  # rank 70: 20 of the 40 in (1, 2] → 1 + 1 × 20/40 ms
        (0.95, 0.0035),  # rank 95: 5 of the 10 in (2, 5] → 2 + 3 × 5/10 ms
    ],
)
def test_percentiles_interpolate_within_buckets(q: float, seconds: float) -> None:
    buckets = {0.001: 50.0, 0.002: 90.0, 0.005: 100.0, float("inf"): 100.0}
    assert quantile(buckets, q) == pytest.approx(seconds)


def test_no_observations_is_zero() -> None:
    assert quantile({}, 0.5) == 0.0
    assert quantile({0.001: 0.0, float("inf"): 0.0}, 0.99) == 0.0
