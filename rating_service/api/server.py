"""The gRPC server factory and `rating serve`: wiring, TLS, limits, health, reflection, metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from rating_client.gen.rating.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    contract_pb2,
    contract_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
    ops_pb2,
    ops_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
)
from rating_service.api.admin import AdminServicer
from rating_service.api.catalog import CatalogServicer
from rating_service.api.contract import ContractServicer
from rating_service.api.edge import CUT_SHORT_SECONDS, EdgeInterceptor, RpcMetrics
from rating_service.api.health import DatabaseHealth
from rating_service.api.invoice import InvoiceServicer
from rating_service.api.ops import OpsServicer
from rating_service.api.rating import RatingServicer
from rating_service.services.auth import KeyRing
from rating_service.services.catalog import Catalogs
from rating_service.services.contract import ContractAdmin
from rating_service.services.invoice import Invoicing
from rating_service.services.rating.engine import DebitEngine
from rating_service.services.rating.reservations import Reservations
from rating_service.services.rating.views import AccountViews
from rating_service.settings import Settings
from rating_service.store.books import ContractBooks
from rating_service.store.catalog import CatalogStore
from rating_service.store.contract import ContractStore
from rating_service.store.database import asyncpg_dsn, create_engine
from rating_service.store.pg_notify import ChangeListener
from rating_service.store.rating import RatingStore
from rating_service.store.tenant import TenantStore

log = logging.getLogger("rating.server")

POOL_CLOSE_SECONDS = 5.0
"""How long the pool may wait for connections to come back at shutdown before it drops them."""

SERVICE_NAMES = [
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    contract_pb2.DESCRIPTOR.services_by_name["ContractService"].full_name,
    invoice_pb2.DESCRIPTOR.services_by_name["InvoiceService"].full_name,
    ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name,
    rating_pb2.DESCRIPTOR.services_by_name["RatingService"].full_name,
]


@dataclass
class RunningServer:
    """A started server and what it owns; `stop` drains it and releases everything."""

    server: aio.Server
    port: int
    metrics_port: int | None
    edge: EdgeInterceptor
    health: DatabaseHealth
    health_servicer: HealthServicer
    engine: AsyncEngine
    pool: asyncpg.Pool
    changes: ChangeListener
    debits: DebitEngine
    reservations: Reservations
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
        await self.debits.stop()
        await self.reservations.stop()
        await self.changes.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()  # shutdown() only stops the loop; free the port
        await _close_pool(self.pool)
        await self.engine.dispose()


async def start_server(settings: Settings) -> RunningServer:
    """Build, bind and start a server from settings; the database is reached lazily."""
    if not settings.database_url:
        raise SystemExit("RATING_DATABASE_URL is not set (or run `rating dev` for a local stack)")
    engine = create_engine(settings.database_url, settings.database_pool_size)
    tenants = TenantStore(engine)
    keyring = KeyRing(tenants, settings.auth_cache_seconds)
    registry = CollectorRegistry()
    edge = EdgeInterceptor(keyring, RpcMetrics(registry), settings.max_message_bytes)
    server = aio.server(
        interceptors=[edge],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            # The edge refuses what is over the limit with a reason; gRPC cuts off the absurd.
            ("grpc.max_receive_message_length", 2 * settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    # The hot path speaks asyncpg directly; SQLAlchemy serves the admin paths.
    pool = await asyncpg.create_pool(
        asyncpg_dsn(settings.database_url), min_size=0, max_size=settings.database_pool_size
    )
    changes = ChangeListener(settings.database_url)
    catalogs = Catalogs(CatalogStore(engine), is_live=lambda: changes.listening)
    changes.subscribe(catalogs.channel, catalogs.cache.forget, catalogs.cache.forget_all)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(keyring, tenants), server)
    if settings.bench_baselines:
        from rating_client.gen.rating.v1 import bench_pb2_grpc
        from rating_service.api.bench import BenchServicer

        bench_pb2_grpc.add_BenchServiceServicer_to_server(BenchServicer(pool), server)
    rating_store = RatingStore(pool)
    books = ContractBooks(rating_store, is_live=lambda: changes.listening)
    changes.subscribe(books.channel, books.forget_payload, books.cache.forget_all)
    admin = ContractAdmin(
        ContractStore(pool),
        catalogs,
        changed=lambda tenant_id, customer_id: books.cache.forget((tenant_id, customer_id)),
    )
    contract_pb2_grpc.add_ContractServiceServicer_to_server(ContractServicer(admin), server)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(catalogs, books), server)
    reservations = Reservations(rating_store, books)
    debits = DebitEngine(
        rating_store, catalogs, books, reservations, committers=settings.debit_committers
    )
    # Reads, previews and renders only: collecting payments is the worker's job, so no gateway.
    invoicing = Invoicing(pool, engine)
    rating_pb2_grpc.add_RatingServiceServicer_to_server(
        RatingServicer(
            debits, AccountViews(rating_store, books, catalogs), reservations, invoicing
        ),
        server,
    )
    invoice_pb2_grpc.add_InvoiceServiceServicer_to_server(InvoiceServicer(invoicing), server)
    ops_pb2_grpc.add_OpsServiceServicer_to_server(OpsServicer(settings, pool), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = _bind(server, settings)
    metrics_port, metrics_http = _start_metrics(settings.metrics_address, registry)
    await server.start()
    health = DatabaseHealth(
        engine, health_servicer, SERVICE_NAMES, settings.health_check_interval_seconds
    )
    await health.check_once()
    health.start()
    changes.start()
    debits.start()
    reservations.start_sweeping(settings.reservation_sweep_seconds)
    log.info(
        "serving",
        extra={"address": settings.listen_address, "port": port, "metrics_port": metrics_port},
    )
    return RunningServer(
        server,
        port,
        metrics_port,
        edge,
        health,
        health_servicer,
        engine,
        pool,
        changes,
        debits,
        reservations,
        metrics_http,
    )


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM / SIGINT (or `stop`), then drain gracefully."""
    running = await start_server(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        await running.stop(settings.shutdown_grace_seconds)
        log.info("stopped")


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool, or terminate it if a connection is not released in time."""
    try:
        async with asyncio.timeout(POOL_CLOSE_SECONDS):
            await pool.close()
    except TimeoutError:
        log.warning("database pool did not close in time; terminating its connections")
        pool.terminate()


def _bind(server: aio.Server, settings: Settings) -> int:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        port: int = server.add_insecure_port(settings.listen_address)
    else:
        ca = _read(settings.tls_client_ca_file)
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )
        port = server.add_secure_port(settings.listen_address, credentials)
    if port == 0:
        raise SystemExit(f"cannot listen on {settings.listen_address}: is the port in use?")
    return port


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _start_metrics(address: str, registry: CollectorRegistry) -> tuple[int | None, Any]:
    """Serve /metrics on `host:port` (port 0 picks one; an empty address turns metrics off)."""
    if not address:
        return None, None
    host, _, port = address.rpartition(":")
    try:
        http_server, _thread = start_http_server(
            int(port), addr=host or "0.0.0.0", registry=registry
        )
    except OSError as exc:
        raise SystemExit(
            f"cannot serve metrics on {address}: {exc}; set RATING_METRICS_ADDRESS to another "
            "address, or to empty to turn metrics off"
        ) from exc
    return int(http_server.server_address[1]), http_server
