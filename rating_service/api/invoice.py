"""InvoiceService: invoices, their documents, payment attempts and credit notes; the operator
actions on them (void, record or retry a payment, issue a credit note)."""

from __future__ import annotations

from datetime import datetime

from grpc import aio

from rating_client.gen.rating.v1 import invoice_pb2, invoice_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page, Position
from rating_service.api.wire import timestamp
from rating_service.core.auth import Role
from rating_service.core.billing.credit_note import (
    MAX_MEMO_LENGTH,
    CreditNote,
    CreditNoteRequest,
    CreditReason,
    LineCredit,
    RefundDestination,
)
from rating_service.core.billing.invoice import Invoice, InvoiceLine, LineKind
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import format_decimal, parse_decimal
from rating_service.ops.actions import OperatorActions
from rating_service.services.credit_note import CreditNotes
from rating_service.services.invoice import Invoicing
from rating_service.store.credit_note import CreditNotePosition, Refund, StoredCreditNote
from rating_service.store.invoice import InvoicePosition, PaymentAttempt

READERS = (Role.ADMIN, Role.OPS)


CONTENT_TYPES = {"html": "text/html; charset=utf-8", "pdf": "application/pdf"}
"""The document formats GetInvoiceDocument serves, and what each is on the wire."""


class InvoiceServicer(invoice_pb2_grpc.InvoiceServiceServicer):
    """Converts InvoiceService messages to invoicing reads and back."""

    def __init__(
        self, invoicing: Invoicing, actions: OperatorActions, credit_notes: CreditNotes
    ) -> None:
        self._invoicing = invoicing
        self._actions = actions
        self._credit_notes = credit_notes

    @allow(*READERS)
    async def GetInvoice(
        self, request: invoice_pb2.GetInvoiceRequest, context: aio.ServicerContext
    ) -> invoice_pb2.GetInvoiceResponse:
        _require_invoice_id(request.invoice_id)
        found = await self._invoicing.invoices.invoice(
            current_caller().tenant_id, request.invoice_id
        )
        return invoice_pb2.GetInvoiceResponse(invoice=invoice_message(found))

    @allow(*READERS)
    async def ListInvoices(
        self, request: invoice_pb2.ListInvoicesRequest, context: aio.ServicerContext
    ) -> invoice_pb2.ListInvoicesResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (datetime, int, str), violations)
        violations.raise_if_any()
        after = None if page.after is None else _invoice_position(page.after)
        found = await self._invoicing.invoices.invoices(
            current_caller().tenant_id,
            request.contract_id or None,
            page.limit,
            customer_id=request.customer_id or None,
            after=after,
        )
        invoices, token = page.cut(found, _position_of)
        return invoice_pb2.ListInvoicesResponse(
            invoices=[invoice_message(i) for i in invoices], next_page_token=token
        )

    @allow(*READERS)
    async def GetInvoiceDocument(
        self, request: invoice_pb2.GetInvoiceDocumentRequest, context: aio.ServicerContext
    ) -> invoice_pb2.GetInvoiceDocumentResponse:
        violations = ViolationCollector()
        if not request.invoice_id:
            violations.add("invoice_id", "is required")
        if request.format not in CONTENT_TYPES:
            violations.add("format", f'must be "html" or "pdf", not {request.format!r}')
        violations.raise_if_any()
        body = await self._invoicing.document(
            current_caller().tenant_id, request.invoice_id, request.format
        )
        return invoice_pb2.GetInvoiceDocumentResponse(
            content=body.encode() if isinstance(body, str) else body,
            content_type=CONTENT_TYPES[request.format],
        )

    @allow(*READERS)
    async def ListPaymentAttempts(
        self, request: invoice_pb2.ListPaymentAttemptsRequest, context: aio.ServicerContext
    ) -> invoice_pb2.ListPaymentAttemptsResponse:
        violations = ViolationCollector()
        if not request.invoice_id:
            violations.add("invoice_id", "is required")
        page = Page.read(request.page_size, request.page_token, (int,), violations)
        violations.raise_if_any()
        found = await self._invoicing.payment_attempts(
            current_caller().tenant_id, request.invoice_id
        )
        attempts, token = page.of_sorted(found, lambda attempt: (attempt.attempt,))
        return invoice_pb2.ListPaymentAttemptsResponse(
            attempts=[payment_attempt_message(a) for a in attempts], next_page_token=token
        )

    @allow(*READERS)
    async def VoidInvoice(
        self, request: invoice_pb2.VoidInvoiceRequest, context: aio.ServicerContext
    ) -> invoice_pb2.VoidInvoiceResponse:
        violations = ViolationCollector()
        if not request.invoice_id:
            violations.add("invoice_id", "is required")
        if not request.reason.strip():
            violations.add("reason", "say why the invoice is voided (kept in the audit log)")
        violations.raise_if_any()
        caller = current_caller()
        voided = await self._actions.void_invoice(
            caller,
            request.invoice_id,
            request.reason,
            regenerate=request.regenerate,
            actor=f"key:{caller.key_id}",
        )
        return invoice_pb2.VoidInvoiceResponse(
            invoice=invoice_message(voided.invoice),
            revision_workflow_id=voided.revision_workflow_id or "",
        )

    @allow(*READERS)
    async def RecordPayment(
        self, request: invoice_pb2.RecordPaymentRequest, context: aio.ServicerContext
    ) -> invoice_pb2.RecordPaymentResponse:
        violations = ViolationCollector()
        if not request.invoice_id:
            violations.add("invoice_id", "is required")
        if not request.reference.strip():
            violations.add("reference", "say how it was paid (a wire reference)")
        violations.raise_if_any()
        caller = current_caller()
        paid = await self._actions.record_payment(
            caller, request.invoice_id, request.reference, actor=f"key:{caller.key_id}"
        )
        return invoice_pb2.RecordPaymentResponse(
            invoice=invoice_message(paid.invoice), contract_status=str(paid.contract.status)
        )

    @allow(*READERS)
    async def RetryPayment(
        self, request: invoice_pb2.RetryPaymentRequest, context: aio.ServicerContext
    ) -> invoice_pb2.RetryPaymentResponse:
        violations = ViolationCollector()
        if not request.request_id:
            violations.add("request_id", "is required: it makes the retry safe to ask again")
        if not request.invoice_id:
            violations.add("invoice_id", "is required")
        violations.raise_if_any()
        caller = current_caller()
        retried = await self._actions.retry_payment(
            caller, request.invoice_id, request.request_id, actor=f"key:{caller.key_id}"
        )
        return invoice_pb2.RetryPaymentResponse(
            invoice=invoice_message(retried.invoice),
            workflow_id=retried.workflow_id,
            replay=retried.replay,
        )

    @allow(*READERS)
    async def IssueCreditNote(
        self, request: invoice_pb2.IssueCreditNoteRequest, context: aio.ServicerContext
    ) -> invoice_pb2.IssueCreditNoteResponse:
        credit = credit_note_request(request)
        caller = current_caller()
        issued = await self._actions.issue_credit_note(
            caller, request.request_id, credit, actor=f"key:{caller.key_id}"
        )
        return invoice_pb2.IssueCreditNoteResponse(
            credit_note=credit_note_message(issued.credit_note, issued.refund),
            invoice=invoice_message(issued.invoice),
            replay=issued.replay,
        )

    @allow(*READERS)
    async def GetCreditNote(
        self, request: invoice_pb2.GetCreditNoteRequest, context: aio.ServicerContext
    ) -> invoice_pb2.GetCreditNoteResponse:
        if not request.credit_note_id:
            raise InvalidArgument.of_field("credit_note_id", "is required")
        found = await self._credit_notes.credit_note(
            current_caller().tenant_id, request.credit_note_id
        )
        return invoice_pb2.GetCreditNoteResponse(
            credit_note=credit_note_message(found.credit_note, found.refund)
        )

    @allow(*READERS)
    async def ListCreditNotes(
        self, request: invoice_pb2.ListCreditNotesRequest, context: aio.ServicerContext
    ) -> invoice_pb2.ListCreditNotesResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (datetime, str), violations)
        violations.raise_if_any()
        after = None
        if page.after is not None:
            issued_at, credit_note_id = page.after
            assert isinstance(issued_at, datetime)
            after = CreditNotePosition(issued_at, str(credit_note_id))
        found = await self._credit_notes.credit_notes(
            current_caller().tenant_id,
            page.limit,
            invoice_id=request.invoice_id or None,
            contract_id=request.contract_id or None,
            customer_id=request.customer_id or None,
            after=after,
        )
        notes, token = page.cut(found, _credit_note_position)
        return invoice_pb2.ListCreditNotesResponse(
            credit_notes=[credit_note_message(n.credit_note, n.refund) for n in notes],
            next_page_token=token,
        )

    @allow(*READERS)
    async def GetCreditNoteDocument(
        self, request: invoice_pb2.GetCreditNoteDocumentRequest, context: aio.ServicerContext
    ) -> invoice_pb2.GetCreditNoteDocumentResponse:
        violations = ViolationCollector()
        if not request.credit_note_id:
            violations.add("credit_note_id", "is required")
        if request.format not in CONTENT_TYPES:
            violations.add("format", f'must be "html" or "pdf", not {request.format!r}')
        violations.raise_if_any()
        body = await self._credit_notes.document(
            current_caller().tenant_id, request.credit_note_id, request.format
        )
        return invoice_pb2.GetCreditNoteDocumentResponse(
            content=body.encode() if isinstance(body, str) else body,
            content_type=CONTENT_TYPES[request.format],
        )


