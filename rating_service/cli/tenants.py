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
from rating_service.core.contracts.rate_limits import RateLimit, rate_limit_from_dict
from rating_service.core.errors import InvalidArgument


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
@click.option(
    "--rate-limit",
    "rate_limit",
    metavar="N/PER[:BURST]",
    help="At most N usage events per second, minute or hour (e.g. 100/second:200).",
)
def keys_create(tenant_name: str, role: str, name: str, rate_limit: str | None) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""
    limit = None if rate_limit is None else _key_rate_limit(rate_limit)

    async def create() -> None:
        async with components() as built:
            tenant = await built.tenants.find(tenant_name)
            issued = issue_key(tenant.tenant_id, Role(role), name, datetime.now(UTC), limit)
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


def _key_rate_limit(text: str) -> RateLimit:
    """`N/PER[:BURST]` as a key's rate limit, or a usage error naming what is wrong."""
    amount, _, rest = text.partition("/")
    per, _, burst = rest.partition(":")
    data: dict[str, object] = {"limit_id": "key", "limit": amount.strip(), "per": per.strip()}
    if burst:
        data["burst"] = burst.strip()
    try:
        return rate_limit_from_dict(data, "--rate-limit")
    except InvalidArgument as error:
        problems = "; ".join(f"{v.field}: {v.description}" for v in error.violations)
        raise click.BadParameter(f"{text!r} ({problems}); e.g. 100/second:200") from None
