"""`rating tenants` and `rating keys`: tenants and their API keys."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from rating_service.cli.command_line import (
    run_async,
    tenant_option,
)
from rating_service.cli.tenant_services import components
from rating_service.core.auth import KEY_ROLES, Role, issue_key


@click.group()
def tenants() -> None:
    """Tenants (bootstrap: straight to the database, RATING_DATABASE_URL)."""


@tenants.command("create")
@click.argument("name")
def tenants_create(name: str) -> None:
    """Create a tenant and its first admin API key (the bootstrap of a fresh install)."""

    async def create() -> None:
        async with components() as built:
            tenant = await built.tenants.create_tenant(name, actor="cli")
            issued = issue_key(tenant.tenant_id, Role.ADMIN, "bootstrap admin", datetime.now(UTC))
            await built.tenants.add_key(issued.key, actor="cli")
        click.echo(f"tenant {tenant.tenant_id} ({tenant.name})")
        click.echo(f"admin API key (shown once, keep it secret): {issued.token}")

    run_async(create)


@tenants.command("list")
def tenants_list() -> None:
    """List the tenants."""

    async def show() -> None:
        async with components() as built:
            for tenant in await built.tenants.list_tenants():
                click.echo(f"{tenant.tenant_id}  {tenant.name}  {tenant.created_at:%Y-%m-%d}")

    run_async(show)


@click.group()
def keys() -> None:
    """API keys (bootstrap and recovery: straight to the database, RATING_DATABASE_URL; over
    the API an admin key uses AdminService)."""


@keys.command("create")
@tenant_option
@click.option("--role", type=click.Choice([r.value for r in KEY_ROLES]), required=True)
@click.option("--name", default="", help="A label for humans, e.g. checkout-service.")
def keys_create(tenant_name: str, role: str, name: str) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""

    async def create() -> None:
        async with components() as built:
            tenant = await built.tenants.find(tenant_name)
            issued = issue_key(tenant.tenant_id, Role(role), name, datetime.now(UTC))
            await built.tenants.add_key(issued.key, actor="cli")
        click.echo(f"key {issued.key.key_id} ({role}) for tenant {tenant.name}")
        click.echo(f"API key (shown once, keep it secret): {issued.token}")

    run_async(create)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""

    async def revoke() -> None:
        async with components() as built:
            key = await built.tenants.revoke_key(key_id, datetime.now(UTC), actor="cli")
        click.echo(f"key {key.key_id} revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")

    run_async(revoke)