def credit_note_request(request: invoice_pb2.IssueCreditNoteRequest) -> CreditNoteRequest:
    """The credit note asked for, every bad field named (nothing is written on bad input)."""
    violations = ViolationCollector()
    if not request.request_id:
        violations.add("request_id", "is required: it makes the credit note safe to ask again")
    if not request.invoice_id:
        violations.add("invoice_id", "is required")
    reasons = ", ".join(CreditReason)
    reason = None
    if request.reason not in set(CreditReason):
        violations.add("reason", f"must be one of {reasons}, not {request.reason!r}")
    else:
        reason = CreditReason(request.reason)
    if len(request.memo) > MAX_MEMO_LENGTH:
        violations.add("memo", f"must be at most {MAX_MEMO_LENGTH} characters")
    if reason is CreditReason.OTHER and not request.memo.strip():
        violations.add("memo", 'say why: the reason is "other"')
    refund_to = None
    if request.refund_to:
        if request.refund_to not in set(RefundDestination):
            violations.add(
                "refund_to", f'must be "gateway", "pool" or empty, not {request.refund_to!r}'
            )
        else:
            refund_to = RefundDestination(request.refund_to)
    lines = []
    for index, line in enumerate(request.lines):
        path = f"lines[{index}]"
        if not line.line_id:
            violations.add(f"{path}.line_id", "is required: an invoice line's key")
        if bool(line.amount) == bool(line.quantity):
            violations.add(path, "give an amount or a quantity to credit (one of them)")
            continue
        field = "amount" if line.amount else "quantity"
        try:
            value = parse_decimal(line.amount or line.quantity, f"{path}.{field}")
        except InvalidArgument as bad:
            violations.violations.extend(bad.violations)
            continue
        if value <= 0:
            violations.add(f"{path}.{field}", "must be greater than 0")
            continue
        lines.append(
            LineCredit(
                line.line_id,
                amount=value if line.amount else None,
                quantity=value if line.quantity else None,
            )
        )
    violations.raise_if_any("invalid credit note")
    assert reason is not None, "a missing reason is a violation"
    return CreditNoteRequest(
        request.invoice_id, tuple(lines), reason, request.memo.strip(), refund_to
    )


