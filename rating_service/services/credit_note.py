"""Credit notes: issue one against an invoice, refund it when the invoice was paid, read them.

Issuing is idempotent on the operator's request id: the same id with the same request answers
the credit note it issued, and finishes its refund: one that never got an answer recorded is
asked again under the same key; one that failed is made again under the next attempt's key
(as dunning retries a charge). With another request the id is refused (ALREADY_EXISTS,
IDEMPOTENCY_KEY_MISMATCH) and changes nothing.

A refund is the operator's synchronous request, so it is made here, not in a workflow: through
the payment gateway under a key derived from the credit note (asked again, the gateway answers
its first outcome and refunds nothing more), or into a new purchased-credit pool through the
top-up path (idempotent on an id derived from the credit note). A gateway that never answers
is recorded as a failed refund (`gateway_timeout`), as an unanswered charge is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rating_service.core.auth import Caller
from rating_service.core.billing.credit_note import (
    CreditNote,
    CreditNoteRequest,
    RefundDestination,
)
from rating_service.core.billing.document import (
    InvoiceParties,
    render_credit_note_html,
    render_credit_note_pdf,
)
from rating_service.core.billing.dunning import GATEWAY_TIMEOUT_CODE, reinstatement_on_payment
from rating_service.core.billing.invoice import Invoice
from rating_service.core.ids import new_id
from rating_service.core.ledger.idempotency import IdempotentOutcome, recall
from rating_service.core.money import format_decimal
from rating_service.payments.gateway import GatewayTimeout, PaymentGateway, RefundRequest
from rating_service.services.catalog import utc_now
from rating_service.services.contract import ContractAdmin
from rating_service.store.contract import ContractStore
from rating_service.store.credit_note import (
    CreditNotePosition,
    CreditNoteStore,
    Refund,
    StoredCreditNote,
)
from rating_service.store.invoice import InvoiceStore
from rating_service.store.tenant import TenantStore

UNANSWERED_REFUND = "the gateway did not answer; the refund's outcome is unknown"
"""The message recorded for a refund the gateway never answered."""


@dataclass(frozen=True, slots=True)
class IssuedCreditNote:
    """A credit note, its refund as it stands, the invoice after it, and whether it is a replay."""

    credit_note: CreditNote
    refund: Refund | None
    invoice: Invoice
    replay: bool


class CreditNotes:
    """Issues credit notes and their refunds; reads them and their documents."""

    def __init__(
        self,
        store: CreditNoteStore,
        invoices: InvoiceStore,
        contracts: ContractStore,
        tenants: TenantStore,
        admin: ContractAdmin,
        gateway: PaymentGateway,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._invoices = invoices
        self._contracts = contracts
        self._tenants = tenants
        self._admin = admin
        self._gateway = gateway
        self._clock = clock

    @property
    def store(self) -> CreditNoteStore:
        """The credit note store, for reads."""
        return self._store

    async def issue(
        self, caller: Caller, request_id: str, request: CreditNoteRequest, actor: str
    ) -> IssuedCreditNote:
        """Issue the credit note (once per request id), then make its refund if it has one."""
        tenant_id = caller.tenant_id
        earlier = await self._store.by_request(tenant_id, request_id)
        stored = earlier or await self._store.issue(
            tenant_id,
            request_id,
            request,
            lambda: new_id("cn"),
            self._clock(),
            actor,
            reinstatement_on_payment,
        )
        # A concurrent first attempt may have issued it: either way, the request must match.
        previous = IdempotentOutcome(request_id, stored.fingerprint, stored)
        recall(previous, request_id, request.fingerprint)
        note = stored.credit_note
        if stored.refund is not None and stored.refund.status == "failed" and earlier:
            # Asked again after a failed refund: made again, under the next attempt's key.
            await self._store.retry_refund(note, stored.refund)
            stored = await self._store.credit_note(tenant_id, note.credit_note_id)
        if stored.refund is not None and stored.refund.status == "pending":
            await self._refund(caller, note, stored.refund)
            stored = await self._store.credit_note(tenant_id, note.credit_note_id)
        invoice = await self._invoices.invoice(tenant_id, note.invoice_id)
        return IssuedCreditNote(note, stored.refund, invoice, replay=earlier is not None)

    async def _refund(self, caller: Caller, note: CreditNote, refund: Refund) -> None:
        """Give a paid invoice's credit back where the credit note says, and record it."""
        if note.refund_to is RefundDestination.POOL:
            topped_up = await self._admin.top_up(
                caller,
                {
                    "top_up_id": f"refund-{note.credit_note_id}",
                    "contract_id": note.contract_id,
                    "amount": format_decimal(note.total),
                    "memo": f"Refund of credit note {note.number} (invoice {note.invoice_number})",
                },
            )
            pool_id = topped_up.commitment.pool.pool_id
            await self._store.refund_succeeded(note, None, pool_id, self._clock())
            return
        charge = await self._store.charge_reference(note.tenant_id, note.invoice_id)
        assert charge is not None, "a gateway refund is issued only for a charge (store.issue)"
        request = RefundRequest(
            refund.idempotency_key,
            charge,
            note.total,
            note.currency.code,
            note.credit_note_id,
        )
        try:
            outcome = await self._gateway.refund(request)
        except GatewayTimeout:
            await self._store.refund_failed(
                note, GATEWAY_TIMEOUT_CODE, UNANSWERED_REFUND, self._clock()
            )
            return
        if outcome.succeeded:
            await self._store.refund_succeeded(note, outcome.gateway_reference, None, self._clock())
        else:
            await self._store.refund_failed(
                note, outcome.failure_code, outcome.message, self._clock()
            )

    async def credit_note(self, tenant_id: str, credit_note_id: str) -> StoredCreditNote:
        """One of the tenant's credit notes, with its refund."""
        return await self._store.credit_note(tenant_id, credit_note_id)

    async def credit_notes(
        self,
        tenant_id: str,
        limit: int,
        *,
        invoice_id: str | None = None,
        contract_id: str | None = None,
        customer_id: str | None = None,
        after: CreditNotePosition | None = None,
    ) -> list[StoredCreditNote]:
        """The tenant's credit notes, latest first, filtered and paged (see the store)."""
        return await self._store.credit_notes(
            tenant_id,
            limit,
            invoice_id=invoice_id,
            contract_id=contract_id,
            customer_id=customer_id,
            after=after,
        )

    async def document(self, tenant_id: str, credit_note_id: str, kind: str) -> str | bytes:
        """The credit note's HTML (`html`) or PDF (`pdf`), rendered once and kept."""
        body = await self._store.document(tenant_id, credit_note_id, kind)
        if body is not None:
            return body
        note = (await self._store.credit_note(tenant_id, credit_note_id)).credit_note
        tenant = await self._tenants.tenant(tenant_id)
        customer = await self._contracts.customer(tenant_id, note.customer_id)
        parties = InvoiceParties(tenant.name, customer.name, customer.customer_id)
        # Laying out a PDF is pure CPU: off the event loop, as the invoices' is.
        html, pdf = await asyncio.to_thread(_documents, note, parties)
        await self._store.store_documents(note, html, pdf)
        return pdf if kind == "pdf" else html


def _documents(note: CreditNote, parties: InvoiceParties) -> tuple[str, bytes]:
    return render_credit_note_html(note, parties), render_credit_note_pdf(note, parties)
