"""PreviewInvoice and InvoiceService over real gRPC, PostgreSQL and Temporal; the invoices CLI.

The cycle test runs a contract of two 3-second periods through a real worker: the preview made
during the first period is the invoice issued at its end, line for line. The other test needs
no worker: it drafts and finalizes an invoice with the invoicing steps themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result
from grpc import aio

from rating_client import NotAllowed, NotFoundError, RatingClient, RatingError
from rating_client.errors import decode_rich_status, field_violations
from rating_client.gen.rating.v1 import invoice_pb2, invoice_pb2_grpc, rating_pb2
from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import invoice_id_for
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.workflows.billing import billing_workflow_id
from tests.conftest import TenantKeys, eventually, status_of
from tests.integration.cycles import (
    PLATFORM_FEE,
    api_env,
    billing_stack,
    credit,
    load_fee_catalog,
    open_billing_contract,
    open_invoicing,
)

D = Decimal
PERIOD = 3


def at(message: Any) -> datetime:
    """A Timestamp field as an aware UTC datetime."""
    moment: datetime = message.ToDatetime(tzinfo=UTC)
    return moment


async def cli(env: dict[str, str], *args: str) -> Result:
    """Run the `rating` command in a thread: it runs its own event loop, the server ours."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


async def refused(call: Awaitable[Any]) -> RatingError:
    """The typed error a client call fails with."""
    with pytest.raises(RatingError) as failure:
        await call
    return failure.value


