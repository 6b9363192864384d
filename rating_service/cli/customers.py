"""`rating customers`: a tenant's customers, through the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from rating_service.cli.api_client import api_call

if TYPE_CHECKING:
    from rating_client import RatingClient
    from rating_client.gen.rating.v1 import contract_pb2


@click.group()
def customers() -> None:
    """The customers of RATING_API_KEY's tenant (through the API)."""


@customers.command("create")
@click.argument("customer_id")
@click.option("--name", help="A name for humans (default: the id).")
def customers_create(customer_id: str, name: str | None) -> None:
    """Create a customer under the tenant's own id for them, e.g. their CRM id (`CreateCustomer`,
    an admin key)."""
    customer: contract_pb2.Customer = api_call(
        lambda client: client.create_customer(customer_id, name or customer_id),
        {"CUSTOMER_EXISTS": "`rating customers list` lists the customers"},
    )
    click.echo(f"customer {customer.customer_id} ({customer.name})")


@customers.command("list")
def customers_list() -> None:
    """List the customers, by id (`ListCustomers`)."""

    async def every_page(client: RatingClient) -> list[contract_pb2.Customer]:
        found: list[contract_pb2.Customer] = []
        token = ""
        while True:
            page = await client.customers(page_size=500, page_token=token)
            found += page.customers
            token = page.next_page_token
            if not token:
                return found

    for customer in api_call(every_page):
        click.echo(f"{customer.customer_id}  {customer.name}")
