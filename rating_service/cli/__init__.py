"""The `rating` command: run the server, the worker or the local stack; manage data and keys."""

from __future__ import annotations

import click

from rating_service.cli import (
    catalog,
    contracts,
    customers,
    db,
    invoices,
    ops,
    stack,
    tenants,
    webhooks,
)


@click.group()
def main() -> None:
    """Rating and billing service for AI usage."""


main.add_command(stack.serve)
main.add_command(stack.worker)
main.add_command(stack.health)
main.add_command(stack.dev_command)
main.add_command(stack.console_command)
main.add_command(db.db)
main.add_command(tenants.tenants)
main.add_command(tenants.keys)
main.add_command(ops.ops)
main.add_command(catalog.catalog)
main.add_command(customers.customers)
main.add_command(contracts.contracts)
main.add_command(contracts.credits)
main.add_command(invoices.invoices)
main.add_command(webhooks.webhooks)
