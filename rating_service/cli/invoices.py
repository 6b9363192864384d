"""`rating invoices`: invoices, their documents, voids and payments, through the API.

Every command acts with RATING_API_KEY (an admin or ops key) on its tenant's invoices.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rating_service.cli.api_client import api_call, moment
from rating_service.cli.command_line import echo_table

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from rating_client import RatingClient
    from rating_client.gen.rating.v1 import invoice_pb2


@click.group()
def invoices() -> None:
    """Invoices, their documents and payments (through the API: an admin or ops key)."""


@invoices.command("list")
@click.option("--contract", "contract_id", help="Only this contract's (default: all).")
@click.option("--customer", "customer_id", help="Only this customer's (default: all).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most to show."
)
def invoices_list(contract_id: str | None, customer_id: str | None, limit: int) -> None:
    """List invoices, latest billing date first (`ListInvoices`)."""

    async def pages(client: RatingClient) -> list[invoice_pb2.Invoice]:
        found: list[invoice_pb2.Invoice] = []
        token = ""
        while len(found) < limit:
            page = await client.invoices(
                contract_id=contract_id or "",
                customer_id=customer_id or "",
                page_size=min(limit - len(found), 500),
                page_token=token,
            )
            found += page.invoices
            token = page.next_page_token
            if not token:
                break
        return found

    found = api_call(pages)
    if not found:
        click.echo("no invoices yet: the billing worker issues them at each billing date")
        return
    rows = [("NUMBER", "INVOICE", "CONTRACT", "BILLING DATE", "STATE", "TOTAL")]
    rows += [
        (
            invoice.number or "(draft)",
            invoice.invoice_id,
            invoice.contract_id,
            moment(invoice.billing_date),
            invoice.state,
            _money(invoice.total, invoice),
        )
        for invoice in found
    ]
    echo_table(rows, right_aligned={5})


@invoices.command("show")
@click.argument("invoice_id")
def invoices_show(invoice_id: str) -> None:
    """Show an invoice: its lines with their tiers, subtotals, total and payment attempts
    (`GetInvoice`, `ListPaymentAttempts`)."""

    async def show(
        client: RatingClient,
    ) -> tuple[invoice_pb2.Invoice, list[invoice_pb2.PaymentAttempt]]:
        invoice = await client.invoice(invoice_id)
        return invoice, await client.payment_attempts(invoice_id)

    invoice, attempts = api_call(show, _INVOICE_NEXT_STEPS)
    issued = moment(invoice.issued_at) if invoice.HasField("issued_at") else "not yet (a draft)"
    for label, value in [
        ("invoice", invoice.invoice_id),
        ("number", invoice.number or "none yet (a draft)"),
        ("state", invoice.state),
        ("contract", invoice.contract_id),
        ("customer", invoice.customer_id),
        ("billing date", moment(invoice.billing_date)),
        ("period", _span(invoice.period_start, invoice.period_end)),
        ("issued", issued),
        ("revision", invoice.revision),
    ]:
        click.echo(f"{label + ':':<18}{value}")
    click.echo(f"lines: {len(invoice.lines)}")
    rows = [("  KIND", "DESCRIPTION", "QUANTITY", "UNIT PRICE", "AMOUNT")]
    period = (invoice.period_start, invoice.period_end)
    for line in invoice.lines:
        service = (line.service_start, line.service_end)
        when = "" if service == period else _span(*service)
        rows.append(
            (
                f"  {line.kind}",
                f"{line.description} ({when})" if when else line.description,
                line.quantity if line.HasField("quantity") else "",
                line.unit_price if line.HasField("unit_price") else "",
                _money(line.amount, invoice),
            )
        )
        # Tier amounts are exact: they explain the line, which alone is rounded.
        rows += [
            ("", f"    {tier.description}", tier.quantity, tier.unit_price, tier.amount)
            for tier in line.tiers
        ]
    echo_table(rows, right_aligned={2, 3, 4})
    for subtotal in invoice.subtotals:
        click.echo(f"{'subtotal ' + subtotal.kind + ':':<18}{_money(subtotal.amount, invoice)}")
    click.echo(f"{'total:':<18}{_money(invoice.total, invoice)}")
    if Decimal(invoice.exact_total) != Decimal(invoice.total):
        click.echo(f"{'exact total:':<18}{invoice.exact_total} (before rounding)")
    if invoice.credit_note_ids:
        notes = ", ".join(invoice.credit_note_ids)
        click.echo(f"{'credited:':<18}{_money(invoice.amount_credited, invoice)} ({notes})")
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
            f"  {attempt.payment_method}  {moment(attempt.created_at)}{reference}{failure}"
        )


@invoices.command("pdf")
@click.argument("invoice_id")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File."
)
def invoices_pdf(invoice_id: str, output: Path) -> None:
    """Write an issued invoice's PDF, showing its state now (paid, void, …), to a file
    (`GetInvoiceDocument`)."""
    _write_document(invoice_id, "pdf", output)


@invoices.command("html")
@click.argument("invoice_id")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File."
)
def invoices_html(invoice_id: str, output: Path) -> None:
    """Write an issued invoice's HTML, showing its state now (paid, void, …), to a file
    (`GetInvoiceDocument`)."""
    _write_document(invoice_id, "html", output)


def _write_document(invoice_id: str, kind: str, output: Path) -> None:
    """Write an invoice's document as the API serves it (rendered and kept on first ask)."""
    document: invoice_pb2.GetInvoiceDocumentResponse = api_call(
        lambda client: client.invoice_document(invoice_id, kind), _INVOICE_NEXT_STEPS
    )
    try:
        output.write_bytes(document.content)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write {output}: {exc.strerror}; choose another -o path"
        ) from exc
    click.echo(f"wrote {output} ({len(document.content)} bytes)")


@invoices.command("void")
@click.argument("invoice_id")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option(
    "--regenerate", is_flag=True, help="Issue a corrected revision of the invoice at once."
)
def invoices_void(invoice_id: str, reason: str, regenerate: bool) -> None:
    """Void an invoice (its number is kept, its ledger postings reversed); optionally reissue it.

    Through the API (`VoidInvoice`, an admin or ops key). The revision is composed again from
    the period's counters and the contract as they are now, by a new invoice workflow
    (`invoice/<tenant>/<contract>/<billing date>/r<n>`).
    """
    voided: invoice_pb2.VoidInvoiceResponse = api_call(
        lambda client: client.void_invoice(invoice_id, reason=reason, regenerate=regenerate),
        _INVOICE_NEXT_STEPS,
    )
    invoice = voided.invoice
    click.echo(f"voided {invoice.invoice_id} ({invoice.number or 'a draft'})")
    if voided.revision_workflow_id:
        click.echo(
            f"revision {invoice.revision + 1} is being issued by workflow"
            f" {voided.revision_workflow_id}"
        )


@invoices.command("pay")
@click.argument("invoice_id")
@click.option("--reference", required=True, help="The payment's reference, e.g. the wire's.")
def invoices_pay(invoice_id: str, reference: str) -> None:
    """Record a payment made outside the gateway; a contract suspended for the invoice resumes.

    Through the API (`RecordPayment`, an admin or ops key).
    """
    paid: invoice_pb2.RecordPaymentResponse = api_call(
        lambda client: client.record_payment(invoice_id, reference=reference),
        _INVOICE_NEXT_STEPS,
    )
    invoice = paid.invoice
    click.echo(
        f"{invoice.invoice_id} ({invoice.number}) is {invoice.state}:"
        f" {invoice.currency} {invoice.total}"
    )
    click.echo(f"contract {invoice.contract_id} is {paid.contract_status}")


_INVOICE_NEXT_STEPS = {
    "INVOICE_NOT_FOUND": ("`rating invoices list` lists the invoices of RATING_API_KEY's tenant"),
    "INVOICE_NOT_RENDERED": (
        "a draft has no document until the billing worker issues it; `rating invoices show ID`"
        " shows its lines as they stand"
    ),
    "TEMPORAL_UNAVAILABLE": (
        "nothing was changed: the server must reach Temporal for this (its RATING_TEMPORAL_ADDRESS)"
    ),
}


def _money(amount: str, invoice: invoice_pb2.Invoice) -> str:
    return f"{invoice.currency} {amount}"


def _span(start: Timestamp, end: Timestamp) -> str:
    return f"{moment(start)} – {moment(end)}"
