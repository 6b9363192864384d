"""Credit notes over the API, against real PostgreSQL: refunds of a paid invoice (through the
gateway and into a pool), a lowered amount due on an unpaid one, the limits, gapless numbers,
idempotent retries, and refusals (role, tenant, bad input) that change nothing.

No worker runs: each invoice is drafted, finalized and collected with the invoicing steps the
invoice workflow runs, so its lines are known to the cent.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from grpc import aio

from rating_client import RatingClient
from rating_client.gen.rating.v1 import invoice_pb2, invoice_pb2_grpc
from rating_service.core.auth import Caller, Role
from rating_service.core.billing.invoice import Invoice
from rating_service.runtime.server import RunningServer, start_server
from rating_service.services.catalog import Catalogs
from rating_service.services.invoice import Collection, Invoicing
from rating_service.settings import Settings
from rating_service.store.catalog import CatalogStore
from rating_service.store.database import create_engine
from rating_service.store.ledger import reconcile
from tests.conftest import TenantKeys, refusal, status_of
from tests.integration.billing import CATALOG
from tests.integration.cycles import database, open_billing_contract, open_invoicing

D = Decimal
CALL_PRICE = "2.45"
"""What one `api.call` costs: three calls make an invoice of 7.35."""


def priced_catalog() -> dict[str, Any]:
    catalog: dict[str, Any] = copy.deepcopy(CATALOG)
    catalog["rate_cards"][0]["prices"]["calls"] = {"model": "per_unit", "unit_price": CALL_PRICE}
    return catalog


async def load_priced_catalog(database_url: str, tenant_id: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        caller = Caller(tenant_id, "test", Role.ADMIN)
        await Catalogs(CatalogStore(engine)).apply(caller, priced_catalog(), dry_run=False)
    finally:
        await engine.dispose()


async def issued_invoice(
    client: RatingClient,
    invoicing: Invoicing,
    tenant_id: str,
    customer_id: str,
    *,
    payment_method: str,
) -> Invoice:
    """Three calls in a one-minute period, invoiced at its end: 3 × 2.45 = 7.35."""
    contract = await open_billing_contract(
        client, customer_id, period_seconds=60, periods=1, payment_method=payment_method
    )
    for n in range(3):
        await client.rate_and_debit(
            event_id=f"{customer_id}-call-{n}",
            customer_id=customer_id,
            event_type="api.call",
            properties={},
            timestamp=datetime.now(UTC),
        )
    await invoicing.close_period(tenant_id, contract.contract_id, contract.term_end)
    draft = await invoicing.draft(tenant_id, contract.contract_id, contract.term_end)
    assert draft is not None
    return await invoicing.finalize(tenant_id, draft.invoice_id)


@asynccontextmanager
async def books(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    async with database(settings) as conn:
        yield conn


async def balance(conn: asyncpg.Connection, tenant_id: str, account_id: str) -> Decimal:
    """Debits less credits posted on an account."""
    row = await conn.fetchrow(
        "SELECT debits_posted - credits_posted AS net FROM accounts"
        " WHERE tenant_id = $1 AND account_id = $2",
        tenant_id,
        account_id,
    )
    assert row is not None, account_id
    net: Decimal = row["net"]
    return net


async def moves(conn: asyncpg.Connection, tenant_id: str, reference: str) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT code, debit_account_id, credit_account_id, amount FROM transfers"
        " WHERE tenant_id = $1 AND reference = $2 ORDER BY seq",
        tenant_id,
        reference,
    )
    return [tuple(row.values()) for row in rows]


def credit(request_id: str, invoice_id: str, *lines: tuple[str, str, str], **more: Any) -> Any:
    """An IssueCreditNote request; each line is (line id, amount, quantity)."""
    return invoice_pb2.IssueCreditNoteRequest(
        request_id=request_id,
        invoice_id=invoice_id,
        reason=more.pop("reason", "product_unsatisfactory"),
        lines=[
            invoice_pb2.CreditNoteLineRequest(line_id=line_id, amount=amount, quantity=quantity)
            for line_id, amount, quantity in lines
        ],
        **more,
    )


async def test_a_paid_invoice_is_refunded_through_the_gateway_and_into_a_pool(
    settings: Settings,
    server: RunningServer,
    channel: aio.Channel,
    acme: TenantKeys,
    globex: TenantKeys,
) -> None:
    tenant_id = acme.tenant_id
    await load_priced_catalog(settings.database_url or "", tenant_id)
    stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
    ops = acme.metadata(Role.OPS)
    async with (
        RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin,
        open_invoicing(settings) as invoicing,
    ):
        invoice = await issued_invoice(
            admin, invoicing, tenant_id, "cus_refund", payment_method="pm_ok"
        )
        assert (await invoicing.collect(tenant_id, invoice.invoice_id, 1)).outcome is (
            Collection.PAID
        )
    contract_id = invoice.contract_id
    (usage,) = invoice.lines
    # 3 × 2.45
    assert (usage.quantity, usage.unit_price, usage.amount, invoice.total) == (
        D(3),
        D(CALL_PRICE),
        D("7.35"),
        D("7.35"),
    )

    # Refused before anything is written: the wrong role, another tenant, bad input, too much.
    first = credit("req-1", invoice.invoice_id, (usage.key, "", "2"), refund_to="gateway")
    assert (await refusal(stub.IssueCreditNote(first, metadata=acme.metadata(Role.RATER))))[
        0
    ] == "PERMISSION_DENIED"
    assert (await refusal(stub.IssueCreditNote(first, metadata=globex.metadata(Role.OPS))))[:2] == (
        "NOT_FOUND",
        "INVOICE_NOT_FOUND",
    )
    for bad, fields in (
        (credit("", "", reason="because"), {"request_id", "invoice_id", "reason"}),
        (
            credit("req-x", invoice.invoice_id, (usage.key, "1", "1"), refund_to="cheque"),
            {"lines[0]", "refund_to"},
        ),
        (
            credit("req-x", invoice.invoice_id, ("", "-1", ""), reason="other"),
            {"lines[0].line_id", "lines[0].amount", "memo"},
        ),
        (credit("req-x", invoice.invoice_id, (usage.key, "", "1.5e99999")), {"lines[0].quantity"}),
    ):
        code, _, named = await refusal(stub.IssueCreditNote(bad, metadata=ops))
        assert (code, named) == ("INVALID_ARGUMENT", fields)
    code, reason, _ = await refusal(
        stub.IssueCreditNote(
            credit("req-x", invoice.invoice_id, (usage.key, "1", "")), metadata=ops
        )
    )
    assert (code, reason) == ("FAILED_PRECONDITION", "REFUND_DESTINATION_REQUIRED")
    code, reason, _ = await refusal(
        stub.IssueCreditNote(
            credit("req-x", invoice.invoice_id, (usage.key, "", "4"), refund_to="gateway"),
            metadata=ops,
        )
    )
    assert (code, reason) == ("FAILED_PRECONDITION", "CREDIT_EXCEEDS_INVOICE")  # 4 of 3 units
    assert (
        list(
            (
                await stub.ListCreditNotes(invoice_pb2.ListCreditNotesRequest(), metadata=ops)
            ).credit_notes
        )
        == []
    )

    # 2 of the 3 calls at 2.45: 4.90 back to the card.
    issued = await stub.IssueCreditNote(first, metadata=ops)
    note = issued.credit_note
    assert (note.number, note.total, note.refund_to, issued.replay) == (
        "CN-000001",
        "4.90",
        "gateway",
        False,
    )
    assert [(line.line_id, line.quantity, line.unit_price, line.amount) for line in note.lines] == [
        (usage.key, "2", CALL_PRICE, "4.90")
    ]
    assert (note.refund.status, note.refund.amount, note.refund.destination) == (
        "succeeded",
        "4.90",
        "gateway",
    )
    assert note.refund.gateway_reference.startswith("re_sim_")
    # Paid in full before, it stays paid; 4.90 of its 7.35 is credited.
    assert (issued.invoice.state, issued.invoice.amount_credited, issued.invoice.amount_due) == (
        "paid",
        "4.90",
        "0",
    )
    assert list(issued.invoice.credit_note_ids) == [note.credit_note_id]
    async with books(settings) as conn:
        assert await moves(conn, tenant_id, f"credit_note:{note.credit_note_id}") == [
            ("credit_note", f"revenue:{contract_id}:calls", f"receivable:{contract_id}", D("4.90")),
            ("refund", f"receivable:{contract_id}", f"cash:{contract_id}", D("4.90")),
        ]
        # 7.35 collected less 4.90 refunded; revenue 7.35 less 4.90 credited; nothing owed.
        assert await balance(conn, tenant_id, f"cash:{contract_id}") == D("2.45")
        assert await balance(conn, tenant_id, f"revenue:{contract_id}:calls") == D("-2.45")
        assert await balance(conn, tenant_id, f"receivable:{contract_id}") == 0
        refunded = await conn.fetch("SELECT amount FROM simulated_refunds")
        assert [row["amount"] for row in refunded] == [D("4.90")]

    # The same request again: the same credit note, nothing refunded twice. Another request
    # under its id is refused.
    again = await stub.IssueCreditNote(first, metadata=ops)
    assert (again.credit_note, again.replay) == (note, True)
    code, reason, _ = await refusal(
        stub.IssueCreditNote(
            credit("req-1", invoice.invoice_id, (usage.key, "", "1"), refund_to="gateway"),
            metadata=ops,
        )
    )
    assert (code, reason) == ("ALREADY_EXISTS", "IDEMPOTENCY_KEY_MISMATCH")

    # 2.45 is left of the line: a cent more is refused, and takes no number.
    code, reason, _ = await refusal(
        stub.IssueCreditNote(
            credit("req-2", invoice.invoice_id, (usage.key, "2.46", ""), refund_to="pool"),
            metadata=ops,
        )
    )
    assert (code, reason) == ("FAILED_PRECONDITION", "CREDIT_EXCEEDS_INVOICE")
    # The rest, whole, into a credit pool: the next number, CN-000002.
    rest = await stub.IssueCreditNote(
        credit("req-3", invoice.invoice_id, reason="duplicate", refund_to="pool"), metadata=ops
    )
    assert (rest.credit_note.number, rest.credit_note.total) == ("CN-000002", "2.45")
    pool_id = rest.credit_note.refund.pool_id
    assert (rest.credit_note.refund.status, pool_id != "") == ("succeeded", True)
    assert rest.invoice.amount_credited == "7.35"
    async with RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin:
        pools = {p.pool_id: p for p in (await admin.balances("cus_refund")).pools}
    assert D(pools[pool_id].remaining) == D("2.45")  # the customer may spend it now
    async with books(settings) as conn:
        assert await balance(conn, tenant_id, f"pool:{pool_id}") == D("-2.45")  # a credit balance
        assert await balance(conn, tenant_id, f"receivable:{contract_id}") == 0
        # Every account still equals the sum of its transfers, debits equal credits.
        assert all(report.clean for report in (await reconcile(conn)).values())
        assert (
            await conn.fetchval(
                "SELECT sum(debits_posted) - sum(credits_posted) FROM accounts"
                " WHERE tenant_id = $1",
                tenant_id,
            )
            == 0
        )
        assert await balance(conn, tenant_id, f"revenue:{contract_id}:calls") == 0
        assert (
            await conn.fetchval(
                "SELECT last_number FROM credit_note_numbers WHERE tenant_id = $1", tenant_id
            )
            == 2
        )
        audited = await conn.fetch(
            "SELECT subject FROM audit_log WHERE tenant_id = $1 AND action = 'credit_note.issue'"
            " ORDER BY subject",
            tenant_id,
        )
        assert sorted(row["subject"] for row in audited) == sorted(
            [note.credit_note_id, rest.credit_note.credit_note_id]
        )
        topics = await conn.fetch(
            "SELECT topic FROM outbox WHERE tenant_id = $1 AND (topic LIKE '%refund%'"
            " OR topic LIKE 'credit_note%') ORDER BY outbox_id",
            tenant_id,
        )
        assert [row["topic"] for row in topics] == [
            "credit_note.issued",
            "refund.succeeded",
            "credit_note.issued",
            "refund.succeeded",
        ]

    # Reads: the invoice, a listing in pages, the documents; another tenant sees none of it.
    shown = (
        await stub.GetInvoice(
            invoice_pb2.GetInvoiceRequest(invoice_id=invoice.invoice_id), metadata=ops
        )
    ).invoice
    assert list(shown.credit_note_ids) == [note.credit_note_id, rest.credit_note.credit_note_id]
    listing = invoice_pb2.ListCreditNotesRequest
    page = await stub.ListCreditNotes(
        listing(invoice_id=invoice.invoice_id, page_size=1), metadata=ops
    )
    following = await stub.ListCreditNotes(
        listing(invoice_id=invoice.invoice_id, page_size=1, page_token=page.next_page_token),
        metadata=ops,
    )
    assert [n.number for n in [*page.credit_notes, *following.credit_notes]] == [
        "CN-000002",
        "CN-000001",
    ]
    assert following.next_page_token == ""
    assert (
        list((await stub.ListCreditNotes(listing(customer_id="nobody"), metadata=ops)).credit_notes)
        == []
    )
    document = invoice_pb2.GetCreditNoteDocumentRequest
    pdf = await stub.GetCreditNoteDocument(
        document(credit_note_id=note.credit_note_id, format="pdf"), metadata=ops
    )
    assert pdf.content.startswith(b"%PDF")
    html = await stub.GetCreditNoteDocument(
        document(credit_note_id=note.credit_note_id, format="html"), metadata=ops
    )
    assert "CN-000001" in html.content.decode() and "USD 4.90" in html.content.decode()
    invoice_html = await stub.GetInvoiceDocument(
        invoice_pb2.GetInvoiceDocumentRequest(invoice_id=invoice.invoice_id, format="html"),
        metadata=ops,
    )
    assert "Amount credited" in invoice_html.content.decode()
    other = globex.metadata(Role.OPS)
    assert (
        await refusal(
            stub.GetCreditNote(
                invoice_pb2.GetCreditNoteRequest(credit_note_id=note.credit_note_id), metadata=other
            )
        )
    )[:2] == ("NOT_FOUND", "CREDIT_NOTE_NOT_FOUND")
    assert list((await stub.ListCreditNotes(listing(), metadata=other)).credit_notes) == []


async def test_a_credit_note_lowers_what_an_unpaid_invoice_collects(
    settings: Settings, server: RunningServer, channel: aio.Channel, acme: TenantKeys
) -> None:
    tenant_id = acme.tenant_id
    await load_priced_catalog(settings.database_url or "", tenant_id)
    stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
    ops = acme.metadata(Role.OPS)
    async with (
        RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin,
        open_invoicing(settings) as invoicing,
    ):
        invoice = await issued_invoice(
            admin, invoicing, tenant_id, "cus_unpaid", payment_method="pm_decline"
        )
        (usage,) = invoice.lines
        code, reason, _ = await refusal(
            stub.IssueCreditNote(
                credit("u-0", invoice.invoice_id, (usage.key, "1", ""), refund_to="gateway"),
                metadata=ops,
            )
        )
        assert (code, reason) == ("FAILED_PRECONDITION", "INVOICE_NOT_PAID")
        # One call of three: 7.35 − 2.45 = 4.90 due.
        lowered = await stub.IssueCreditNote(
            credit("u-1", invoice.invoice_id, (usage.key, "", "1")),
            metadata=acme.metadata(Role.ADMIN),
        )
        assert (lowered.credit_note.number, lowered.credit_note.refund_to) == ("CN-000001", "")
        assert not lowered.credit_note.HasField("refund")
        assert (lowered.invoice.state, lowered.invoice.amount_due) == ("finalized", "4.90")
        # Collection charges what is due, not the total.
        declined = await invoicing.collect(tenant_id, invoice.invoice_id, 1)
        assert declined.outcome is Collection.DECLINED
        attempts = await invoicing.payment_attempts(tenant_id, invoice.invoice_id)
        assert [a.amount for a in attempts] == [D("4.90")]
        async with books(settings) as conn:
            # 7.35 billed, 2.45 credited: 4.90 owed.
            assert await balance(conn, tenant_id, f"receivable:{invoice.contract_id}") == D("4.90")

        # The rest, whole: nothing is owed, so the invoice is settled, and nothing was paid.
        settled = await stub.IssueCreditNote(credit("u-2", invoice.invoice_id), metadata=ops)
        assert (settled.credit_note.number, settled.credit_note.total) == ("CN-000002", "4.90")
        assert (
            settled.invoice.state,
            settled.invoice.amount_due,
            settled.invoice.amount_credited,
        ) == (
            "paid",
            "0",
            "7.35",
        )
        assert (await invoicing.collect(tenant_id, invoice.invoice_id, 2)).outcome is (
            Collection.ALREADY_SETTLED
        )
        async with books(settings) as conn:
            assert await balance(conn, tenant_id, f"receivable:{invoice.contract_id}") == 0
            assert await balance(conn, tenant_id, f"cash:{invoice.contract_id}") == 0
        code, reason, _ = await refusal(
            stub.IssueCreditNote(credit("u-3", invoice.invoice_id, refund_to="pool"), metadata=ops)
        )
        assert (code, reason) == ("FAILED_PRECONDITION", "CREDIT_EXCEEDS_INVOICE")


async def test_nothing_is_credited_on_a_draft(
    settings: Settings, server: RunningServer, channel: aio.Channel, acme: TenantKeys
) -> None:
    tenant_id = acme.tenant_id
    await load_priced_catalog(settings.database_url or "", tenant_id)
    stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
    async with (
        RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin,
        open_invoicing(settings) as invoicing,
    ):
        contract = await open_billing_contract(
            admin, "cus_draft", period_seconds=60, periods=1, starts_in=timedelta(seconds=-1)
        )
        await admin.rate_and_debit(
            event_id="draft-call",
            customer_id="cus_draft",
            event_type="api.call",
            properties={},
            timestamp=datetime.now(UTC),
        )
        draft = await invoicing.draft(tenant_id, contract.contract_id, contract.term_end)
        assert draft is not None
    code, reason, _ = await refusal(
        stub.IssueCreditNote(credit("d-1", draft.invoice_id), metadata=acme.metadata(Role.OPS))
    )
    assert (code, reason) == ("FAILED_PRECONDITION", "INVOICE_NOT_CREDITABLE")


async def test_a_refund_the_gateway_declines_or_never_answers_is_recorded_failed(
    settings: Settings, acme: TenantKeys
) -> None:
    tenant_id = acme.tenant_id
    await load_priced_catalog(settings.database_url or "", tenant_id)
    quick = replace(settings, gateway_timeout_seconds=0.05)
    server = await start_server(quick)
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin,
            open_invoicing(quick) as invoicing,
        ):
            stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
            ops = acme.metadata(Role.OPS)
            for customer_id, method, code in (
                ("cus_declines", "pm_ok_refund_fails", "refund_declined"),
                ("cus_silent", "pm_ok_refund_timeout", "gateway_timeout"),
            ):
                invoice = await issued_invoice(
                    admin, invoicing, tenant_id, customer_id, payment_method=method
                )
                paid = await invoicing.collect(tenant_id, invoice.invoice_id, 1)
                assert paid.outcome is Collection.PAID
                ask = credit(f"{customer_id}-1", invoice.invoice_id, refund_to="gateway")
                issued = await stub.IssueCreditNote(ask, metadata=ops)
                refund = issued.credit_note.refund
                assert (issued.credit_note.total, refund.status, refund.failure_code) == (
                    "7.35",
                    "failed",
                    code,
                )
                assert refund.attempts == 1
                # Asked again: the refund is made again, under the next attempt's key (the
                # gateway declines or stays silent again), and nothing is refunded.
                again = await stub.IssueCreditNote(ask, metadata=ops)
                retried = again.credit_note.refund
                assert (again.replay, retried.status, retried.failure_code) == (
                    True,
                    "failed",
                    code,
                )
                assert (retried.attempts, retried.idempotency_key) == (
                    2,
                    f"{issued.credit_note.credit_note_id}:refund:2",
                )
                assert again.credit_note.number == issued.credit_note.number
                async with books(quick) as conn:
                    contract_id = invoice.contract_id
                    # Credited, not refunded: the receivable owes the customer 7.35, the cash
                    # still holds it.
                    assert await balance(conn, tenant_id, f"receivable:{contract_id}") == D("-7.35")
                    assert await balance(conn, tenant_id, f"cash:{contract_id}") == D("7.35")
                    reference = f"credit_note:{issued.credit_note.credit_note_id}"
                    assert [m[0] for m in await moves(conn, tenant_id, reference)] == [
                        "credit_note"
                    ]
                    failures = await conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE tenant_id = $1 AND topic = $2"
                        " AND payload->>'credit_note_id' = $3",
                        tenant_id,
                        "refund.failed",
                        issued.credit_note.credit_note_id,
                    )
                    assert failures == 2  # one per attempt
    finally:
        await server.stop(0.5)


async def test_two_credit_notes_at_once_never_credit_more_than_the_line(
    settings: Settings, server: RunningServer, channel: aio.Channel, acme: TenantKeys
) -> None:
    tenant_id = acme.tenant_id
    await load_priced_catalog(settings.database_url or "", tenant_id)
    stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
    ops = acme.metadata(Role.OPS)
    async with (
        RatingClient(f"127.0.0.1:{server.port}", acme.tokens[Role.ADMIN]) as admin,
        open_invoicing(settings) as invoicing,
    ):
        invoice = await issued_invoice(admin, invoicing, tenant_id, "cus_race", payment_method="")
    (usage,) = invoice.lines
    # Two operators at once, each crediting 2 of the 3 calls: the invoice's lock lets one
    # through; the other finds 1 call left and is refused, with no number taken.
    racing = await asyncio.gather(
        *(
            stub.IssueCreditNote(
                credit(f"race-{n}", invoice.invoice_id, (usage.key, "", "2")), metadata=ops
            )
            for n in range(2)
        ),
        return_exceptions=True,
    )
    won = [r for r in racing if isinstance(r, invoice_pb2.IssueCreditNoteResponse)]
    lost = [r for r in racing if isinstance(r, aio.AioRpcError)]
    assert (len(won), len(lost)) == (1, 1)
    assert status_of(lost[0])[1] == "CREDIT_EXCEEDS_INVOICE"
    # 2 × 2.45 = 4.90 credited: 2.45 due.
    assert (won[0].credit_note.number, won[0].invoice.amount_due) == ("CN-000001", "2.45")
    async with books(settings) as conn:
        taken = await conn.fetchval(
            "SELECT last_number FROM credit_note_numbers WHERE tenant_id = $1", tenant_id
        )
    assert taken == 1  # the refused one took no number
