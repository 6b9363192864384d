"""`rating worker`: connects to Temporal and runs the registered workflows and activities."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker import Worker

import workflows
from rating_service.settings import Settings
from rating_service.store.database import create_engine

log = logging.getLogger("rating.worker")


@dataclass(frozen=True)
class WorkerDependencies:
    """What activities may use: the database and the settings."""

    engine: AsyncEngine
    settings: Settings


async def connect_temporal(settings: Settings) -> Client:
    """A Temporal client for the configured address and namespace, with an actionable error."""
    if not settings.temporal_address:
        raise SystemExit(
            "RATING_TEMPORAL_ADDRESS is not set (or run `rating dev` for a local stack)"
        )
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
    except RuntimeError as exc:
        raise SystemExit(
            f"cannot reach Temporal at {settings.temporal_address}: {exc}; "
            "check RATING_TEMPORAL_ADDRESS and that the server is up"
        ) from exc


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Poll the task queue until `stop` is set, then finish in-flight tasks and return."""
    client = await connect_temporal(settings)
    if not settings.database_url:
        raise SystemExit("RATING_DATABASE_URL is not set (or run `rating dev` for a local stack)")
    engine = create_engine(settings.database_url, settings.database_pool_size)
    try:
        registered = list(workflows.WORKFLOWS)
        bound = list(workflows.activities(WorkerDependencies(engine, settings)))
        if not registered and not bound:
            # Temporal refuses a worker with nothing to run; stay up so the stack's shape is stable.
            log.warning("no workflows or activities are registered yet; idling")
            await stop.wait()
            return
        worker = Worker(
            client, task_queue=settings.temporal_task_queue, workflows=registered, activities=bound
        )
        log.info(
            "worker polling",
            extra={
                "task_queue": settings.temporal_task_queue,
                "workflows": [w.__name__ for w in registered],
                "activities": len(bound),
            },
        )
        async with worker:
            await stop.wait()
    finally:
        await engine.dispose()


async def work(settings: Settings) -> None:
    """Run the worker until SIGTERM / SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop)
