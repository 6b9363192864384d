"""`rating serve`: the API server built from the composition root, started, and drained."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from grpc import aio
from grpc_health.v1._async import HealthServicer
from temporalio.client import Client

from rating_service.api.edge import CUT_SHORT_SECONDS, EdgeInterceptor
from rating_service.api.health import DatabaseHealth
from rating_service.api.metrics import start_metrics
from rating_service.api.server import SERVICE_NAMES, bind, build_server
from rating_service.ops.replay import InvoiceReplays
from rating_service.runtime.bootstrap import Components, ProcessRole, open_components
from rating_service.runtime.garbage import collect_garbage_less_often
from rating_service.runtime.supervisor import SupervisorLink
from rating_service.runtime.temporal import connect_temporal
from rating_service.runtime.tracing import start_tracing
from rating_service.settings import Settings

log = logging.getLogger("rating.server")


@dataclass
class RunningServer:
    """A started server and what it owns; `stop` drains it and releases everything."""

    server: aio.Server
    port: int
    metrics_port: int | None
    edge: EdgeInterceptor
    health: DatabaseHealth
    health_servicer: HealthServicer
    components: Components
    _metrics_http: Any = None

    async def stop(self, grace_seconds: float) -> None:
        """Drain, then release everything.

        Health says NOT_SERVING and new RPCs are refused with UNAVAILABLE at once; RPCs in
        flight get the grace to finish, and those still running then answer UNAVAILABLE too.
        Only then does gRPC stop and do the loops the RPCs depend on stop: the debit committers
        answer the RPCs waiting in the group-commit queue, and LISTEN/NOTIFY keeps their caches
        live. The pools close last.
        """
        await self.health.stop()  # else its next poll could publish SERVING again
        await self.health_servicer.enter_graceful_shutdown()
        cut_short = await self.edge.drain(grace_seconds)
        if cut_short:
            log.warning("RPCs cut short by the drain", extra={"rpcs": cut_short})
        # Nothing of ours is in flight now; what gRPC may still cancel is health Watch
        # streams and reflection.
        await self.server.stop(CUT_SHORT_SECONDS)
        await self.components.debits.stop()
        await self.components.reservations.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()  # shutdown() only stops the loop; free the port
        await self.components.close()  # LISTEN/NOTIFY, then the pools


async def start_server(settings: Settings, *, shared_port: bool = False) -> RunningServer:
    """Build, bind and start a server from settings; the database is reached lazily.

    A `shared_port` server is one process of several on the port (`runtime.supervisor`).
    """
    components = await open_components(settings, ProcessRole.SERVER)
    changes = components.changes
    catalogs, books = components.catalogs, components.books
    changes.subscribe(catalogs.channel, catalogs.cache.forget, catalogs.cache.forget_all)
    changes.subscribe(books.channel, books.forget_payload, books.cache.forget_all)
    temporal: Client | None = None
    replays: InvoiceReplays | None = None
    connecting = asyncio.Lock()

    async def temporal_client() -> Client:
        """Temporal, connected on first use: the server starts and rates without it."""
        nonlocal temporal
        async with connecting:
            if temporal is None:
                temporal = await connect_temporal(settings)
        return temporal

    async def invoice_replays() -> InvoiceReplays:
        """Ops' replays, over Temporal once it is reached."""
        nonlocal replays
        if replays is None:
            replays = components.invoice_replays(await temporal_client())
        return replays

    built = build_server(
        settings,
        components,
        invoice_replays,
        components.operator_actions(temporal_client),
        shared_port=shared_port,
    )
    port = bind(built.server, settings)
    metrics_port, metrics_http = start_metrics(settings.metrics_address, built.metrics)
    await built.server.start()
    health = DatabaseHealth(
        components.engine, built.health, SERVICE_NAMES, settings.health_check_interval_seconds
    )
    await health.check_once()
    health.start()
    changes.start()
    components.debits.start()
    components.reservations.start_sweeping(settings.reservation_sweep_seconds)
    log.info(
        # "serving" is the whole server's word: with several processes, the supervisor says it.
        "server process serving" if shared_port else "serving",
        extra={"address": settings.listen_address, "port": port, "metrics_port": metrics_port},
    )
    return RunningServer(
        built.server,
        port,
        metrics_port,
        built.edge,
        health,
        built.health,
        components,
        metrics_http,
    )


async def serve(
    settings: Settings,
    stop: asyncio.Event | None = None,
    supervisor: SupervisorLink | None = None,
) -> None:
    """Run until SIGTERM / SIGINT (or `stop`), then drain gracefully.

    Under a `supervisor` (one of several processes on the port), it tells it when it serves,
    and drains as well when the supervisor is gone, however that ended.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_tracing = start_tracing(settings, "rating-server")
    running = await start_server(settings, shared_port=supervisor is not None)
    collect_garbage_less_often(settings.gc_threshold)
    watching = (
        None if supervisor is None else asyncio.create_task(_stop_when_gone(supervisor, stop))
    )
    try:
        await stop.wait()
    finally:
        if watching is not None:
            watching.cancel()
        log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        await running.stop(settings.shutdown_grace_seconds)
        if stop_tracing is not None:
            stop_tracing()
        log.info("stopped", extra={"rpcs_handled": running.edge.handled})


async def _stop_when_gone(supervisor: SupervisorLink, stop: asyncio.Event) -> None:
    """Say we serve, then stop once the supervisor is gone (a process left alone drains)."""
    try:
        await supervisor.serving()
        await supervisor.gone()
    except OSError:
        pass  # gone before it heard us
    log.warning("the supervisor is gone; draining")
    stop.set()
