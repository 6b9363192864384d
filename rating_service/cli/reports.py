"""`rating reports`: what usage earned, read through the API (`GetMargins`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from rating_service.cli.api_client import api_call, moment
from rating_service.cli.command_line import echo_table

if TYPE_CHECKING:
    from rating_client import RatingClient
    from rating_client.gen.rating.v1 import rating_pb2


@click.group()
def reports() -> None:
    """Reports on a customer's usage (admin or ops keys)."""


@reports.command("margins")
@click.argument("customer_id")
def reports_margins(customer_id: str) -> None:
    """Revenue, free credit drawn, cost and margin per product, this billing period."""

    async def margins(client: RatingClient) -> rating_pb2.GetMarginsResponse:
        return await client.margins(customer_id)

    found = api_call(margins)
    click.echo(
        f"contract {found.contract_id}, {moment(found.period_start)} – {moment(found.period_end)},"
        f" in {found.invoice_currency}"
    )
    rows = [("PRODUCT", "REVENUE", "FREE CREDIT", "COST", "MARGIN", "MARGIN %")]
    for row in (*found.products, found.total):
        rows.append(
            (
                row.product_key or "total",
                row.revenue,
                row.free_credit,
                row.cost,
                row.margin,
                row.margin_percent if row.HasField("margin_percent") else "–",
            )
        )
    echo_table(rows, right_aligned={1, 2, 3, 4, 5})
