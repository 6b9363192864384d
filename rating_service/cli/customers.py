"""`rating customers`: a tenant's customers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import tenant_option
from rating_service.cli.tenant_services import contract_admin_call

if TYPE_CHECKING:
    from rating_service.core.contracts.contract import Customer


@click.group()
def customers() -> None:
    """A tenant's customers (operator commands, straight to the database)."""


@customers.command("create")
@click.argument("customer_id")
@tenant_option
@click.option("--name", help="A name for humans (default: the id).")
def customers_create(customer_id: str, tenant_name: str, name: str | None) -> None:
    """Create a customer under the tenant's own id for them (e.g. their CRM id)."""
    request = {"customer_id": customer_id, "name": name or customer_id}
    customer: Customer = contract_admin_call(
        tenant_name, lambda admin, caller: admin.create_customer(caller, request)
    )
    click.echo(f"customer {customer.customer_id} ({customer.name})")


@customers.command("list")
@tenant_option
def customers_list(tenant_name: str) -> None:
    """List the tenant's customers, by id."""
    found: list[Customer] = contract_admin_call(
        tenant_name, lambda admin, caller: admin.customers(caller)
    )
    for customer in found:
        click.echo(f"{customer.customer_id}  {customer.name}")
