"""`rating invoices`: invoices, their documents, voids and payments."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import T, echo_table, run_async, tenant_option
from rating_service.cli.tenant_services import actions_of, invoicing_of
from rating_service.core.money import format_decimal

if TYPE_CHECKING:
    from rating_service.core.auth import Caller
    from rating_service.core.billing.invoice import Invoice
    from rating_service.ops.actions import OperatorActions, Paid, Voided
    from rating_service.services.invoice import Invoicing
    from rating_service.store.invoice import PaymentAttempt


@click.group()
def invoices() -> None:
    """Invoices, their documents and payments (operator commands, straight to the database)."""


@invoices.command("list")
@tenant_option
@click.option("--contract", "contract_id", help="Only this contract's (default: all).")
@click.option("--customer", "customer_id", help="Only this customer's (default: all).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most to show."
)
def invoices_list(
    tenant_name: str, contract_id: str | None, customer_id: str | None, limit: int
) -> None:
    """List invoices, latest billing date first."""
    found: list[Invoice] = _invoicing_call(
        tenant_name,
        lambda invoicing, tenant_id: invoicing.invoices.invoices(
            tenant_id, contract_id, limit, customer_id=customer_id
        ),
    )
    if not found:
        click.echo("no invoices yet: the billing worker issues them at each billing date")
        return
    rows = [("NUMBER", "INVOICE", "CONTRACT", "BILLING DATE", "STATE", "TOTAL")]
    rows += [
        (
            invoice.number or "(draft)",
            invoice.invoice_id,
            invoice.contract_id,
            invoice.billing_date.isoformat(),
            str(invoice.state),
            _money(invoice.total, invoice),
        )
        for invoice in found
    ]
    echo_table(rows, right_aligned={5})


@invoices.command("show")
@click.argument("invoice_id")
@tenant_option
def invoices_show(invoice_id: str, tenant_name: str) -> None:
    """Show an invoice: its lines with their tiers, subtotals, total and payment attempts."""

    async def show(invoicing: Invoicing, tenant_id: str) -> tuple[Invoice, list[PaymentAttempt]]:
        invoice = await invoicing.invoices.invoice(tenant_id, invoice_id)
        return invoice, await invoicing.invoices.payment_attempts(tenant_id, invoice_id)

    shown: tuple[Invoice, list[PaymentAttempt]] = _invoicing_call(tenant_name, show)
    invoice, attempts = shown
    issued = "not yet (a draft)" if invoice.issued_at is None else invoice.issued_at.isoformat()
    for label, value in [
        ("invoice", invoice.invoice_id),
        ("number", invoice.number or "none yet (a draft)"),
        ("state", invoice.state),
        ("contract", invoice.contract_id),
        ("customer", invoice.customer_id),
        ("billing date", invoice.billing_date.isoformat()),
        ("period", _span(invoice.period_start, invoice.period_end)),
        ("issued", issued),
        ("revision", invoice.revision),
    ]:
        click.echo(f"{label + ':':<18}{value}")
    click.echo(f"lines: {len(invoice.lines)}")
    rows = [("  KIND", "DESCRIPTION", "QUANTITY", "UNIT PRICE", "AMOUNT")]
    for line in invoice.lines:
        service = (line.service_start, line.service_end)
        when = "" if service == (invoice.period_start, invoice.period_end) else _span(*service)
        rows.append(
            (
                f"  {line.kind}",
                f"{line.description} ({when})" if when else line.description,
                _optional_decimal(line.quantity),
                _optional_decimal(line.unit_price),
                _money(line.amount, invoice),
            )
        )
        # Tier amounts are exact: they explain the line, which alone is rounded.
        rows += [
            (
                "",
                f"    {tier.description}",
                format_decimal(tier.quantity),
                format_decimal(tier.unit_price),
                format_decimal(tier.amount),
            )
            for tier in line.tiers
        ]
    echo_table(rows, right_aligned={2, 3, 4})
    for kind in dict.fromkeys(line.kind for line in invoice.lines):
        click.echo(f"{'subtotal ' + kind + ':':<18}{_money(invoice.subtotal(kind), invoice)}")
    click.echo(f"{'total:':<18}{_money(invoice.total, invoice)}")
    if invoice.exact_total != invoice.total:
        click.echo(f"{'exact total:':<18}{format_decimal(invoice.exact_total)} (before rounding)")
    if invoice.credit_note_ids:
        notes = ", ".join(invoice.credit_note_ids)
        click.echo(f"{'credited:':<18}{_money(invoice.credited, invoice)} ({notes})")
        click.echo(f"{'amount due:':<18}{_money(invoice.amount_due, invoice)}")
    click.echo(f"payment attempts: {len(attempts) or 'none'}")
    for attempt in attempts:
        failure = (
            f"  declined {attempt.failure_code} ({attempt.failure_message or 'no message'})"
            if attempt.failure_code
            else ""
        )
        reference = f"  ref {attempt.gateway_reference}" if attempt.gateway_reference else ""
        click.echo(
            f"  #{attempt.attempt}  {attempt.status}  {_money(attempt.amount, invoice)}"
            f"  {attempt.payment_method}  {attempt.created_at.isoformat()}{reference}{failure}"
        )


@invoices.command("pdf")
@click.argument("invoice_id")
@tenant_option
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File."
)
def invoices_pdf(invoice_id: str, tenant_name: str, output: Path) -> None:
    """Write an invoice's PDF, showing its state now (paid, void, …), to a file."""
    _write_document(tenant_name, invoice_id, "pdf", output)


