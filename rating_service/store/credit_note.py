"""Credit notes and their refunds in PostgreSQL: gapless numbers, postings, the invoice credited.

A credit note is issued in one transaction under its invoice's row lock: the earlier credit
notes are read, the new one composed within what they leave (the pure core decides), the
tenant's next credit note number taken, its transfers posted, the invoice's credited amount
raised (an unpaid invoice credited in full is settled), and its refund recorded as pending.
A refused credit note rolls all of that back, its number included, so numbers have no gaps.
The refund's outcome is written by a later transaction, as a payment attempt's is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from rating_service.core.billing.credit_note import (
    CreditNote,
    CreditNoteRequest,
    RefundDestination,
    check_refundable,
    compose_credit_lines,
    credit_note_from_dict,
    credit_note_to_dict,
    format_credit_note_number,
)
from rating_service.core.billing.dunning import StandingRule
from rating_service.core.billing.invoice import Invoice, InvoiceState, invoice_to_dict
from rating_service.core.billing.postings import (
    credit_note_accounts,
    credit_note_reference,
    invoice_accounts,
    issue_transfers,
)
from rating_service.core.errors import NotFound
from rating_service.core.ledger.accounts import cash_account_id, payments_clearing_account_id
from rating_service.core.ledger.posting_rules import refund_transfers
from rating_service.core.money import format_decimal
from rating_service.outbox.topics import CreditNoteIssued, RefundSettled, Topic
from rating_service.store.database import Connection
from rating_service.store.effects import AuditEntry, write_audit, write_outbox
from rating_service.store.invoice import (
    invoice_json,
    invoice_not_found,
    lock_invoice,
    settle_invoice,
)
from rating_service.store.ledger import open_accounts, post_transfers


@dataclass(frozen=True, slots=True)
class Refund:
    """A credit note's refund, as recorded: pending, succeeded or failed."""

    credit_note_id: str
    idempotency_key: str
    destination: RefundDestination
    amount: Decimal
    attempts: int
    status: str
    failure_code: str | None
    failure_message: str | None
    gateway_reference: str | None
    pool_id: str | None
    created_at: datetime
    settled_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredCreditNote:
    """A credit note, the fingerprint of the request that issued it, and its refund (if any)."""

    credit_note: CreditNote
    fingerprint: str
    refund: Refund | None


@dataclass(frozen=True, slots=True)
class CreditNotePosition:
    """Where a credit note sits in a listing (issued at, id): a page resumes past it."""

    issued_at: datetime
    credit_note_id: str


class _Taken(Exception):
    """Another transaction issued a credit note under the same request id first."""