def credit_note_message(note: CreditNote, refund: Refund | None) -> invoice_pb2.CreditNote:
    """The wire form of a credit note and its refund."""
    message = invoice_pb2.CreditNote(
        credit_note_id=note.credit_note_id,
        number=note.number,
        request_id=note.request_id,
        invoice_id=note.invoice_id,
        invoice_number=note.invoice_number,
        contract_id=note.contract_id,
        customer_id=note.customer_id,
        currency=note.currency.code,
        reason=str(note.reason),
        memo=note.memo,
        total=format_decimal(note.total),
        refund_to="" if note.refund_to is None else str(note.refund_to),
        issued_at=timestamp(note.issued_at),
    )
    for line in note.lines:
        added = message.lines.add(
            line_id=line.line_id,
            kind=str(line.kind),
            description=line.description,
            amount=format_decimal(line.amount),
        )
        if line.quantity is not None:
            added.quantity = format_decimal(line.quantity)
        if line.unit_price is not None:
            added.unit_price = format_decimal(line.unit_price)
    if refund is not None:
        message.refund.CopyFrom(
            invoice_pb2.Refund(
                destination=str(refund.destination),
                amount=format_decimal(refund.amount),
                status=refund.status,
                idempotency_key=refund.idempotency_key,
                gateway_reference=refund.gateway_reference or "",
                pool_id=refund.pool_id or "",
                failure_code=refund.failure_code or "",
                failure_message=refund.failure_message or "",
                attempts=refund.attempts,
            )
        )
    return message


