"""The worker's Prometheus series: each activity counted by outcome and timed, like the RPCs.

A Temporal interceptor sees every activity (local ones too) as it runs; the series are
served on RATING_WORKER_METRICS_ADDRESS as the server serves its own.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

ACTIVITY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics(Interceptor):
    """Counts and times the worker's activities into `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.activities = Counter(
            "rating_worker_activities",
            "Activities finished, by activity type and outcome (completed, failed)",
            ["activity", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "rating_worker_activity_seconds",
            "Activity run time in seconds, by activity type (one attempt)",
            ["activity"],
            buckets=ACTIVITY_BUCKETS,
            registry=registry,
        )

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity the worker runs."""
        return _TimedActivity(next, self)


class _TimedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, metrics: WorkerMetrics) -> None:
        super().__init__(next)
        self._metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        started = time.perf_counter()
        outcome = "failed"
        try:
            result = await super().execute_activity(input)
            outcome = "completed"
            return result
        finally:
            self._metrics.latency.labels(name).observe(time.perf_counter() - started)
            self._metrics.activities.labels(name, outcome).inc()