@invoices.command("html")
@click.argument("invoice_id")
@tenant_option
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File."
)
def invoices_html(invoice_id: str, tenant_name: str, output: Path) -> None:
    """Write an invoice's HTML, showing its state now (paid, void, …), to a file."""
    _write_document(tenant_name, invoice_id, "html", output)


def _write_document(tenant_name: str, invoice_id: str, kind: str, output: Path) -> None:
    """Write an invoice's document as it is now; a draft's is rendered for a look, not kept."""
    from rating_service.core.billing.document import render_html, render_pdf
    from rating_service.core.billing.invoice import InvoiceState

    async def fetch(invoicing: Invoicing, tenant_id: str) -> tuple[str | bytes, str]:
        invoice = await invoicing.invoices.invoice(tenant_id, invoice_id)
        if invoice.state is InvoiceState.DRAFT:
            # A draft may still change: render it for a look, keep nothing.
            parties = await invoicing.parties(invoice)
            render = render_pdf if kind == "pdf" else render_html
            return render(invoice, parties), " (a draft, rendered now and not kept)"
        kept = await invoicing.invoices.document(tenant_id, invoice_id, kind) is not None
        # Not kept yet, or cleared by a change of state: rendered now as the API would, and kept.
        body = await invoicing.document(tenant_id, invoice_id, kind)
        return body, "" if kept else " (rendered now)"

    fetched: tuple[str | bytes, str] = _invoicing_call(tenant_name, fetch)
    body, note = fetched
    content = body.encode() if isinstance(body, str) else body
    try:
        output.write_bytes(content)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write {output}: {exc.strerror}; choose another -o path"
        ) from exc
    click.echo(f"wrote {output} ({len(content)} bytes){note}")


@invoices.command("void")
@click.argument("invoice_id")
@tenant_option
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option(
    "--regenerate", is_flag=True, help="Issue a corrected revision of the invoice at once."
)
def invoices_void(invoice_id: str, tenant_name: str, reason: str, regenerate: bool) -> None:
    """Void an invoice (its number is kept, its ledger postings reversed); optionally reissue it.

    The revision is composed again from the period's counters and the contract as they are now,
    by a new invoice workflow (`invoice/<tenant>/<contract>/<billing date>/r<n>`).
    """
    actor = f"cli:{os.environ.get('USER', 'operator')}"
    unchanged = "nothing was voided: its revision is issued by a workflow"

    async def void(actions: OperatorActions, caller: Caller) -> Voided:
        return await actions.void_invoice(
            caller, invoice_id, reason, regenerate=regenerate, actor=actor
        )

    voided: Voided = _action(tenant_name, unchanged if regenerate else "", void)
    click.echo(f"voided {voided.invoice.invoice_id} ({voided.invoice.number or 'a draft'})")
    if voided.revision_workflow_id is not None:
        click.echo(
            f"revision {voided.invoice.revision + 1} is being issued by workflow"
            f" {voided.revision_workflow_id}"
        )


@invoices.command("pay")
@click.argument("invoice_id")
@tenant_option
@click.option("--reference", required=True, help="The payment's reference, e.g. the wire's.")
def invoices_pay(invoice_id: str, tenant_name: str, reference: str) -> None:
    """Record a payment made outside the gateway; a contract suspended for the invoice resumes."""
    actor = f"cli:{os.environ.get('USER', 'operator')}"
    unchanged = (
        "nothing was recorded: the invoice's dunning must hear of a payment through Temporal"
    )

    async def pay(actions: OperatorActions, caller: Caller) -> Paid:
        return await actions.record_payment(caller, invoice_id, reference, actor=actor)

    paid: Paid = _action(tenant_name, unchanged, pay)
    invoice = paid.invoice
    total = _money(invoice.total, invoice)
    click.echo(f"{invoice.invoice_id} ({invoice.number}) is {invoice.state}: {total}")
    click.echo(f"contract {invoice.contract_id} is {paid.contract.status}")


def _action(
    tenant_name: str, unchanged: str, call: Callable[[OperatorActions, Caller], Awaitable[T]]
) -> T:
    """Make one operator action for the tenant; an unknown invoice says how to find it."""

    async def run() -> T:
        async with actions_of(tenant_name, unchanged) as (actions, caller):
            return await _listed_on_miss(tenant_name, call(actions, caller))

    return run_async(run)


async def _listed_on_miss(tenant_name: str, call: Awaitable[T]) -> T:
    """The call's answer; an unknown invoice says how to list the tenant's invoices."""
    from rating_service.core.errors import NotFound

    try:
        return await call
    except NotFound as missing:
        if missing.reason != "INVOICE_NOT_FOUND":
            raise
        raise click.ClickException(
            f"{missing.message} for tenant {tenant_name!r}; `rating invoices list"
            f" --tenant {tenant_name}` lists its invoices"
        ) from missing


def _invoicing_call(tenant_name: str, call: Callable[[Invoicing, str], Awaitable[T]]) -> T:
    """Make one invoicing call for the tenant; an unknown invoice says how to find the right one."""

    async def run() -> T:
        async with invoicing_of(tenant_name) as (invoicing, tenant_id):
            return await _listed_on_miss(tenant_name, call(invoicing, tenant_id))

    return run_async(run)


def _money(amount: Decimal, invoice: Invoice) -> str:
    return f"{invoice.currency.code} {format_decimal(amount)}"


def _optional_decimal(value: Decimal | None) -> str:
    return "" if value is None else format_decimal(value)


def _span(start: datetime, end: datetime) -> str:
    return f"{start.isoformat()} – {end.isoformat()}"
