"""The composition root: the one place that builds the object graph from settings.

Every entry point (`rating serve`, `rating worker`, each CLI command, `rating dev`, the demo and
the benchmarks) asks `bootstrap` for what it needs; no other module constructs a store or a
service. The graph is built lazily: a command that needs one store opens no other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from functools import cached_property

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from rating_service.failpoints import Failpoints
from rating_service.ops.actions import OperatorActions
from rating_service.ops.replay import InvoiceReplays
from rating_service.payments import SimulatedGateway
from rating_service.payments.gateway import PaymentGateway
from rating_service.services.auth import KeyRing
from rating_service.services.catalog import Catalogs
from rating_service.services.contract import ContractAdmin
from rating_service.services.credit_expiry import CreditExpiry
from rating_service.services.credit_note import CreditNotes
from rating_service.services.discount import DiscountAdmin
from rating_service.services.export import WarehouseFeed
from rating_service.services.invoice import Invoicing
from rating_service.services.rating.engine import DebitEngine
from rating_service.services.rating.entitlements import Entitlements
from rating_service.services.rating.rate_limiter import RateLimiter
from rating_service.services.rating.reservations import Reservations
from rating_service.services.rating.views import AccountViews
from rating_service.services.recharge import AutoRecharging
from rating_service.services.renewal import Renewals
from rating_service.services.trial import Trials
from rating_service.services.webhook import Webhooks, webhook_secret_keys
from rating_service.settings import Settings
from rating_service.store.books import ContractBooks
from rating_service.store.catalog import CatalogStore
from rating_service.store.contract import ContractStore
from rating_service.store.credit_note import CreditNoteStore
from rating_service.store.database import asyncpg_dsn, create_engine
from rating_service.store.discount import DiscountStore
from rating_service.store.export import ExportStore
from rating_service.store.invoice import InvoiceStore
from rating_service.store.pg_notify import ChangeListener
from rating_service.store.rating import RatingStore
from rating_service.store.replay import ReplayLog
from rating_service.store.settlement import SettlementStore
from rating_service.store.tenant import TenantStore
from rating_service.store.trial import TrialStore
from rating_service.store.webhook import WebhookStore
from rating_service.workflows.webhook import DeliveryPolicy

log = logging.getLogger("rating.bootstrap")

POOL_CLOSE_SECONDS = 5.0
"""How long closing may wait for connections to come back before it drops them."""


class ProcessRole(StrEnum):
    """What the process is; it decides the pools' size, the caches and who takes payments."""

    SERVER = "server"
    """Serves the API: caches kept fresh by LISTEN/NOTIFY; takes no payment (the worker does),
    but makes the refunds operators ask for."""
    WORKER = "worker"
    """Runs workflows and activities: takes payments through the gateway."""
    COMMAND = "command"
    """One short-lived command (CLI, dev setup, demo, benchmark): few connections, no caches."""
    SOLE_WRITER = "sole_writer"
    """The database's only writer (a benchmark seeding it): caches kept without LISTEN/NOTIFY."""