async def test_the_preview_is_the_invoice_issued_when_no_more_usage_arrives(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    acme: TenantKeys,
    globex: TenantKeys,
    tmp_path: Path,
) -> None:
    target = f"127.0.0.1:{server.port}"
    # The worker starts in this event loop and holds it while it checks the workflows (about
    # two seconds), so calls made meanwhile get a deadline to outlast that.
    async with (
        billing_stack(settings, temporal_address, server, acme) as stack,
        RatingClient(target, acme.tokens[Role.RATER], timeout_seconds=10) as rater,
        RatingClient(target, acme.tokens[Role.OPS], timeout_seconds=10) as ops,
        RatingClient(target, globex.tokens[Role.ADMIN], timeout_seconds=10) as other_tenant,
    ):
        admin = stack.client
        contract = await open_billing_contract(
            admin, "cus_preview", period_seconds=PERIOD, periods=2
        )
        await admin.call(admin.contracts.AddCommitment, credit(contract.contract_id, "2.5"))
        now = datetime.now(UTC)
        for n, (event_type, properties) in enumerate(
            [
                ("llm.completion", {"tokens": "1500", "model": "large"}),  # 15
                ("llm.completion", {"tokens": "700", "model": "small"}),  # 0.7
                ("embedding.created", {"tokens": "150"}),  # volume: 150 × 0.05 = 7.5
            ]
        ):
            await admin.rate_and_debit(
                event_id=f"e{n}",
                customer_id=contract.customer_id,
                event_type=event_type,
                properties=properties,
                timestamp=now,
            )
        preview = await rater.preview_invoice(contract.customer_id)
        by_contract = await ops.call(
            ops.rating.PreviewInvoice,
            rating_pb2.PreviewInvoiceRequest(contract_id=contract.contract_id),
        )
        first_end = contract.term_start + timedelta(seconds=PERIOD)
        # Made during the first period, it previews the invoice of that period's end.
        assert at(preview.billing_date) == first_end, "the preview came too late"
        assert by_contract.invoice == preview
        assert (preview.state, preview.number, preview.HasField("issued_at")) == (
            "draft",
            "",
            False,
        )
        # Worked out by hand from the catalog (tests/integration/billing.py and cycles.py):
        # arrears usage of the first period, the credit it drew, next period's fee in advance.
        assert PLATFORM_FEE == "12"
        # (kind, product, quantity, exact amount, amount rounded once)
        assert [
            (
                line.kind,
                line.product_key,
                Decimal(line.quantity) if line.HasField("quantity") else None,
                Decimal(line.exact_amount),
                Decimal(line.amount),
            )
            for line in preview.lines
        ] == [
            # volume, tier 2 reached: 150 × 0.05
            ("usage", "embeddings", D(150), D("7.5"), D("7.50")),
            ("usage", "tokens", D(1500), D(15), D("15.00")),  # large: 1,500 × 0.01
            ("usage", "tokens", D(700), D("0.7"), D("0.70")),  # small: 700 × 0.001
            # the whole 2.50 credit, drawn by the first event
            ("credit", "", None, D("-2.5"), D("-2.50")),
            ("fee", "platform", D(1), D(12), D("12.00")),  # the second period's, in advance
        ]
        # All units at the tier reached (101 and up at 0.05), not 100 × 0.10 + 50 × 0.05 = 12.50.
        assert [
            (Decimal(tier.quantity), Decimal(tier.unit_price), Decimal(tier.amount))
            for tier in preview.lines[0].tiers
        ] == [(D(150), D("0.05"), D("7.5"))]
        # 7.50 + 15.00 + 0.70 − 2.50 + 12.00 = 32.70
        assert Decimal(preview.total) == D("32.70")
        assert {s.kind: Decimal(s.amount) for s in preview.subtotals} == {
            "usage": D("23.20"),  # 7.50 + 15.00 + 0.70
            "credit": D("-2.50"),
            "fee": D("12.00"),
        }
        assert [Decimal(b.balance) for b in preview.balances] == [D(0)]  # 2.50 − 2.50

        # No more usage: the invoice issued at the period end is the preview, line for line.
        async def issued(invoice_id: str) -> bool:
            try:
                return (await ops.invoice(invoice_id)).state == "paid"
            except NotFoundError:  # not drafted yet
                return False

        await eventually(lambda: issued(preview.invoice_id), timeout_seconds=15)
        invoice = await ops.invoice(preview.invoice_id)
        assert invoice.number.startswith("INV-")
        assert at(invoice.issued_at) >= first_end
        # Whole lines: key, kind, quantity, unit price, amount, exact amount, service, tiers.
        assert list(invoice.lines) == list(preview.lines)
        assert (invoice.total, list(invoice.subtotals)) == (preview.total, list(preview.subtotals))
        assert list(invoice.balances) == list(preview.balances)

        final_id = invoice_id_for(contract.contract_id, contract.term_end)
        await eventually(lambda: issued(final_id), timeout_seconds=15)
        # No usage in the second period and no fee after the term: nothing to pay.
        assert Decimal((await ops.invoice(final_id)).total) == 0
        handle = stack.temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )
        assert await handle.result() == "ended"

        # The opening invoice, then one per period end: latest first, in pages.
        listed = await ops.invoices(contract_id=contract.contract_id)
        assert [at(i.billing_date) for i in listed.invoices] == [
            contract.term_start + timedelta(seconds=PERIOD * k) for k in (2, 1, 0)
        ]
        assert listed.next_page_token == ""
        assert [i.number for i in listed.invoices] == ["INV-000003", "INV-000002", "INV-000001"]
        first_page = await ops.invoices(customer_id=contract.customer_id, page_size=2)
        assert first_page.next_page_token
        second_page = await ops.invoices(
            customer_id=contract.customer_id, page_size=2, page_token=first_page.next_page_token
        )
        assert second_page.next_page_token == ""
        assert [*first_page.invoices, *second_page.invoices] == list(listed.invoices)
        assert list((await admin.invoices(customer_id="someone-else")).invoices) == []

        pdf = await ops.invoice_document(invoice.invoice_id, "pdf")
        assert pdf.content.startswith(b"%PDF")
        assert pdf.content_type == "application/pdf"
        html = await admin.invoice_document(invoice.invoice_id, "html")
        assert invoice.number in html.content.decode()
        assert html.content_type == "text/html; charset=utf-8"
        attempts = await ops.payment_attempts(invoice.invoice_id)
        assert [(a.attempt, a.status, a.amount, a.payment_method) for a in attempts] == [
            (1, "succeeded", invoice.total, "pm_ok")
        ]

        # Another tenant cannot tell the invoice exists.
        for call in (
            other_tenant.invoice(invoice.invoice_id),
            other_tenant.invoice_document(invoice.invoice_id, "pdf"),
            other_tenant.payment_attempts(invoice.invoice_id),
            other_tenant.call(
                other_tenant.rating.PreviewInvoice,
                rating_pb2.PreviewInvoiceRequest(contract_id=contract.contract_id),
            ),
        ):
            error = await refused(call)
            assert isinstance(error, NotFoundError), error
        assert list((await other_tenant.invoices()).invoices) == []
        assert isinstance(await refused(rater.invoice(invoice.invoice_id)), NotAllowed)

    # The operator's view of the same invoices, through the API with an ops key.
    ops_env = api_env(server, acme.tokens[Role.OPS])
    listing = await cli(ops_env, "invoices", "list")
    assert listing.exit_code == 0, listing.output
    header, *rows = listing.output.splitlines()
    assert header.split() == ["NUMBER", "INVOICE", "CONTRACT", "BILLING", "DATE", "STATE", "TOTAL"]
    assert [row.split()[:2] for row in rows] == [[i.number, i.invoice_id] for i in listed.invoices]
    assert rows[1].split()[-2:] == ["USD", invoice.total]
    shown = await cli(ops_env, "invoices", "show", invoice.invoice_id)
    assert shown.exit_code == 0, shown.output
    assert f"number:           {invoice.number}" in shown.output
    assert f"total:            USD {invoice.total}" in shown.output
    assert "payment attempts: 1" in shown.output
    assert "#1  succeeded" in shown.output
    for line in invoice.lines:
        assert line.description in shown.output
        for tier in line.tiers:  # indented under their line
            assert f"    {tier.description}" in shown.output
    for fmt, served in (("pdf", pdf), ("html", html)):
        path = tmp_path / f"invoice.{fmt}"
        written = await cli(ops_env, "invoices", fmt, invoice.invoice_id, "-o", str(path))
        assert written.exit_code == 0, written.output
        assert path.read_bytes() == served.content  # the stored document, as the API serves it
    missing = await cli(ops_env, "invoices", "show", "inv_nope")
    assert missing.exit_code == 1
    assert missing.output.splitlines() == [
        "Error: no invoice 'inv_nope'",
        "  status: NOT_FOUND INVOICE_NOT_FOUND",
        "  next: `rating invoices list` lists the invoices of RATING_API_KEY's tenant",
    ]