class CreditNoteStore:
    """Reads and writes credit notes and refunds over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def issue(
        self,
        tenant_id: str,
        request_id: str,
        request: CreditNoteRequest,
        new_id: Callable[[], str],
        at: datetime,
        actor: str,
        settlement: StandingRule,
    ) -> StoredCreditNote:
        """Issue a credit note against the invoice, or return the one its request id issued.

        The caller compares fingerprints: the same request id may have issued another request.
        `settlement` is how a contract's standing changes when its invoice is credited in full
        (as for a payment: a contract suspended for it resumes).
        """
        fingerprint = request.fingerprint
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                invoice = await lock_invoice(conn, tenant_id, request.invoice_id)
                if invoice is None:
                    raise invoice_not_found(request.invoice_id)
                # Under the invoice's lock: a retry racing its first attempt finds it here.
                earlier = await _by_request(conn, tenant_id, request_id)
                if earlier is not None:
                    return earlier
                notes = await _notes_of(conn, tenant_id, invoice.invoice_id)
                lines = compose_credit_lines(invoice, notes, request)
                if request.refund_to is RefundDestination.GATEWAY:
                    check_refundable(invoice, await _charge_of(conn, tenant_id, invoice.invoice_id))
                sequence = await conn.fetchval(
                    "INSERT INTO credit_note_numbers AS n (tenant_id, last_number) VALUES ($1, 1)"
                    " ON CONFLICT (tenant_id) DO UPDATE SET last_number = n.last_number + 1"
                    " RETURNING last_number",
                    tenant_id,
                )
                note = CreditNote(
                    new_id(),
                    tenant_id,
                    format_credit_note_number(sequence),
                    request_id,
                    invoice.invoice_id,
                    invoice.number or "",
                    invoice.contract_id,
                    invoice.customer_id,
                    invoice.currency,
                    request.reason,
                    request.memo,
                    request.refund_to,
                    lines,
                    at,
                )
                inserted = await conn.fetchval(
                    "INSERT INTO credit_notes (tenant_id, credit_note_id, number, request_id,"
                    " request_hash, invoice_id, contract_id, customer_id, amount, currency,"
                    " reason, refund_to, document, issued_at) VALUES ($1, $2, $3, $4, $5, $6,"
                    " $7, $8, $9, $10, $11, $12, $13::jsonb, $14)"
                    " ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING credit_note_id",
                    tenant_id,
                    note.credit_note_id,
                    note.number,
                    request_id,
                    fingerprint,
                    note.invoice_id,
                    note.contract_id,
                    note.customer_id,
                    note.total,
                    note.currency.code,
                    str(note.reason),
                    None if note.refund_to is None else str(note.refund_to),
                    json.dumps(credit_note_to_dict(note)),
                    at,
                )
                if inserted is None:
                    raise _Taken  # its number is rolled back with everything else
                await self._post(conn, invoice, note, at, actor, settlement)
                stored = await _by_request(conn, tenant_id, request_id)
                assert stored is not None, "written above"
                return stored
        except _Taken:
            async with self._pool.acquire() as conn:
                taken = await _by_request(conn, tenant_id, request_id)
            assert taken is not None, "a conflicting credit note is committed before DO NOTHING"
            return taken

    async def _post(
        self,
        conn: Connection,
        invoice: Invoice,
        note: CreditNote,
        at: datetime,
        actor: str,
        settlement: StandingRule,
    ) -> None:
        """Post the credit note, credit its invoice, record its refund, audit and announce it."""
        tenant_id = note.tenant_id
        await open_accounts(
            conn,
            tenant_id,
            note.contract_id,
            [*invoice_accounts(invoice), *credit_note_accounts(note)],
            note.currency.code,
        )
        await post_transfers(conn, tenant_id, issue_transfers(note))
        credited = invoice.credited_by(note.credit_note_id, note.total)
        if credited.state is not InvoiceState.PAID and credited.amount_due <= 0:
            # Credited in full before it was paid: nothing is owed, so it is settled.
            await settle_invoice(
                conn, credited, f"payment:{invoice.invoice_id}:credited", at, actor, settlement
            )
        else:
            # Its documents showed less credited: cleared, rendered again when next read.
            await conn.execute(
                "UPDATE invoices SET document = $3::jsonb, html = NULL, pdf = NULL"
                " WHERE tenant_id = $1 AND invoice_id = $2",
                tenant_id,
                invoice.invoice_id,
                json.dumps(invoice_to_dict(credited)),
            )
        if note.refund_to is not None:
            await conn.execute(
                "INSERT INTO refunds (tenant_id, credit_note_id, idempotency_key, invoice_id,"
                " destination, amount, currency, status)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')",
                tenant_id,
                note.credit_note_id,
                refund_key(note.credit_note_id, 1),
                note.invoice_id,
                str(note.refund_to),
                note.total,
                note.currency.code,
            )
        details = {
            "number": note.number,
            "invoice_id": note.invoice_id,
            "request_id": note.request_id,
            "amount": format_decimal(note.total),
            "reason": str(note.reason),
            "memo": note.memo,
            "refund_to": None if note.refund_to is None else str(note.refund_to),
        }
        await write_audit(
            conn, tenant_id, AuditEntry(actor, "credit_note.issue", note.credit_note_id, details)
        )
        await write_outbox(
            conn,
            tenant_id,
            Topic.CREDIT_NOTE_ISSUED,
            Topic.CREDIT_NOTE_ISSUED.dedupe_key(tenant_id, note.credit_note_id),
            CreditNoteIssued(
                credit_note_id=note.credit_note_id,
                number=note.number,
                invoice_id=note.invoice_id,
                contract_id=note.contract_id,
                amount=format_decimal(note.total),
                currency=note.currency.code,
                refund_to=None if note.refund_to is None else str(note.refund_to),
            ),
        )

    async def by_request(self, tenant_id: str, request_id: str) -> StoredCreditNote | None:
        """The credit note a request id issued, if it issued one."""
        async with self._pool.acquire() as conn:
            return await _by_request(conn, tenant_id, request_id)

    async def credit_note(self, tenant_id: str, credit_note_id: str) -> StoredCreditNote:
        """One credit note of the tenant, with its refund."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"{_NOTES} WHERE c.tenant_id = $1 AND c.credit_note_id = $2",
                tenant_id,
                credit_note_id,
            )
        if row is None:
            raise NotFound(
                f"no credit note {credit_note_id!r}",
                reason="CREDIT_NOTE_NOT_FOUND",
                metadata={"credit_note_id": credit_note_id},
            )
        return _stored(row)

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
        """The tenant's credit notes (of an invoice, contract or customer), latest first.

        Ordered by issue time and id, both descending; `after` resumes past a position.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"{_NOTES} WHERE c.tenant_id = $1"
                " AND ($2::text IS NULL OR c.invoice_id = $2)"
                " AND ($3::text IS NULL OR c.contract_id = $3)"
                " AND ($4::text IS NULL OR c.customer_id = $4)"
                " AND ($5::timestamptz IS NULL OR (c.issued_at, c.credit_note_id) < ($5, $6::text))"
                " ORDER BY c.issued_at DESC, c.credit_note_id DESC LIMIT $7",
                tenant_id,
                invoice_id,
                contract_id,
                customer_id,
                None if after is None else after.issued_at,
                None if after is None else after.credit_note_id,
                limit,
            )
        return [_stored(row) for row in rows]

    async def charge_reference(self, tenant_id: str, invoice_id: str) -> str | None:
        """The gateway's id of the charge that paid the invoice; None if none did."""
        async with self._pool.acquire() as conn:
            return await _charge_of(conn, tenant_id, invoice_id)

    async def refund_succeeded(
        self,
        note: CreditNote,
        gateway_reference: str | None,
        pool_id: str | None,
        at: datetime,
    ) -> None:
        """Record the refund done and post it (receivable → cash, or → the pool's funding); once."""
        destination = RefundDestination.POOL if pool_id is not None else RefundDestination.GATEWAY
        to_account = (
            payments_clearing_account_id(note.contract_id)
            if destination is RefundDestination.POOL
            else cash_account_id(note.contract_id)
        )
        async with self._pool.acquire() as conn, conn.transaction():
            settled = await conn.fetchval(
                "UPDATE refunds SET status = 'succeeded', gateway_reference = $3, pool_id = $4,"
                " settled_at = $5 WHERE tenant_id = $1 AND credit_note_id = $2"
                " AND status = 'pending' RETURNING attempts",
                note.tenant_id,
                note.credit_note_id,
                gateway_reference,
                pool_id,
                at,
            )
            if settled is None:
                return  # recorded before: a retry
            await post_transfers(
                conn,
                note.tenant_id,
                refund_transfers(
                    reference=credit_note_reference(note.credit_note_id),
                    contract_id=note.contract_id,
                    amount=note.total,
                    to_account=to_account,
                ),
            )
            await _announce(conn, Topic.REFUND_SUCCEEDED, note, settled, destination, pool_id, "")

    async def retry_refund(self, note: CreditNote, failed: Refund) -> None:
        """Make a failed refund pending again, as its next attempt under that attempt's key."""
        attempt = failed.attempts + 1
        await self._pool.execute(
            "UPDATE refunds SET status = 'pending', attempts = $3, idempotency_key = $4,"
            " failure_code = NULL, failure_message = NULL, gateway_reference = NULL,"
            " settled_at = NULL WHERE tenant_id = $1 AND credit_note_id = $2"
            " AND status = 'failed' AND attempts = $5",
            note.tenant_id,
            note.credit_note_id,
            attempt,
            refund_key(note.credit_note_id, attempt),
            failed.attempts,
        )

    async def refund_failed(self, note: CreditNote, code: str, message: str, at: datetime) -> None:
        """Record that the gateway refused (or never answered) the refund, and announce it."""
        async with self._pool.acquire() as conn, conn.transaction():
            failed = await conn.fetchval(
                "UPDATE refunds SET status = 'failed', failure_code = $3, failure_message = $4,"
                " settled_at = $5 WHERE tenant_id = $1 AND credit_note_id = $2"
                " AND status = 'pending' RETURNING attempts",
                note.tenant_id,
                note.credit_note_id,
                code,
                message,
                at,
            )
            if failed is not None:
                await _announce(
                    conn, Topic.REFUND_FAILED, note, failed, RefundDestination.GATEWAY, None, code
                )

    async def document(self, tenant_id: str, credit_note_id: str, kind: str) -> str | bytes | None:
        """A credit note's stored HTML (`html`) or PDF (`pdf`); None until rendered."""
        column = {"html": "html", "pdf": "pdf"}[kind]
        body = await self._pool.fetchval(
            f"SELECT {column} FROM credit_notes WHERE tenant_id = $1 AND credit_note_id = $2",
            tenant_id,
            credit_note_id,
        )
        return None if body is None else (bytes(body) if kind == "pdf" else str(body))

    async def store_documents(self, note: CreditNote, html: str, pdf: bytes) -> None:
        """Keep a credit note's HTML and PDF (a credit note never changes once issued)."""
        await self._pool.execute(
            "UPDATE credit_notes SET html = $3, pdf = $4"
            " WHERE tenant_id = $1 AND credit_note_id = $2",
            note.tenant_id,
            note.credit_note_id,
            html,
            pdf,
        )


