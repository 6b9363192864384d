"""Following the customers through the API: their pools' balances, their invoices until paid."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal

from rating_client import RatingClient, RatingError
from rating_client.gen.rating.v1 import invoice_pb2
from rating_service.cli.demo.state import DemoAccount, DemoState, InvoiceSeen, Note, PoolLine
from rating_service.cli.demo.view import money, pool_label

ISSUE_WEBHOOK_WAIT_SECONDS = 10.0
"""How long an invoice seen paid waits for its `invoice.issued` webhook before it is shown paid."""


async def watch_balances(client: RatingClient, state: DemoState) -> None:
    """Read each customer's pools through GetBalances, about once a refresh."""
    while True:
        for account in state.accounts:
            with contextlib.suppress(RatingError):  # shown stale for a moment, not fatal
                balances = await client.balances(account.customer_id)
                account.pools = tuple(
                    PoolLine(
                        pool_label(pool.kind, Decimal(pool.cost_basis or "0")),
                        Decimal(pool.remaining),
                        Decimal(pool.original),
                    )
                    for pool in balances.pools
                )
                account.available = Decimal(balances.available or "0")
                account.overage = Decimal(balances.overage or "0")
        await asyncio.sleep(state.plan.refresh_seconds)


async def watch_invoices(client: RatingClient, state: DemoState, note: Note) -> None:
    """Follow each contract's invoices through ListInvoices; announce each one paid."""
    first_seen: dict[str, float] = {}
    while True:
        for account in state.accounts:
            with contextlib.suppress(RatingError):
                listed = await client.invoices(contract_id=account.contract_id)
                for invoice in listed.invoices:
                    if invoice.state != "draft":
                        _saw_invoice(account, invoice, first_seen, note)
        await asyncio.sleep(max(state.plan.refresh_seconds, 1.0))


def _saw_invoice(
    account: DemoAccount,
    invoice: invoice_pb2.Invoice,
    first_seen_at: dict[str, float],
    note: Note,
) -> None:
    """Keep the invoice as listed; announce it paid once (after its issue, as it happened)."""
    seen = InvoiceSeen(invoice.invoice_id, invoice.number, invoice.state, Decimal(invoice.total))
    account.invoices[seen.invoice_id] = seen
    first_seen = first_seen_at.setdefault(seen.invoice_id, time.monotonic())
    # The issue arrives by webhook, often after the poll has seen the invoice paid.
    issue_shown = seen.invoice_id in account.issued_notified or (
        time.monotonic() - first_seen >= ISSUE_WEBHOOK_WAIT_SECONDS
    )
    if seen.state == "paid" and issue_shown and seen.invoice_id not in account.paid_shown:
        account.paid_shown.add(seen.invoice_id)
        note(
            "payment",
            f"{account.customer.name}: {seen.number} paid, {money(seen.total)} "
            f"charged to {account.payment_method}",
        )