async def test_invoice_reads_check_roles_input_and_rendering(
    settings: Settings,
    server: RunningServer,
    channel: aio.Channel,
    acme: TenantKeys,
    tmp_path: Path,
) -> None:
    database_url = settings.database_url or ""
    await load_fee_catalog(database_url, acme.tenant_id)
    stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
    ops = acme.metadata(Role.OPS)

    async def status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, set[str]]:
        """Status code, ErrorInfo reason and BadRequest fields of a refused call."""
        with pytest.raises(aio.AioRpcError) as failure:
            await call
        code, reason = status_of(failure.value)
        rich = decode_rich_status(failure.value.trailing_metadata())
        return code, reason, set() if rich is None else set(field_violations(rich))

    rater = acme.metadata(Role.RATER)
    for call in (
        stub.GetInvoice(invoice_pb2.GetInvoiceRequest(invoice_id="x"), metadata=rater),
        stub.ListInvoices(invoice_pb2.ListInvoicesRequest(), metadata=rater),
        stub.GetInvoiceDocument(
            invoice_pb2.GetInvoiceDocumentRequest(invoice_id="x", format="pdf"), metadata=rater
        ),
        stub.ListPaymentAttempts(
            invoice_pb2.ListPaymentAttemptsRequest(invoice_id="x"), metadata=rater
        ),
    ):
        assert await status(call) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED", set())

    document = invoice_pb2.GetInvoiceDocumentRequest
    listing = invoice_pb2.ListInvoicesRequest
    for call, fields in (
        (
            stub.GetInvoiceDocument(document(invoice_id="x", format="docx"), metadata=ops),
            {"format"},
        ),
        (stub.GetInvoiceDocument(document(), metadata=ops), {"invoice_id", "format"}),
        (stub.GetInvoice(invoice_pb2.GetInvoiceRequest(), metadata=ops), {"invoice_id"}),
        (stub.ListInvoices(listing(page_size=501), metadata=ops), {"page_size"}),
        (stub.ListInvoices(listing(page_token="nonsense"), metadata=ops), {"page_token"}),
    ):
        assert await status(call) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", fields)
    code, reason, _ = await status(
        stub.GetInvoice(invoice_pb2.GetInvoiceRequest(invoice_id="inv_nope"), metadata=ops)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "INVOICE_NOT_FOUND")

    async with RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin:
        for preview in (
            rating_pb2.PreviewInvoiceRequest(),
            rating_pb2.PreviewInvoiceRequest(customer_id="a", contract_id="b"),
        ):
            error = await refused(admin.call(admin.rating.PreviewInvoice, preview))
            assert set(error.fields) == {"customer_id", "contract_id"}
        nobody = await refused(admin.preview_invoice("nobody"))
        assert (nobody.code, nobody.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_CONTRACT_IN_FORCE",
        )
        contract = await open_billing_contract(admin, "cus_docs", period_seconds=60, periods=1)
        # The worker's first steps, by hand: the opening invoice (the fee in advance), a draft.
        async with open_invoicing(settings) as invoicing:
            draft = await invoicing.draft(acme.tenant_id, contract.contract_id, contract.term_start)
        assert draft is not None
        not_rendered = await refused(admin.invoice_document(draft.invoice_id, "pdf"))
        assert (not_rendered.code, not_rendered.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVOICE_NOT_RENDERED",
        )
        listed = await admin.invoices()
        assert [(i.invoice_id, i.state, i.number) for i in listed.invoices] == [
            (draft.invoice_id, "draft", "")
        ]

        # The CLI, through the API, has no document of a draft either, and says where to look
        # ...
        path = tmp_path / "draft.html"
        env = api_env(server, acme.tokens[Role.ADMIN])
        looked = await cli(env, "invoices", "html", draft.invoice_id, "-o", str(path))
        assert looked.exit_code == 1, looked.output
        assert "  status: FAILED_PRECONDITION INVOICE_NOT_RENDERED" in looked.output
        assert "`rating invoices show ID` shows its lines" in looked.output
        assert not path.exists()
        # ... and gets an issued invoice not rendered yet as the workflow would render it.
        async with open_invoicing(settings) as invoicing:
            issued = await invoicing.finalize(acme.tenant_id, draft.invoice_id)
        path = tmp_path / "issued.pdf"
        rendered = await cli(env, "invoices", "pdf", issued.invoice_id, "-o", str(path))
        assert rendered.exit_code == 0, rendered.output
        assert rendered.output == f"wrote {path} ({path.stat().st_size} bytes)\n"
        stored = await admin.invoice_document(issued.invoice_id, "pdf")
        assert stored.content == path.read_bytes()
        assert stored.content.startswith(b"%PDF")
        assert await admin.payment_attempts(issued.invoice_id) == []
