"""The gRPC server: every servicer behind the edge, health, reflection and binding."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg
import grpc
from google.protobuf import descriptor_pool
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from rating_client.gen.rating.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    contract_pb2,
    contract_pb2_grpc,
    discount_pb2,
    discount_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
    ops_pb2,
    ops_pb2_grpc,
    portal_pb2,
    portal_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)
from rating_service.api.admin import AdminServicer
from rating_service.api.catalog import CatalogServicer
from rating_service.api.contract import ContractServicer
from rating_service.api.discount import DiscountServicer
from rating_service.api.edge import EdgeInterceptor, RpcMetrics
from rating_service.api.invoice import InvoiceServicer
from rating_service.api.ops import OpsServicer
from rating_service.api.portal import PortalServicer
from rating_service.api.rating import RatingServicer
from rating_service.api.webhook import WebhookServicer
from rating_service.core.ledger.invariants import DriftReport
from rating_service.ops.actions import OperatorActions
from rating_service.ops.replay import InvoiceReplays
from rating_service.services.auth import KeyRing
from rating_service.services.catalog import Catalogs
from rating_service.services.contract import ContractAdmin
from rating_service.services.credit_note import CreditNotes
from rating_service.services.discount import DiscountAdmin
from rating_service.services.invoice import Invoicing
from rating_service.services.rating.engine import DebitEngine
from rating_service.services.rating.entitlements import Entitlements
from rating_service.services.rating.rate_limiter import RateLimiter
from rating_service.services.rating.reservations import Reservations
from rating_service.services.rating.views import AccountViews
from rating_service.services.webhook import Webhooks
from rating_service.settings import Settings
from rating_service.store.books import ContractBooks
from rating_service.store.ledger import reconcile_tenant
from rating_service.store.tenant import TenantStore

SERVICE_NAMES = [
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    contract_pb2.DESCRIPTOR.services_by_name["ContractService"].full_name,
    discount_pb2.DESCRIPTOR.services_by_name["DiscountService"].full_name,
    invoice_pb2.DESCRIPTOR.services_by_name["InvoiceService"].full_name,
    ops_pb2.DESCRIPTOR.services_by_name["OpsService"].full_name,
    portal_pb2.DESCRIPTOR.services_by_name["PortalService"].full_name,
    rating_pb2.DESCRIPTOR.services_by_name["RatingService"].full_name,
    webhook_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
]

SERVICERS: dict[str, type] = {
    "rating.v1.AdminService": AdminServicer,
    "rating.v1.CatalogService": CatalogServicer,
    "rating.v1.ContractService": ContractServicer,
    "rating.v1.DiscountService": DiscountServicer,
    "rating.v1.InvoiceService": InvoiceServicer,
    "rating.v1.OpsService": OpsServicer,
    "rating.v1.PortalService": PortalServicer,
    "rating.v1.RatingService": RatingServicer,
    "rating.v1.WebhookService": WebhookServicer,
}
"""Each service's servicer class: the roles its methods allow are marked on them (`edge.allow`)."""


def rpc_roles() -> list[tuple[str, str, tuple[str, ...]]]:
    """(service, method, roles allowed) of every RPC, in the protos' order."""
    pool = descriptor_pool.Default()
    return [
        (
            name.rsplit(".", 1)[-1],
            method.name,
            tuple(
                sorted(
                    role.value
                    for role in getattr(getattr(SERVICERS[name], method.name), "allowed_roles", ())
                )
            ),
        )
        for name in SERVICE_NAMES
        for method in pool.FindServiceByName(name).methods
    ]


