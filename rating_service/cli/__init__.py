"""The `rating` command: run the server, the worker or the local stack; manage data and keys.

Operator commands are clients of the API (`api_client`); bootstrap and recovery commands go
straight to the database (`tenant_services`).
"""

from __future__ import annotations

import click

from rating_service.cli import (
    catalog,
    contracts,
    customers,
    db,
    export,
    invoices,
    ops,
    reports,
    stack,
    tenants,
    webhooks,
)


@click.group()
def main() -> None:
    """Rating and billing service for AI usage.

    \b
    Operator commands act through the API of a running server, as the tenant and role of
    RATING_API_KEY (at RATING_API_ADDRESS): customers, contracts, credits, invoices,
    webhooks (except new-key, reencrypt), ops invoices, ops replays, reports.
    \b
    Bootstrap and recovery commands go straight to the database (RATING_DATABASE_URL,
    and Temporal for ops histories), with --tenant where they act on one tenant: db,
    tenants, keys, catalog, webhooks new-key / reencrypt, ops reconcile, ops histories.
    """


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
main.add_command(export.export)
main.add_command(reports.reports)
