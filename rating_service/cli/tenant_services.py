"""What operator commands act through: a named tenant's database and services, and its dunning."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import T, load_settings, require_database_url, run_async
from rating_service.core.auth import Caller, Role
from rating_service.core.errors import DomainError

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.ext.asyncio import AsyncEngine
    from temporalio.client import Client as TemporalClient

    from rating_service.services.catalog import Catalogs
    from rating_service.services.contract import ContractAdmin
    from rating_service.services.invoice import Invoicing


@contextlib.asynccontextmanager
async def database_of(
    tenant_name: str,
) -> AsyncIterator[tuple[asyncpg.Pool, AsyncEngine, str]]:
    """The database (an asyncpg pool and an engine) and the id of the tenant named."""
    import asyncpg

    from rating_service.store.database import asyncpg_dsn, create_engine
    from rating_service.store.tenant import TenantStore

    url = require_database_url(load_settings())
    engine = create_engine(url, pool_size=1)
    try:
        tenant = await TenantStore(engine).find(tenant_name)
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
        try:
            yield pool, engine, tenant.tenant_id
        finally:
            await pool.close()
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def invoicing_of(tenant_name: str) -> AsyncIterator[tuple[Invoicing, str]]:
    """Invoicing over the database (no payment gateway) and the id of the tenant named."""
    from rating_service.services.invoice import Invoicing

    async with database_of(tenant_name) as (pool, engine, tenant_id):
        yield Invoicing(pool, engine), tenant_id


@contextlib.asynccontextmanager
async def catalogs_of(tenant_name: str) -> AsyncIterator[tuple[Catalogs, Caller]]:
    """The catalogs of a tenant named on the command line, acting as the operator."""
    from rating_service.services.catalog import Catalogs
    from rating_service.store.catalog import CatalogStore
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    engine = create_engine(require_database_url(load_settings()), pool_size=1)
    try:
        tenant = await TenantStore(engine).find(tenant_name)
        yield Catalogs(CatalogStore(engine)), Caller(tenant.tenant_id, "cli", Role.ADMIN)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def contract_admin_of(tenant_name: str) -> AsyncIterator[tuple[ContractAdmin, Caller]]:
    """Contract administration of a tenant named on the command line, acting as the operator."""
    import asyncpg

    from rating_service.services.contract import ContractAdmin
    from rating_service.store.contract import ContractStore
    from rating_service.store.database import asyncpg_dsn

    async with catalogs_of(tenant_name) as (catalogs, caller):
        dsn = asyncpg_dsn(require_database_url(load_settings()))
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            yield ContractAdmin(ContractStore(pool), catalogs), caller
        finally:
            await pool.close()


def contract_admin_call(
    tenant_name: str, call: Callable[[ContractAdmin, Caller], Awaitable[T]]
) -> T:
    """Make one ContractAdmin call for the tenant; a domain error becomes a click error."""

    async def run() -> T:
        async with contract_admin_of(tenant_name) as (admin, caller):
            return await call(admin, caller)

    return run_async(run)


async def temporal_before(unchanged: str) -> TemporalClient:
    """Temporal, reached before a change that workflows must hear of; if not, say what did not
    happen (`unchanged`) and how to point `rating` at Temporal."""
    from rating_service.runtime.temporal import connect_temporal

    try:
        return await connect_temporal(load_settings())
    except DomainError as exc:
        raise click.ClickException(f"{exc.message}; {unchanged}") from exc


async def signal_dunning(
    temporal: TemporalClient, tenant_id: str, invoice_ids: Sequence[str], signal: str
) -> list[str]:
    """Signal the dunning workflows of these invoices that are running; the invoices signalled."""
    from temporalio.service import RPCError

    from rating_service.workflows.dunning import dunning_workflow_id

    signalled = []
    for invoice_id in invoice_ids:
        handle = temporal.get_workflow_handle(dunning_workflow_id(tenant_id, invoice_id))
        try:
            await handle.signal(signal)
        except RPCError:
            continue  # not in dunning: never failed to pay, or its dunning has ended
        signalled.append(invoice_id)
    return signalled
