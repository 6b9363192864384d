"""The operator console's live numbers, read from the server's Prometheus /metrics page.

Rates are the change in the request counters since the previous read, divided by the time
between the two reads; latency percentiles are interpolated within the histogram's buckets
(cumulative since the server started), as Prometheus' histogram_quantile does.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class LiveMetrics:
    """One read: requests per second by method, errors by status, latency percentiles."""

    available: bool
    error: str = ""
    rates: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    requests: float = 0.0


class MetricsReader:
    """Reads /metrics and remembers the last counters, to turn them into rates."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=2.0)
        self._last: tuple[float, dict[str, float]] | None = None

    async def read(self) -> LiveMetrics:
        """The numbers now; `available` is False (with why) when the page cannot be read."""
        if not self._url:
            return LiveMetrics(False, "no metrics URL is configured (RATING_CONSOLE_METRICS_URL)")
        try:
            response = await self._client.get(self._url)
            response.raise_for_status()
        except httpx.HTTPError as error:
            return LiveMetrics(False, f"{self._url}: {error}")
        return self._parse(response.text, time.monotonic())

    def _parse(self, text: str, now: float) -> LiveMetrics:
        by_method: dict[str, float] = defaultdict(float)
        errors: dict[str, float] = defaultdict(float)
        buckets: dict[float, float] = defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "rating_grpc_requests_total":
                    by_method[sample.labels["method"]] += sample.value
                    if sample.labels["code"] != "OK":
                        errors[sample.labels["code"]] += sample.value
                elif sample.name == "rating_grpc_request_seconds_bucket":
                    buckets[float(sample.labels["le"])] += sample.value
        rates: dict[str, float] = {}
        if self._last is not None:
            then, counts = self._last
            elapsed = max(now - then, 1e-6)
            for method, count in by_method.items():
                rate = (count - counts.get(method, 0.0)) / elapsed
                if rate > 0:
                    rates[method] = rate
        self._last = (now, dict(by_method))
        return LiveMetrics(
            True,
            rates=dict(sorted(rates.items(), key=lambda item: -item[1])),
            errors=dict(errors),
            latency_ms={f"p{int(q * 100)}": quantile(buckets, q) * 1000 for q in QUANTILES},
            requests=sum(by_method.values()),
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile of a cumulative histogram (upper bound → count), interpolated."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return 0.0
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound
