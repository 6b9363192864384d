"""An invoice's HTML and PDF show its state now: rendered when issued, again once paid or voided."""

from __future__ import annotations

import io

from pypdf import PdfReader

from rating_client import RatingClient
from rating_service.core.billing.document import render_pdf
from rating_service.core.billing.invoice import Invoice, InvoiceState
from rating_service.runtime.server import RunningServer
from rating_service.services.invoice import Invoicing
from rating_service.settings import Settings
from tests.conftest import TenantKeys
from tests.integration.cycles import (
    admin_client,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
)


def _pdf_text(document: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(document)).pages)


async def _issued(client: RatingClient, invoicing: Invoicing, tenant_id: str, name: str) -> str:
    """A contract's opening invoice (its fee in advance), finalized and rendered: its id."""
    contract = await open_billing_contract(client, name, period_seconds=600, periods=1)
    draft = await invoicing.draft(tenant_id, contract.contract_id, contract.term_start)
    assert draft is not None
    await invoicing.finalize(tenant_id, draft.invoice_id)
    await invoicing.render(tenant_id, draft.invoice_id)  # the workflow's render step
    return draft.invoice_id


async def _documents(client: RatingClient, invoice_id: str) -> tuple[str, str]:
    """The invoice's HTML and its PDF's text, as a customer gets them through the API."""
    html = await client.invoice_document(invoice_id, "html")
    pdf = await client.invoice_document(invoice_id, "pdf")
    return html.content.decode(), _pdf_text(pdf.content)


async def test_a_paid_or_void_invoice_is_rendered_again_and_says_so(
    settings: Settings, server: RunningServer, acme: TenantKeys
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    tenant = acme.tenant_id
    async with admin_client(server, acme) as client, open_invoicing(settings) as invoicing:
        paid_id = await _issued(client, invoicing, tenant, "cus_paid")
        void_id = await _issued(client, invoicing, tenant, "cus_void")
        owed_id = await _issued(client, invoicing, tenant, "cus_owed")
        for invoice_id in (paid_id, void_id, owed_id):
            html, text = await _documents(client, invoice_id)
            assert "<tr><th>Status</th><td>Finalized</td></tr>" in html
            assert "Status Finalized" in text
            assert "Amount due USD 12.00" in text  # the platform fee

        await invoicing.record_payment(tenant, paid_id, "WIRE-1", "test")
        await invoicing.void(tenant, void_id, "test", "wrong customer")
        await invoicing.give_up_collecting(tenant, owed_id, "test")

        html, text = await _documents(client, paid_id)
        assert '<div class="mark mark-paid">PAID</div>' in html
        assert "<tr><th>Status</th><td>Paid</td></tr>" in html
        assert '<th>Amount paid</th><td class="num">USD 12.00</td>' in html
        assert '<th>Amount due</th><td class="num">USD 0.00</td>' in html
        assert "PAID" in text.splitlines()[0]  # the mark beside the title
        assert "Status Paid" in text
        assert "Amount paid USD 12.00" in text
        assert "Amount due USD 0.00" in text

        html, text = await _documents(client, void_id)
        assert '<div class="mark mark-void">VOID</div>' in html
        assert "<tr><th>Status</th><td>Void</td></tr>" in html
        assert '<th>Amount due</th><td class="num">USD 0.00</td>' in html
        assert "VOID" in text.splitlines()[0]
        assert "Status Void" in text
        assert "Amount due USD 0.00" in text

        html, text = await _documents(client, owed_id)
        assert "<tr><th>Status</th><td>Uncollectible</td></tr>" in html
        assert "Status Uncollectible" in text
        assert "Amount due USD 12.00" in text  # still owed

        # Rendered again and kept: the same bytes as rendering the invoice as it is now.
        paid: Invoice = await invoicing.invoices.invoice(tenant, paid_id)
        assert paid.state is InvoiceState.PAID
        kept = await invoicing.invoices.document(tenant, paid_id, "pdf")
        assert kept == render_pdf(paid, await invoicing.parties(paid))
        assert (await client.invoice_document(paid_id, "pdf")).content == kept