class Components:
    """Every store and service of one process, each built once, on first use."""

    def __init__(
        self, settings: Settings, role: ProcessRole, engine: AsyncEngine, pool: asyncpg.Pool
    ) -> None:
        self.settings = settings
        self.role = role
        self.engine = engine
        """SQLAlchemy over asyncpg: the admin paths (tenants, catalog)."""
        self.pool = pool
        """Plain asyncpg: the hot path, contracts, the ledger and invoices."""

    def _is_live(self) -> bool:
        """Whether caches may trust themselves: while LISTEN/NOTIFY is listening, or alone."""
        if self.role is ProcessRole.SOLE_WRITER:
            return True
        return self.role is ProcessRole.SERVER and self.changes.listening

    # Stores: data in, data out.

    @cached_property
    def changes(self) -> ChangeListener:
        """LISTEN/NOTIFY on the channels that tell caches what changed."""
        return ChangeListener(database_url(self.settings))

    @cached_property
    def tenants(self) -> TenantStore:
        """Tenants and their API keys."""
        return TenantStore(self.engine)

    @cached_property
    def catalog_store(self) -> CatalogStore:
        """The tenants' catalogs."""
        return CatalogStore(self.engine)

    @cached_property
    def contracts(self) -> ContractStore:
        """Customers, contracts, pools and their ledger movements."""
        return ContractStore(self.pool)

    @cached_property
    def invoices(self) -> InvoiceStore:
        """Invoices, their numbers, payments and documents."""
        return InvoiceStore(self.pool)

    @cached_property
    def settlement(self) -> SettlementStore:
        """Expiries and renewals' settlements."""
        return SettlementStore(self.pool)

    @cached_property
    def rating_store(self) -> RatingStore:
        """Rated events and the debits' ledger writes (the hot path)."""
        return RatingStore(self.pool)

    @cached_property
    def webhook_store(self) -> WebhookStore:
        """Webhook endpoints (secrets sealed) and their deliveries."""
        return WebhookStore(self.pool, webhook_secret_keys(self.settings))

    @cached_property
    def export_store(self) -> ExportStore:
        """Rows read for export, and continuous exporters' positions."""
        return ExportStore(self.pool)

    @cached_property
    def replay_log(self) -> ReplayLog:
        """The log of ops replays."""
        return ReplayLog(self.pool)

    @cached_property
    def books(self) -> ContractBooks:
        """The contracts rating reads, cached while LISTEN/NOTIFY keeps them fresh."""
        return ContractBooks(
            self.rating_store, self._is_live, self.settings.contract_cache_customers
        )

    # Services: the use cases.

    @cached_property
    def keyring(self) -> KeyRing:
        """API keys to callers, cached for `auth_cache_seconds`."""
        return KeyRing(
            self.tenants,
            self.settings.auth_cache_seconds,
            portal_secret=self.settings.portal_secret,
        )

    @cached_property
    def catalogs(self) -> Catalogs:
        """Catalog reads and changes."""
        return Catalogs(self.catalog_store, is_live=self._is_live)

    @cached_property
    def contract_admin(self) -> ContractAdmin:
        """Customers, contracts and grants; tells this process's caches what it changed."""
        return ContractAdmin(
            self.contracts,
            self.catalogs,
            changed=lambda tenant_id, customer_id: self.books.cache.forget(
                (tenant_id, customer_id)
            ),
        )

    @cached_property
    def discount_store(self) -> DiscountStore:
        """Coupons and contract discounts."""
        return DiscountStore(self.pool)

    @cached_property
    def discount_admin(self) -> DiscountAdmin:
        """Coupons defined, applied to contracts, and discounts removed."""
        return DiscountAdmin(self.discount_store, self.catalogs)

    @cached_property
    def reservations(self) -> Reservations:
        """Authorize, capture and void, and the sweep of expired holds."""
        return Reservations(self.rating_store, self.books)

    @cached_property
    def debits(self) -> DebitEngine:
        """RateAndDebit with group commit."""
        return DebitEngine(
            self.rating_store,
            self.catalogs,
            self.books,
            self.reservations,
            committers=self.settings.debit_committers,
            limiter=self.rate_limiter,
            counted=self.entitlements.forget,
        )

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        """Contracts' and keys' rate limits, shared with the port's other server processes."""
        return RateLimiter.from_environment()

    @cached_property
    def entitlements(self) -> Entitlements:
        """CheckEntitlement from the caches and the period counters."""
        return Entitlements(self.rating_store, self.catalogs, self.books)

    @cached_property
    def account_views(self) -> AccountViews:
        """Balances and usage as callers see them."""
        return AccountViews(self.rating_store, self.books, self.catalogs)

    @cached_property
    def gateway(self) -> PaymentGateway:
        """The payment gateway (the simulated one: no real gateway adapter exists yet)."""
        return SimulatedGateway(
            self.pool, self.settings.gateway_timeout_seconds, self.settings.gateway_latency_seconds
        )

    @cached_property
    def invoicing(self) -> Invoicing:
        """Invoices made, issued and collected; only a worker collects payments."""
        return Invoicing(
            self.contracts,
            self.invoices,
            self.catalog_store,
            self.tenants,
            self.gateway if self.role is ProcessRole.WORKER else None,
            failpoints=Failpoints.parse(self.settings.failpoints),
            discounts=self.discount_store,
        )

    @cached_property
    def credit_note_store(self) -> CreditNoteStore:
        """Credit notes, their numbers and refunds."""
        return CreditNoteStore(self.pool)

    @cached_property
    def credit_notes(self) -> CreditNotes:
        """Credit notes issued and refunded (through the gateway, by any process an operator
        asks: a refund is the answer to their request, not a workflow's step)."""
        return CreditNotes(
            self.credit_note_store,
            self.invoices,
            self.contracts,
            self.tenants,
            self.contract_admin,
            self.gateway,
        )

    @cached_property
    def recharging(self) -> AutoRecharging:
        """Auto-recharge: charges and grants when a pool runs low."""
        return AutoRecharging(self.pool, self.contracts, self.contract_admin, self.gateway)

    @cached_property
    def renewals(self) -> Renewals:
        """Commitment renewals at term end."""
        return Renewals(self.contracts, self.contract_admin, self.settlement)

    @cached_property
    def credit_expiry(self) -> CreditExpiry:
        """Credit expiry: warnings and the move of what is left."""
        return CreditExpiry(self.contracts, self.settlement)

    @cached_property
    def trials(self) -> Trials:
        """Trials: their end announced ahead, and their conversion."""
        return Trials(self.contracts, TrialStore(self.pool))

    @cached_property
    def webhooks(self) -> Webhooks:
        """Webhook endpoints and the delivery of notifications to them."""
        return Webhooks(self.webhook_store)

    @cached_property
    def warehouse_feed(self) -> WarehouseFeed:
        """Every tenant's rated events to RATING_EXPORT_DESTINATION (the worker runs it if set)."""

        async def tenant_ids() -> list[str]:
            return [tenant.tenant_id for tenant in await self.tenants.list_tenants()]

        return WarehouseFeed(
            self.export_store,
            tenant_ids,
            self.settings.export_destination,
            batch_size=self.settings.export_batch_size,
            poll_seconds=self.settings.export_poll_seconds,
            failpoints=Failpoints.parse(self.settings.failpoints),
        )

    def operator_actions(self, temporal: Callable[[], Awaitable[Client]]) -> OperatorActions:
        """Operator actions on invoices and contracts, telling workflows through `temporal`."""
        return OperatorActions(
            self.invoicing,
            self.contract_admin,
            self.webhooks,
            temporal,
            self.settings.temporal_task_queue,
            DeliveryPolicy.from_settings(self.settings),
            self.credit_notes,
        )

    def invoice_replays(self, temporal: Client) -> InvoiceReplays:
        """Ops' view of failed invoice workflows, and their replay, over `temporal`."""
        return InvoiceReplays(
            temporal,
            self.pool,
            self.invoices,
            self.contracts,
            self.replay_log,
            self.settings.temporal_task_queue,
        )

    async def close(self) -> None:
        """Stop the change listener if it ran, then close the pools."""
        if "changes" in self.__dict__:
            await self.changes.stop()
        try:
            async with asyncio.timeout(POOL_CLOSE_SECONDS):
                await self.pool.close()
        except TimeoutError:
            log.warning("database pool did not close in time; terminating its connections")
            self.pool.terminate()
        await self.engine.dispose()


def database_url(settings: Settings) -> str:
    """The configured database, or an exit that says what to set."""
    if not settings.database_url:
        raise SystemExit("RATING_DATABASE_URL is not set (or run `rating dev` for a local stack)")
    return settings.database_url


async def open_components(settings: Settings, role: ProcessRole) -> Components:
    """Open the database pools for `role` (lazily connected) and the graph over them."""
    url = database_url(settings)
    size = 2 if role is ProcessRole.COMMAND else settings.database_pool_size
    engine = create_engine(url, size)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=0, max_size=size)
    return Components(settings, role, engine, pool)


@asynccontextmanager
async def bootstrap(
    settings: Settings, role: ProcessRole = ProcessRole.COMMAND
) -> AsyncIterator[Components]:
    """The graph for one process or command, closed on exit."""
    components = await open_components(settings, role)
    try:
        yield components
    finally:
        await components.close()