def refund_key(credit_note_id: str, attempt: int) -> str:
    """The idempotency key the gateway sees for a credit note's n-th refund attempt."""
    return f"{credit_note_id}:refund:{attempt}"


_NOTES = (
    "SELECT c.document, c.request_hash, r.credit_note_id AS refund_of, r.idempotency_key,"
    " r.destination, r.amount, r.attempts, r.status, r.failure_code, r.failure_message,"
    " r.gateway_reference, r.pool_id, r.created_at, r.settled_at FROM credit_notes c"
    " LEFT JOIN refunds r ON r.tenant_id = c.tenant_id AND r.credit_note_id = c.credit_note_id"
)


def _stored(row: asyncpg.Record) -> StoredCreditNote:
    note = credit_note_from_dict(invoice_json(row["document"]))
    refund = None
    if row["refund_of"] is not None:
        refund = Refund(
            row["refund_of"],
            row["idempotency_key"],
            RefundDestination(row["destination"]),
            row["amount"],
            row["attempts"],
            row["status"],
            row["failure_code"],
            row["failure_message"],
            row["gateway_reference"],
            row["pool_id"],
            row["created_at"],
            row["settled_at"],
        )
    return StoredCreditNote(note, row["request_hash"], refund)


async def _by_request(conn: Connection, tenant_id: str, request_id: str) -> StoredCreditNote | None:
    row = await conn.fetchrow(
        f"{_NOTES} WHERE c.tenant_id = $1 AND c.request_id = $2", tenant_id, request_id
    )
    return None if row is None else _stored(row)


