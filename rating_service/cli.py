"""The `rating` command: run the server, the worker or the local stack; manage data and keys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import yaml

from rating_service.domain.auth import Caller, Role, issue_key
from rating_service.domain.errors import DomainError
from rating_service.logs import configure_logging
from rating_service.settings import Settings

if TYPE_CHECKING:
    from rating_service.catalogs import Catalogs
    from rating_service.ledger.invariants import DriftReport
    from rating_service.pricing.catalog import CatalogChange

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except DomainError as exc:
        raise click.ClickException(str(exc)) from exc


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise click.ClickException(
            "RATING_DATABASE_URL is not set; `rating dev` prints the URL of its embedded database"
        )
    return settings.database_url


def _run(coroutine_function: Callable[..., Awaitable[T]], *args: Any) -> T:
    try:
        return asyncio.run(coroutine_function(*args))  # type: ignore[arg-type]
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def main() -> None:
    """Rating and billing service for AI usage."""


@main.command()
def serve() -> None:
    """Run the gRPC server until SIGTERM (then drain gracefully)."""
    from rating_service.api.server import serve as serve_forever

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _run(serve_forever, settings)


@main.command()
def worker() -> None:
    """Run the Temporal worker until SIGTERM."""
    from rating_service.worker import work

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _run(work, settings)


@main.command()
@click.option("--address", help="host:port to ask (default: RATING_LISTEN_ADDRESS).")
@click.option("--service", default="", help="Service name; empty means the whole server.")
def health(address: str | None, service: str) -> None:
    """Exit 0 if the server reports SERVING (for container health checks)."""
    from rating_service.api.health import probe

    target = address or _settings().listen_address
    status = _run(probe, target, service)
    click.echo(status)
    if status != "SERVING":
        sys.exit(1)


@main.command()
def dev() -> None:
    """Start everything locally: embedded PostgreSQL, Temporal dev server, server and worker."""
    # pgserver forks pg_ctl while gRPC threads run; gRPC's fork handlers are not needed for that.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from rating_service.dev import run_dev

    settings = _settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, "text")
    try:
        _run(run_dev, settings)
    except KeyboardInterrupt:
        sys.exit(130)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations to RATING_DATABASE_URL."""
    from rating_service.store import migrations

    migrations.upgrade(_database_url(_settings()), revision)
    click.echo(f"database at {revision}")


@main.group()
def tenants() -> None:
    """Tenants (operator commands, straight to the database)."""


@tenants.command("create")
@click.argument("name")
def tenants_create(name: str) -> None:
    """Create a tenant and its first admin API key (the bootstrap of a fresh install)."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenants import TenantStore

    async def create() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            store = TenantStore(engine)
            tenant = await store.create_tenant(name, actor="cli")
            issued = issue_key(tenant.tenant_id, Role.ADMIN, "bootstrap admin", datetime.now(UTC))
            await store.add_key(issued.key, actor="cli")
        finally:
            await engine.dispose()
        click.echo(f"tenant {tenant.tenant_id} ({tenant.name})")
        click.echo(f"admin API key (shown once, keep it secret): {issued.token}")

    _run(create)


@tenants.command("list")
def tenants_list() -> None:
    """List the tenants."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenants import TenantStore

    async def show() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            for tenant in await TenantStore(engine).list_tenants():
                click.echo(f"{tenant.tenant_id}  {tenant.name}  {tenant.created_at:%Y-%m-%d}")
        finally:
            await engine.dispose()

    _run(show)


@main.group()
def keys() -> None:
    """API keys (operator commands, straight to the database)."""


@keys.command("create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="", help="A label for humans, e.g. checkout-service.")
def keys_create(tenant_name: str, role: str, name: str) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenants import TenantStore

    async def create() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            store = TenantStore(engine)
            tenant = await store.find(tenant_name)
            issued = issue_key(tenant.tenant_id, Role(role), name, datetime.now(UTC))
            await store.add_key(issued.key, actor="cli")
        finally:
            await engine.dispose()
        click.echo(f"key {issued.key.key_id} ({role}) for tenant {tenant.name}")
        click.echo(f"API key (shown once, keep it secret): {issued.token}")

    _run(create)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenants import TenantStore

    async def revoke() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            key = await TenantStore(engine).revoke_key(key_id, datetime.now(UTC), actor="cli")
        finally:
            await engine.dispose()
        click.echo(f"key {key.key_id} revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")

    _run(revoke)


@main.group()
def ops() -> None:
    """Operations: ledger reconciliation."""


@ops.command("reconcile")
def ops_reconcile() -> None:
    """Rebuild every account from its transfers and report drift (exit 1 on any drift)."""
    import asyncpg

    from rating_service.store.database import asyncpg_dsn
    from rating_service.store.ledger import reconcile

    async def check() -> dict[str, DriftReport]:
        conn = await asyncpg.connect(asyncpg_dsn(_database_url(_settings())))
        try:
            return await reconcile(conn)
        finally:
            await conn.close()

    reports = _run(check)
    drifted = False
    for tenant_id, report in reports.items():
        for drift in report.drifts:
            drifted = True
            click.echo(
                f"DRIFT {tenant_id} {drift.account_id} {drift.total}:"
                f" recorded {drift.recorded}, transfers say {drift.recomputed}"
            )
        for problem in report.unreplayable:
            drifted = True
            click.echo(f"UNREPLAYABLE {tenant_id} {problem}")
    click.echo(f"{len(reports)} tenants checked: " + ("drift found" if drifted else "no drift"))
    if drifted:
        sys.exit(1)


@main.group()
def catalog() -> None:
    """A tenant's catalog as a YAML document (operator commands, straight to the database)."""


@catalog.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--dry-run", is_flag=True, help="Print the changes without making them.")
def catalog_apply(file: Path, tenant_name: str, dry_run: bool) -> None:
    """Make the tenant's catalog what FILE declares; applying it twice changes nothing."""
    from rating_service.catalog_files import read_catalog_file

    try:
        document = read_catalog_file(file)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{file}: {exc}") from exc

    async def apply() -> list[CatalogChange]:
        async with _catalogs(tenant_name) as (catalogs, caller):
            return await catalogs.apply(caller, document, dry_run=dry_run)

    changes = _run(apply)
    for change in changes:
        click.echo(change.describe())
    verb = "would change" if dry_run else "changed"
    click.echo(f"{len(changes)} {verb}" if changes else "catalog already up to date")


@catalog.command("export")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File.")
def catalog_export(tenant_name: str, output: Path | None) -> None:
    """Write the tenant's catalog as YAML (to stdout, or to --output)."""
    from rating_service.catalog_files import dump_catalog

    async def export() -> dict[str, object]:
        async with _catalogs(tenant_name) as (catalogs, caller):
            return (await catalogs.catalog(caller.tenant_id)).to_document()

    text = dump_catalog(_run(export))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")


@contextlib.asynccontextmanager
async def _catalogs(tenant_name: str) -> AsyncIterator[tuple[Catalogs, Caller]]:
    """The catalogs of a tenant named on the command line, acting as the operator."""
    from rating_service.catalogs import Catalogs
    from rating_service.store.catalog import CatalogStore
    from rating_service.store.database import create_engine
    from rating_service.store.tenants import TenantStore

    engine = create_engine(_database_url(_settings()), pool_size=1)
    try:
        tenant = await TenantStore(engine).find(tenant_name)
        yield Catalogs(CatalogStore(engine)), Caller(tenant.tenant_id, "cli", Role.ADMIN)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