def _credit_note_position(stored: StoredCreditNote) -> Position:
    """A credit note's place in a listing: latest first."""
    return (stored.credit_note.issued_at, stored.credit_note.credit_note_id)


def invoice_message(invoice: Invoice) -> invoice_pb2.Invoice:
    """The wire form of an invoice (issued, draft or preview)."""
    message = invoice_pb2.Invoice(
        invoice_id=invoice.invoice_id,
        number=invoice.number or "",
        state=str(invoice.state),
        contract_id=invoice.contract_id,
        customer_id=invoice.customer_id,
        currency=invoice.currency.code,
        billing_date=timestamp(invoice.billing_date),
        period_start=timestamp(invoice.period_start),
        period_end=timestamp(invoice.period_end),
        revision=invoice.revision,
        lines=[_line_message(line) for line in invoice.lines],
        subtotals=[
            invoice_pb2.InvoiceSubtotal(
                kind=str(kind), amount=format_decimal(invoice.subtotal(kind))
            )
            for kind in _kinds_in_order(invoice)
        ],
        total=format_decimal(invoice.total),
        exact_total=format_decimal(invoice.exact_total),
        amount_credited=format_decimal(invoice.credited),
        amount_due=format_decimal(invoice.amount_due),
        credit_note_ids=list(invoice.credit_note_ids),
    )
    if invoice.issued_at is not None:
        message.issued_at.CopyFrom(timestamp(invoice.issued_at))
    for pool in invoice.balances:
        balance = message.balances.add(
            pool_id=pool.pool_id, description=pool.description, balance=format_decimal(pool.balance)
        )
        if pool.expires_at is not None:
            balance.expires_at.CopyFrom(timestamp(pool.expires_at))
    return message


def payment_attempt_message(attempt: PaymentAttempt) -> invoice_pb2.PaymentAttempt:
    """The wire form of a collection attempt."""
    return invoice_pb2.PaymentAttempt(
        attempt=attempt.attempt,
        idempotency_key=attempt.idempotency_key,
        amount=format_decimal(attempt.amount),
        payment_method=attempt.payment_method,
        status=attempt.status,
        failure_code=attempt.failure_code or "",
        gateway_reference=attempt.gateway_reference or "",
        created_at=timestamp(attempt.created_at),
        failure_message=attempt.failure_message or "",
    )


def _line_message(line: InvoiceLine) -> invoice_pb2.InvoiceLine:
    message = invoice_pb2.InvoiceLine(
        kind=str(line.kind),
        key=line.key,
        description=line.description,
        service_start=timestamp(line.service_start),
        service_end=timestamp(line.service_end),
        amount=format_decimal(line.amount),
        exact_amount=format_decimal(line.exact_amount),
        events=line.events,
        product_key=line.product_key,
        tiers=[
            invoice_pb2.InvoiceTier(
                description=tier.description,
                quantity=format_decimal(tier.quantity),
                unit_price=format_decimal(tier.unit_price),
                amount=format_decimal(tier.amount),
            )
            for tier in line.tiers
        ],
    )
    if line.quantity is not None:
        message.quantity = format_decimal(line.quantity)
    if line.unit_price is not None:
        message.unit_price = format_decimal(line.unit_price)
    return message


def _kinds_in_order(invoice: Invoice) -> list[LineKind]:
    """The kinds of the invoice's lines, each once, in the order the lines first show them."""
    return list(dict.fromkeys(line.kind for line in invoice.lines))


def _require_invoice_id(invoice_id: str) -> None:
    if not invoice_id:
        raise InvalidArgument.of_field("invoice_id", "is required")


def _position_of(invoice: Invoice) -> Position:
    """An invoice's place in a listing: latest billing date first, then highest revision."""
    return (invoice.billing_date, invoice.revision, invoice.invoice_id)


def _invoice_position(position: Position) -> InvoicePosition:
    """The invoice position a page token names (its shape was checked by `Page.read`)."""
    billing_date, revision, invoice_id = position
    assert isinstance(billing_date, datetime) and isinstance(revision, int)
    return InvoicePosition(billing_date, revision, str(invoice_id))