async def _notes_of(conn: Connection, tenant_id: str, invoice_id: str) -> list[CreditNote]:
    rows = await conn.fetch(
        "SELECT document FROM credit_notes WHERE tenant_id = $1 AND invoice_id = $2"
        " ORDER BY issued_at, credit_note_id",
        tenant_id,
        invoice_id,
    )
    return [credit_note_from_dict(invoice_json(row["document"])) for row in rows]


async def _charge_of(conn: Connection, tenant_id: str, invoice_id: str) -> str | None:
    reference: str | None = await conn.fetchval(
        "SELECT gateway_reference FROM payment_attempts WHERE tenant_id = $1"
        " AND invoice_id = $2 AND status = 'succeeded' ORDER BY attempt DESC LIMIT 1",
        tenant_id,
        invoice_id,
    )
    return reference


async def _announce(
    conn: Connection,
    topic: Topic,
    note: CreditNote,
    attempt: int,
    destination: RefundDestination,
    pool_id: str | None,
    failure_code: str,
) -> None:
    await write_outbox(
        conn,
        note.tenant_id,
        topic,
        topic.dedupe_key(note.tenant_id, f"{note.credit_note_id}:{attempt}"),
        RefundSettled(
            credit_note_id=note.credit_note_id,
            invoice_id=note.invoice_id,
            contract_id=note.contract_id,
            destination=str(destination),
            amount=format_decimal(note.total),
            currency=note.currency.code,
            pool_id=pool_id,
            failure_code=failure_code,
            attempt=attempt,
        ),
    )
