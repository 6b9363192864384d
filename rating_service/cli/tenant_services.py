"""What the database-direct commands act through: the composition root, and a tenant named
on the command line.

Only bootstrap and recovery commands come here (`tenants`, `keys`, `catalog`, `webhooks
new-key / reencrypt`); the operator commands are clients of the API (`api_client`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from rating_service.cli.command_line import load_settings, require_database_url
from rating_service.core.auth import Caller, Role

if TYPE_CHECKING:
    from rating_service.runtime.bootstrap import Components
    from rating_service.services.catalog import Catalogs


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
async def catalogs_of(tenant_name: str) -> AsyncIterator[tuple[Catalogs, Caller]]:
    """The catalogs of a tenant named on the command line, acting as the operator."""
    async with tenant_components(tenant_name) as (built, caller):
        yield built.catalogs, caller
