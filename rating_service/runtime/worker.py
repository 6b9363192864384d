"""`rating worker`: runs the workflows and activities, delivers the outbox to Temporal, and
exports rated events to the warehouse when RATING_EXPORT_DESTINATION names one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from rating_service.api.metrics import start_metrics
from rating_service.background import stop_task
from rating_service.faults import Failure, classify_failure
from rating_service.outbox.dispatcher import OutboxDispatcher
from rating_service.runtime.bootstrap import ProcessRole, bootstrap
from rating_service.runtime.garbage import collect_garbage_less_often
from rating_service.runtime.temporal import connect_temporal
from rating_service.runtime.tracing import start_tracing, worker_interceptors
from rating_service.runtime.worker_metrics import WorkerMetrics
from rating_service.settings import Settings
from rating_service.workflows.registry import SANDBOX, WORKFLOWS, activities, outbox_handlers

log = logging.getLogger("rating.worker")


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Poll the task queue and deliver the outbox until `stop` is set, then drain and return."""
    client = await connect_temporal(settings)
    delivering: asyncio.Task[None] | None = None
    metrics_http: Any = None
    exporting: asyncio.Task[None] | None = None
    async with bootstrap(settings, ProcessRole.WORKER) as components:
        try:
            # Refuse to start rather than fail every delivery: each stored secret needs its key.
            await _when_reachable(components.webhooks.check_keys, stop)
            dispatcher = OutboxDispatcher(
                components.pool,
                outbox_handlers(client, settings, components.webhooks),
                settings.outbox_poll_seconds,
            )
            registry = CollectorRegistry()
            metrics = WorkerMetrics(registry)
            metrics_port, metrics_http = start_metrics(settings.worker_metrics_address, registry)
            worker = Worker(
                client,
                interceptors=[metrics, *worker_interceptors(settings)],
                task_queue=settings.temporal_task_queue,
                workflows=list(WORKFLOWS),
                activities=activities(components),
                workflow_runner=SANDBOX,
                max_cached_workflows=settings.worker_cached_workflows,
                max_concurrent_workflow_tasks=settings.worker_workflow_tasks,
                max_concurrent_activities=settings.worker_activities,
                max_concurrent_local_activities=settings.worker_local_activities,
                workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(
                    settings.worker_workflow_task_pollers
                ),
                activity_task_poller_behavior=PollerBehaviorSimpleMaximum(
                    settings.worker_activity_task_pollers
                ),
            )
            collect_garbage_less_often(settings.gc_threshold)
            log.info(
                "worker polling",
                extra={
                    "task_queue": settings.temporal_task_queue,
                    "workflows": [w.__name__ for w in WORKFLOWS],
                    "metrics_port": metrics_port,
                },
            )
            async with worker:
                delivering = asyncio.create_task(dispatcher.run())
                if settings.export_destination:
                    exporting = asyncio.create_task(components.warehouse_feed.run())
                await stop.wait()
        finally:
            await stop_task(exporting)
            await stop_task(delivering)
            if metrics_http is not None:
                metrics_http.shutdown()
                metrics_http.server_close()  # shutdown() only stops the loop; free the port


async def _when_reachable(check: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run a startup check, waiting out a database that is down or still starting."""
    pause = 0.5
    while not stop.is_set():
        try:
            await check()
            return
        except Exception as error:
            if classify_failure(error) is not Failure.OUTAGE:
                raise
            log.warning("database unreachable; waiting to start", extra={"error": str(error)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        pause = min(pause * 2, 10.0)


async def work(settings: Settings) -> None:
    """Run the worker until SIGTERM / SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_tracing = start_tracing(settings, "rating-worker")
    try:
        await run_worker(settings, stop)
    finally:
        if stop_tracing is not None:
            stop_tracing()