class ApiServices(Protocol):
    """The services the servicers call; the composition root (`runtime.bootstrap`) has them."""

    @property
    def pool(self) -> asyncpg.Pool: ...
    @property
    def keyring(self) -> KeyRing: ...
    @property
    def tenants(self) -> TenantStore: ...
    @property
    def catalogs(self) -> Catalogs: ...
    @property
    def books(self) -> ContractBooks: ...
    @property
    def contract_admin(self) -> ContractAdmin: ...
    @property
    def discount_admin(self) -> DiscountAdmin: ...
    @property
    def debits(self) -> DebitEngine: ...
    @property
    def account_views(self) -> AccountViews: ...
    @property
    def entitlements(self) -> Entitlements: ...
    @property
    def rate_limiter(self) -> RateLimiter: ...
    @property
    def reservations(self) -> Reservations: ...
    @property
    def invoicing(self) -> Invoicing: ...
    @property
    def webhooks(self) -> Webhooks: ...
    @property
    def credit_notes(self) -> CreditNotes: ...


@dataclass
class GrpcServer:
    """A built, not yet started, gRPC server and the parts its owner drives."""

    server: aio.Server
    edge: EdgeInterceptor
    health: HealthServicer
    metrics: CollectorRegistry


def build_server(
    settings: Settings,
    services: ApiServices,
    invoice_replays: Callable[[], Awaitable[InvoiceReplays]],
    actions: OperatorActions,
    *,
    shared_port: bool = False,
) -> GrpcServer:
    """Every servicer behind the edge (auth, limits, errors, metrics), health and reflection.

    A `shared_port` server binds with SO_REUSEPORT, beside the other processes of one
    `rating serve --processes N`; any other server refuses a port already in use.
    """
    metrics = CollectorRegistry()
    edge = EdgeInterceptor(
        services.keyring, RpcMetrics(metrics), settings.max_message_bytes, settings.stream_window
    )
    server = aio.server(
        interceptors=[edge],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            # The edge refuses what is over the limit with a reason; gRPC cuts off the absurd.
            ("grpc.max_receive_message_length", 2 * settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # gRPC would share a port in use by default: a second server on the same port
            # would then take half its connections instead of failing to start.
            ("grpc.so_reuseport", 1 if shared_port else 0),
        ],
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminServicer(services.keyring, services.tenants), server
    )
    if settings.bench_baselines:
        from rating_client.gen.rating.v1 import bench_pb2_grpc
        from rating_service.api.bench import BenchServicer

        bench_pb2_grpc.add_BenchServiceServicer_to_server(BenchServicer(services.pool), server)
    contracts = ContractServicer(services.contract_admin, actions)
    catalog = CatalogServicer(services.catalogs, services.books)
    rating = RatingServicer(
        services.debits,
        services.account_views,
        services.reservations,
        services.invoicing,
        services.entitlements,
        services.rate_limiter,
        settings.max_message_bytes,
    )
    discount_pb2_grpc.add_DiscountServiceServicer_to_server(
        DiscountServicer(services.discount_admin), server
    )
    invoices = InvoiceServicer(services.invoicing, actions, services.credit_notes)
    contract_pb2_grpc.add_ContractServiceServicer_to_server(contracts, server)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog, server)
    rating_pb2_grpc.add_RatingServiceServicer_to_server(rating, server)
    invoice_pb2_grpc.add_InvoiceServiceServicer_to_server(invoices, server)

    async def reconcile(tenant_id: str) -> tuple[DriftReport, int]:
        async with services.pool.acquire() as conn:
            return await reconcile_tenant(conn, tenant_id)

    ops_pb2_grpc.add_OpsServiceServicer_to_server(OpsServicer(invoice_replays, reconcile), server)
    webhook_pb2_grpc.add_WebhookServiceServicer_to_server(
        WebhookServicer(services.webhooks, actions), server
    )
    portal_pb2_grpc.add_PortalServiceServicer_to_server(
        PortalServicer(
            services.keyring,
            services.account_views,
            settings.portal_link_seconds,
            settings.console_url,
            rating,
            contracts,
            invoices,
            catalog,
        ),
        server,
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return GrpcServer(server, edge, health, metrics)


def bind(server: aio.Server, settings: Settings) -> int:
    """Listen on the configured address, with TLS (and client certificates) when configured."""
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
