"""`rating worker`: runs the workflows and activities, and delivers the outbox to Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from rating_service.background import stop_task
from rating_service.core.errors import FailedPrecondition, PreconditionViolation, Unavailable
from rating_service.faults import Failure, classify_failure
from rating_service.outbox.dispatcher import OutboxDispatcher
from rating_service.payments import SimulatedGateway
from rating_service.runtime.temporal import block_runtime, in_block
from rating_service.services.webhook import Notifications, webhook_secret_keys
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn, create_engine
from rating_service.workflows.registry import (
    SANDBOX,
    WORKFLOWS,
    WorkerDependencies,
    activities,
    outbox_handlers,
)

log = logging.getLogger("rating.worker")


async def connect_temporal(settings: Settings) -> Client:
    """A Temporal client for the configured address and namespace, with an actionable error.

    Refused with reason `TEMPORAL_UNAVAILABLE`: FAILED_PRECONDITION when no address is set,
    UNAVAILABLE (so callers retry) when the server cannot be reached.
    """
    if not settings.temporal_address:
        raise _temporal_unavailable(
            "RATING_TEMPORAL_ADDRESS is not set: set it to the Temporal frontend's host:port"
            " (`rating dev` runs one and prints its address)"
        )
    try:
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            runtime=block_runtime(),  # a `rating` command's own, stopped before it exits
        )
    except RuntimeError as exc:
        raise Unavailable(
            f"cannot reach Temporal at {settings.temporal_address}: {exc}; "
            "check RATING_TEMPORAL_ADDRESS and that the server is up",
            reason="TEMPORAL_UNAVAILABLE",
        ) from exc
    return in_block(client)


def _temporal_unavailable(description: str) -> FailedPrecondition:
    return FailedPrecondition(
        description,
        reason="TEMPORAL_UNAVAILABLE",
        violations=[PreconditionViolation("TEMPORAL", "temporal", description)],
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Poll the task queue and deliver the outbox until `stop` is set, then drain and return."""
    client = await connect_temporal(settings)
    if not settings.database_url:
        raise SystemExit("RATING_DATABASE_URL is not set (or run `rating dev` for a local stack)")
    engine = create_engine(settings.database_url, settings.database_pool_size)
    pool = await asyncpg.create_pool(
        asyncpg_dsn(settings.database_url), min_size=0, max_size=settings.database_pool_size
    )
    delivering: asyncio.Task[None] | None = None
    try:
        # Refuse to start rather than fail every delivery: each stored secret needs its key.
        await _when_reachable(Notifications(pool, webhook_secret_keys(settings)).check_keys, stop)
        gateway = SimulatedGateway(
            pool, settings.gateway_timeout_seconds, settings.gateway_latency_seconds
        )
        deps = WorkerDependencies(pool, engine, gateway, client, settings)
        dispatcher = OutboxDispatcher(pool, outbox_handlers(deps), settings.outbox_poll_seconds)
        worker = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=list(WORKFLOWS),
            activities=activities(deps),
            workflow_runner=SANDBOX,
        )
        log.info(
            "worker polling",
            extra={
                "task_queue": settings.temporal_task_queue,
                "workflows": [w.__name__ for w in WORKFLOWS],
            },
        )
        async with worker:
            delivering = asyncio.create_task(dispatcher.run())
            await stop.wait()
    finally:
        await stop_task(delivering)
        await pool.close()
        await engine.dispose()


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
    await run_worker(settings, stop)
