"""What operator commands act through: a named tenant's database, services and operator actions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import T, load_settings, require_database_url, run_async
from rating_service.core.auth import Caller, Role
from rating_service.core.errors import DomainError

if TYPE_CHECKING:
    from temporalio.client import Client as TemporalClient

    from rating_service.ops.actions import OperatorActions
    from rating_service.runtime.bootstrap import Components
    from rating_service.services.catalog import Catalogs
    from rating_service.services.contract import ContractAdmin
    from rating_service.services.invoice import Invoicing


@contextlib.asynccontextmanager
async def components() -> AsyncIterator[Components]:
    """The stores and services a command acts through, from the composition root."""
    from rating_service.runtime.bootstrap import bootstrap

    settings = load_settings()
    require_database_url(settings)  # the command's own advice, before any connection
    async with bootstrap(settings) as built:
        yield built


@contextlib.asynccontextmanager
async def tenant_components(tenant_name: str) -> AsyncIterator[tuple[Components, Caller]]:
    """The services, and the operator acting for the tenant named on the command line."""
    async with components() as built:
        tenant = await built.tenants.find(tenant_name)
        yield built, Caller(tenant.tenant_id, "cli", Role.ADMIN)


@contextlib.asynccontextmanager
async def invoicing_of(tenant_name: str) -> AsyncIterator[tuple[Invoicing, str]]:
    """Invoicing (no payment gateway: the worker collects) and the id of the tenant named."""
    async with tenant_components(tenant_name) as (built, caller):
        yield built.invoicing, caller.tenant_id


@contextlib.asynccontextmanager
async def catalogs_of(tenant_name: str) -> AsyncIterator[tuple[Catalogs, Caller]]:
    """The catalogs of a tenant named on the command line, acting as the operator."""
    async with tenant_components(tenant_name) as (built, caller):
        yield built.catalogs, caller


@contextlib.asynccontextmanager
async def contract_admin_of(tenant_name: str) -> AsyncIterator[tuple[ContractAdmin, Caller]]:
    """Contract administration of a tenant named on the command line, acting as the operator."""
    async with tenant_components(tenant_name) as (built, caller):
        yield built.contract_admin, caller


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


@contextlib.asynccontextmanager
async def actions_of(
    tenant_name: str, unchanged: str
) -> AsyncIterator[tuple[OperatorActions, Caller]]:
    """Operator actions for the tenant named; without Temporal, say what did not happen."""
    async with tenant_components(tenant_name) as (built, caller):
        yield built.operator_actions(lambda: temporal_before(unchanged)), caller
