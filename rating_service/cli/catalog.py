"""`rating catalog`: a tenant's catalog as a YAML document, applied and exported."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from rating_service.cli.command_line import run_async, tenant_option
from rating_service.cli.tenant_services import catalogs_of

if TYPE_CHECKING:
    from rating_service.core.pricing.catalog import CatalogChange


@click.group()
def catalog() -> None:
    """A tenant's catalog as a YAML document, applied as one plan (straight to the database,
    RATING_DATABASE_URL, with --tenant: the API has no call that applies a whole catalog)."""


@catalog.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@click.option("--dry-run", is_flag=True, help="Print the changes without making them.")
def catalog_apply(file: Path, tenant_name: str, dry_run: bool) -> None:
    """Make the tenant's catalog what FILE declares; applying it twice changes nothing."""
    from rating_service.cli.catalog_file import read_catalog_file

    try:
        document = read_catalog_file(file)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{file}: {exc}") from exc

    async def apply() -> list[CatalogChange]:
        async with catalogs_of(tenant_name) as (catalogs, caller):
            return await catalogs.apply(caller, document, dry_run=dry_run)

    changes = run_async(apply)
    for change in changes:
        click.echo(change.describe())
    verb = "would change" if dry_run else "changed"
    click.echo(f"{len(changes)} {verb}" if changes else "catalog already up to date")


@catalog.command("export")
@tenant_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File.")
def catalog_export(tenant_name: str, output: Path | None) -> None:
    """Write the tenant's catalog as YAML (to stdout, or to --output)."""
    from rating_service.cli.catalog_file import dump_catalog

    async def export() -> dict[str, object]:
        async with catalogs_of(tenant_name) as (catalogs, caller):
            return (await catalogs.catalog(caller.tenant_id)).to_document()

    text = dump_catalog(run_async(export))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")
