"""Invoices in PostgreSQL: closing periods, drafts, gapless numbers, documents and payments.

Each write is one transaction and idempotent on business keys (the contract and billing date,
the invoice id, the payment's idempotency key), so an activity retried after a crash, or
replayed by ops in a new workflow run, finds its earlier effect instead of repeating it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from rating_service.core.billing.compose import UsageTotal
from rating_service.core.billing.dunning import ContractStanding, StandingRule
from rating_service.core.billing.invoice import (
    INVOICE_STATE_CONFLICT,
    Invoice,
    InvoiceState,
    LineKind,
    check_move,
    format_invoice_number,
    invoice_from_dict,
    invoice_to_dict,
)
from rating_service.core.billing.postings import (
    finalization_transfers,
    invoice_accounts,
    invoice_reference,
)
from rating_service.core.errors import FailedPrecondition, NotFound, PreconditionViolation
from rating_service.core.ledger.posting_rules import invoice_void_transfers, payment_transfers
from rating_service.outbox.topics import InvoiceIssued, PaymentFailure, Topic
from rating_service.store.contract import change_contract_status, lock_contract_status
from rating_service.store.database import Connection
from rating_service.store.effects import AuditEntry, write_audit, write_outbox
from rating_service.store.ledger import open_accounts, post_transfers, transfers_by_reference

OVERAGE_DRAW = ""
"""The pool id under which period_draws keeps a period's overage."""


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """What a closed period's invoice is made from: usage counters and draws per pool."""

    usage: tuple[UsageTotal, ...]
    drawn: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class PaymentAttempt:
    """One attempt to collect an invoice, as recorded."""

    idempotency_key: str
    invoice_id: str
    attempt: int
    amount: Decimal
    payment_method: str
    status: str
    failure_code: str | None
    gateway_reference: str | None
    created_at: datetime
    failure_message: str | None = None
    settled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PaymentRetry:
    """An operator's request to collect an invoice now, and the dunning workflow it signalled."""

    request_id: str
    invoice_id: str
    workflow_id: str


@dataclass(frozen=True, slots=True)
class InvoicePosition:
    """Where an invoice sits in a listing (billing date, revision, id): a page resumes past it."""

    billing_date: datetime
    revision: int
    invoice_id: str

    @classmethod
    def of(cls, invoice: Invoice) -> InvoicePosition:
        """The position of an invoice."""
        return cls(invoice.billing_date, invoice.revision, invoice.invoice_id)


class InvoiceStore:
    """Reads and writes invoices and payment attempts over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def close_period(
        self, tenant_id: str, contract_id: str, period: tuple[datetime, datetime]
    ) -> None:
        """Stop a period taking usage: late events for it are refused from now on.

        The row lock orders this after any debit batch holding the period, so the counters
        read next are final.
        """
        await self._pool.execute(
            "INSERT INTO contract_periods AS p"
            " (tenant_id, contract_id, period_start, period_end, state)"
            " VALUES ($1, $2, $3, $4, 'closed')"
            " ON CONFLICT (tenant_id, contract_id, period_start)"
            " DO UPDATE SET state = 'closed' WHERE p.state = 'open'",
            tenant_id,
            contract_id,
            period[0],
            period[1],
        )

    async def closed_period(
        self, tenant_id: str, contract_id: str, period_start: datetime
    ) -> ClosedPeriod:
        """A period's usage per product and cell, and what each pool (and overage) paid."""
        async with self._pool.acquire() as conn:
            counters = await conn.fetch(
                "SELECT product_key, cell, quantity, amount, events FROM usage_counters"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3",
                tenant_id,
                contract_id,
                period_start,
            )
            draws = await conn.fetch(
                "SELECT pool_id, sum(amount) AS amount FROM period_draws"
                " WHERE tenant_id = $1 AND contract_id = $2 AND period_start = $3"
                " GROUP BY pool_id",
                tenant_id,
                contract_id,
                period_start,
            )
        return ClosedPeriod(
            tuple(
                UsageTotal(
                    row["product_key"],
                    tuple(row["cell"]),
                    row["quantity"],
                    row["amount"],
                    row["events"],
                )
                for row in counters
            ),
            {row["pool_id"]: row["amount"] for row in draws if row["pool_id"] != OVERAGE_DRAW},
        )

    async def term_usage(self, tenant_id: str, contract_id: str) -> dict[str, Decimal]:
        """Usage charged per product over the contract's whole term (for the true-up)."""
        rows = await self._pool.fetch(
            "SELECT product_key, sum(amount) AS amount FROM usage_counters"
            " WHERE tenant_id = $1 AND contract_id = $2 GROUP BY product_key",
            tenant_id,
            contract_id,
        )
        return {row["product_key"]: row["amount"] for row in rows}

    async def billed_commitments(
        self, tenant_id: str, contract_id: str, other_than: str
    ) -> frozenset[str]:
        """Pools whose commit a live (not void) invoice of the contract, other than one, bills."""
        rows = await self._pool.fetch(
            "SELECT line->>'key' AS key FROM invoices i,"
            " jsonb_array_elements(i.document->'lines') AS line"
            " WHERE i.tenant_id = $1 AND i.contract_id = $2 AND i.state <> 'void'"
            " AND line->>'kind' = $3 AND i.invoice_id <> $4",
            tenant_id,
            contract_id,
            str(LineKind.COMMIT),
            other_than,
        )
        return frozenset(row["key"].removeprefix("commit:") for row in rows)

    async def save_draft(self, invoice: Invoice) -> Invoice:
        """Store a draft, replacing an earlier draft of it; a finalized one is kept and returned."""
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await lock_invoice(conn, invoice.tenant_id, invoice.invoice_id)
            if stored is not None and stored.state is not InvoiceState.DRAFT:
                return stored
            await conn.execute(
                "INSERT INTO invoices (tenant_id, invoice_id, contract_id, customer_id,"
                " billing_date, revision, period_start, period_end, currency, state, total,"
                " document) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'draft', $10, $11::jsonb)"
                " ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET total = EXCLUDED.total,"
                " document = EXCLUDED.document, period_start = EXCLUDED.period_start,"
                " period_end = EXCLUDED.period_end",
                invoice.tenant_id,
                invoice.invoice_id,
                invoice.contract_id,
                invoice.customer_id,
                invoice.billing_date,
                invoice.revision,
                invoice.period_start,
                invoice.period_end,
                invoice.currency.code,
                invoice.total,
                json.dumps(invoice_to_dict(invoice)),
            )
        return invoice

    async def finalize(self, tenant_id: str, invoice_id: str, at: datetime) -> Invoice:
        """Give a draft the tenant's next invoice number and post it to the ledger, at once.

        The number is taken under the tenant's row lock in the same transaction that finalizes,
        so numbers have no gaps; finalizing a finalized invoice returns it unchanged.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            draft = await lock_invoice(conn, tenant_id, invoice_id)
            if draft is None:
                raise invoice_not_found(invoice_id)
            if draft.state is not InvoiceState.DRAFT:
                return draft
            sequence = await conn.fetchval(
                "INSERT INTO invoice_numbers AS n (tenant_id, last_number) VALUES ($1, 1)"
                " ON CONFLICT (tenant_id) DO UPDATE SET last_number = n.last_number + 1"
                " RETURNING last_number",
                tenant_id,
            )
            invoice = draft.finalized(format_invoice_number(sequence), at)
            if invoice.bills_period_in_arrears:
                # The period row before the accounts, the order the debit path locks them in,
                # so a late event for this period never deadlocks with its finalization.
                # By its start: a cancellation cuts a period short after its row was written.
                await conn.execute(
                    "UPDATE contract_periods SET state = 'invoiced' WHERE tenant_id = $1"
                    " AND contract_id = $2 AND period_start = $3 AND state <> 'invoiced'",
                    tenant_id,
                    invoice.contract_id,
                    invoice.period_start,
                )
            await open_accounts(
                conn,
                tenant_id,
                invoice.contract_id,
                invoice_accounts(invoice),
                invoice.currency.code,
            )
            await post_transfers(conn, tenant_id, finalization_transfers(invoice))
            await write_invoice_state(conn, invoice, issued_at=at)
            await write_outbox(
                conn,
                tenant_id,
                Topic.INVOICE_ISSUED,
                Topic.INVOICE_ISSUED.dedupe_key(tenant_id, invoice_id),
                InvoiceIssued(
                    invoice_id=invoice_id,
                    contract_id=invoice.contract_id,
                    number=invoice.number,
                    total=str(invoice.total),
                    currency=invoice.currency.code,
                ),
            )
            return invoice

    async def store_documents(self, invoice: Invoice, html: str, pdf: bytes) -> bool:
        """Keep an invoice's HTML and PDF, rendered from `invoice`; False if it has changed since.

        A state change clears the documents (see `_write_state`): documents of the state
        before it, rendered meanwhile, are not kept over that.
        """
        stored = await self._pool.fetchval(
            "UPDATE invoices SET html = $4, pdf = $5"
            " WHERE tenant_id = $1 AND invoice_id = $2 AND state = $3 RETURNING true",
            invoice.tenant_id,
            invoice.invoice_id,
            str(invoice.state),
            html,
            pdf,
        )
        return bool(stored)

    async def invoice(self, tenant_id: str, invoice_id: str) -> Invoice:
        """One invoice of the tenant."""
        row = await self._pool.fetchrow(
            "SELECT document FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
            tenant_id,
            invoice_id,
        )
        if row is None:
            raise invoice_not_found(invoice_id)
        return invoice_from_dict(invoice_json(row["document"]))

    async def invoices(
        self,
        tenant_id: str,
        contract_id: str | None = None,
        limit: int = 100,
        *,
        customer_id: str | None = None,
        after: InvoicePosition | None = None,
    ) -> list[Invoice]:
        """The tenant's invoices (of one contract, one customer, if given), latest first.

        Ordered by billing date, revision and id, all descending; `after` resumes the listing
        just past an invoice's position (keyset pagination: stable while invoices are added).
        """
        rows = await self._pool.fetch(
            "SELECT document FROM invoices WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR contract_id = $2)"
            " AND ($3::text IS NULL OR customer_id = $3)"
            " AND ($4::timestamptz IS NULL"
            " OR (billing_date, revision, invoice_id) < ($4, $5::integer, $6::text))"
            " ORDER BY billing_date DESC, revision DESC, invoice_id DESC LIMIT $7",
            tenant_id,
            contract_id,
            customer_id,
            None if after is None else after.billing_date,
            None if after is None else after.revision,
            None if after is None else after.invoice_id,
            limit,
        )
        return [invoice_from_dict(invoice_json(row["document"])) for row in rows]

    async def document(self, tenant_id: str, invoice_id: str, kind: str) -> str | bytes | None:
        """An invoice's stored HTML (`html`) or PDF (`pdf`); None until rendered in its state."""
        column = {"html": "html", "pdf": "pdf"}[kind]
        row = await self._pool.fetchrow(
            f"SELECT {column} AS body FROM invoices WHERE tenant_id = $1 AND invoice_id = $2",
            tenant_id,
            invoice_id,
        )
        if row is None:
            raise invoice_not_found(invoice_id)
        body = row["body"]
        return None if body is None else (bytes(body) if kind == "pdf" else str(body))

    async def start_payment(
        self, invoice: Invoice, attempt: int, payment_method: str
    ) -> PaymentAttempt:
        """Record an attempt to collect (pending) under its key, or return it if recorded.

        An attempt the gateway refused (`payment_refused`) is pending again, with this method.
        """
        key = payment_key(invoice.invoice_id, attempt)
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO payment_attempts (tenant_id, idempotency_key, invoice_id, attempt,"
                " amount, currency, payment_method, status)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')"
                # A refused attempt charged nothing: it is made again, with today's method,
                # for what is due today (a credit note may have lowered it meanwhile).
                " ON CONFLICT (tenant_id, idempotency_key) DO UPDATE"
                " SET payment_method = EXCLUDED.payment_method, amount = EXCLUDED.amount,"
                " status = 'pending',"
                " failure_code = NULL, failure_message = NULL, settled_at = NULL"
                " WHERE payment_attempts.status = 'refused'",
                invoice.tenant_id,
                key,
                invoice.invoice_id,
                attempt,
                invoice.amount_due,
                invoice.currency.code,
                payment_method,
            )
            row = await conn.fetchrow(
                f"{_ATTEMPTS} WHERE tenant_id = $1 AND idempotency_key = $2",
                invoice.tenant_id,
                key,
            )
        assert row is not None, "the attempt was inserted or found above"
        return _attempt(row)

    async def payment_refused(self, tenant_id: str, key: str, code: str, message: str) -> None:
        """Record that the gateway refused a pending attempt outright: nothing was charged."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE payment_attempts SET status = 'refused', failure_code = $3,"
                " failure_message = $4, settled_at = now()"
                " WHERE tenant_id = $1 AND idempotency_key = $2 AND status = 'pending'",
                tenant_id,
                key,
                code,
                message,
            )

    async def payment_failed(self, failure: PaymentFailure, reference: str) -> None:
        """Record a failed attempt and its `payment.failed` notification, in one transaction.

        The notification is what starts dunning, so a recorded failure is never left without
        one. Recording the same failure again changes nothing.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            recorded = await conn.fetchval(
                "UPDATE payment_attempts SET status = 'failed', failure_code = $3,"
                " failure_message = $4, gateway_reference = $5, settled_at = $6"
                " WHERE tenant_id = $1 AND idempotency_key = $2 AND status = 'pending'"
                " RETURNING idempotency_key",
                failure.tenant_id,
                payment_key(failure.invoice_id, failure.attempt),
                failure.decline_code,
                failure.message,
                reference or None,
                failure.failed_at,
            )
            if recorded is not None:
                await write_outbox(
                    conn,
                    failure.tenant_id,
                    Topic.PAYMENT_FAILED,
                    failure.dedupe_key,
                    failure.payload(),
                )

    async def paid(
        self,
        tenant_id: str,
        invoice_id: str,
        key: str | None,
        reference: str,
        at: datetime,
        reinstatement: StandingRule,
    ) -> Invoice:
        """Mark an invoice paid and post the payment, once; `key` None: nothing was due.

        Its contract's status changes, in the same transaction, as `reinstatement` decides.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            invoice = await lock_invoice(conn, tenant_id, invoice_id)
            if invoice is None:
                raise invoice_not_found(invoice_id)
            charged = None
            if key is not None:
                charged = await conn.fetchval(
                    "UPDATE payment_attempts SET status = 'succeeded', gateway_reference = $3,"
                    " settled_at = now() WHERE tenant_id = $1 AND idempotency_key = $2"
                    " RETURNING amount",
                    tenant_id,
                    key,
                    reference,
                )
            payment = f"payment:{key or invoice_id}"
            actor = f"gateway:{key or 'none'}"
            return await settle_invoice(
                conn, invoice, payment, at, actor, reinstatement, amount=charged
            )

    async def record_payment(
        self,
        tenant_id: str,
        invoice_id: str,
        reference: str,
        at: datetime,
        actor: str,
        reinstatement: StandingRule,
    ) -> Invoice:
        """Mark an invoice paid by other means (a wire, a cheque), audited; once.

        Its contract's status changes as `reinstatement` decides, as for a collected payment.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            invoice = await lock_invoice(conn, tenant_id, invoice_id)
            if invoice is None:
                raise invoice_not_found(invoice_id)
            if invoice.state is InvoiceState.PAID:
                return invoice
            payment = f"payment:{invoice_id}:recorded"
            paid = await settle_invoice(conn, invoice, payment, at, actor, reinstatement)
            details = {"reference": reference, "amount": str(invoice.amount_due)}
            entry = AuditEntry(actor, "invoice.payment_recorded", invoice_id, details)
            await write_audit(conn, tenant_id, entry)
            return paid

    async def mark_uncollectible(
        self, tenant_id: str, invoice_id: str, at: datetime, actor: str, suspension: StandingRule
    ) -> Invoice:
        """Give up collecting an invoice; its contract's status changes as `suspension` decides.

        Both in one transaction. An invoice settled meanwhile (paid, void) is returned as it
        is, and its contract is left alone.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            invoice = await lock_invoice(conn, tenant_id, invoice_id)
            if invoice is None:
                raise invoice_not_found(invoice_id)
            if invoice.state is not InvoiceState.FINALIZED:
                return invoice
            check_move(invoice_id, invoice.state, InvoiceState.UNCOLLECTIBLE)
            written_off = replace(invoice, state=InvoiceState.UNCOLLECTIBLE)
            # Money stays in the receivable: the invoice is still owed and may yet be paid.
            await conn.execute(
                "UPDATE invoices SET state = $3, document = $4::jsonb, html = NULL, pdf = NULL"
                " WHERE tenant_id = $1 AND invoice_id = $2",
                tenant_id,
                invoice_id,
                str(written_off.state),
                json.dumps(invoice_to_dict(written_off)),
            )
            details = {"number": invoice.number, "total": str(invoice.total)}
            entry = AuditEntry(actor, "invoice.uncollectible", invoice_id, details)
            await write_audit(conn, tenant_id, entry)
            await _change_standing(conn, invoice, at, actor, suspension)
            return written_off

    async def unpaid_invoice_ids(self, tenant_id: str, contract_id: str) -> list[str]:
        """A contract's invoices still owed (finalized or uncollectible), oldest first."""
        rows = await self._pool.fetch(
            "SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND contract_id = $2"
            " AND state IN ('finalized', 'uncollectible') ORDER BY billing_date, revision",
            tenant_id,
            contract_id,
        )
        return [str(row["invoice_id"]) for row in rows]

    async def void(
        self, tenant_id: str, invoice_id: str, at: datetime, actor: str, reason: str
    ) -> Invoice:
        """Void an invoice: its ledger transfers reversed, its number kept (never reused)."""
        async with self._pool.acquire() as conn, conn.transaction():
            invoice = await lock_invoice(conn, tenant_id, invoice_id)
            if invoice is None:
                raise invoice_not_found(invoice_id)
            if invoice.state is InvoiceState.VOID:
                return invoice
            check_move(invoice_id, invoice.state, InvoiceState.VOID)
            if invoice.credit_note_ids:
                # Its credit notes' postings and refunds stand: voiding under them would
                # reverse what they already took back a second time.
                description = "it has credit notes: credit the rest of it instead"
                raise FailedPrecondition(
                    f"invoice {invoice_id!r}: {description}",
                    reason=INVOICE_STATE_CONFLICT,
                    violations=[
                        PreconditionViolation("CREDIT_NOTES", f"invoices/{invoice_id}", description)
                    ],
                    metadata={"invoice_id": invoice_id, "state": str(invoice.state)},
                )
            posted = await transfers_by_reference(conn, tenant_id, invoice_reference(invoice_id))
            await post_transfers(
                conn,
                tenant_id,
                invoice_void_transfers(reference=f"invoice-void:{invoice_id}", original=posted),
            )
            voided = replace(invoice, state=InvoiceState.VOID)
            await write_invoice_state(conn, voided, voided_at=at)
            details = {"reason": reason, "number": invoice.number}
            await write_audit(
                conn, tenant_id, AuditEntry(actor, "invoice.void", invoice_id, details)
            )
            return voided

    async def payment_retry(self, tenant_id: str, request_id: str) -> PaymentRetry | None:
        """The payment retry an operator's request id asked for, if it asked for one."""
        row = await self._pool.fetchrow(
            "SELECT request_id, invoice_id, workflow_id FROM payment_retries"
            " WHERE tenant_id = $1 AND request_id = $2",
            tenant_id,
            request_id,
        )
        return None if row is None else PaymentRetry(*row.values())

    async def record_payment_retry(
        self, tenant_id: str, retry: PaymentRetry, actor: str
    ) -> PaymentRetry:
        """Record an operator's retry (audited) once; the one its request id recorded first."""
        async with self._pool.acquire() as conn, conn.transaction():
            recorded = await conn.fetchval(
                "INSERT INTO payment_retries (tenant_id, request_id, invoice_id, workflow_id,"
                " actor) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING request_id",
                tenant_id,
                retry.request_id,
                retry.invoice_id,
                retry.workflow_id,
                actor,
            )
            if recorded is not None:
                details = {"request_id": retry.request_id, "workflow_id": retry.workflow_id}
                entry = AuditEntry(actor, "invoice.payment_retry", retry.invoice_id, details)
                await write_audit(conn, tenant_id, entry)
        found = await self.payment_retry(tenant_id, retry.request_id)
        assert found is not None, "recorded above, or by an earlier request"
        return found

    async def payment_attempts(self, tenant_id: str, invoice_id: str) -> list[PaymentAttempt]:
        """Every attempt to collect an invoice, in order."""
        rows = await self._pool.fetch(
            f"{_ATTEMPTS} WHERE tenant_id = $1 AND invoice_id = $2 ORDER BY attempt",
            tenant_id,
            invoice_id,
        )
        return [_attempt(row) for row in rows]


def payment_key(invoice_id: str, attempt: int) -> str:
    """The idempotency key of an invoice's n-th collection attempt (never from the run)."""
    return f"{invoice_id}:payment:{attempt}"


_ATTEMPTS = (
    "SELECT idempotency_key, invoice_id, attempt, amount, payment_method, status, failure_code,"
    " gateway_reference, created_at, failure_message, settled_at FROM payment_attempts"
)


def _attempt(row: asyncpg.Record) -> PaymentAttempt:
    return PaymentAttempt(
        row["idempotency_key"],
        row["invoice_id"],
        row["attempt"],
        row["amount"],
        row["payment_method"],
        row["status"],
        row["failure_code"],
        row["gateway_reference"],
        row["created_at"],
        row["failure_message"],
        row["settled_at"],
    )


async def settle_invoice(
    conn: Connection,
    invoice: Invoice,
    payment: str,
    at: datetime,
    actor: str,
    reinstatement: StandingRule,
    *,
    amount: Decimal | None = None,
) -> Invoice:
    """Mark a locked invoice paid, post `payment`, and change its contract as decided.

    `amount` is what the gateway charged, when it did; otherwise what is due (what credit
    notes took off was never owed, so it is never posted as paid). A charge made for more than
    a credit note lowered it to meanwhile leaves the difference owed back in the receivable.
    """
    if invoice.state is InvoiceState.PAID:
        return invoice
    check_move(invoice.invoice_id, invoice.state, InvoiceState.PAID)
    received = invoice.amount_due if amount is None else amount
    if received > 0:
        await post_transfers(
            conn,
            invoice.tenant_id,
            payment_transfers(reference=payment, contract_id=invoice.contract_id, amount=received),
        )
    paid = replace(invoice, state=InvoiceState.PAID, paid=received)
    await write_invoice_state(conn, paid, paid_at=at)
    await _change_standing(conn, invoice, at, actor, reinstatement)
    return paid


async def _change_standing(
    conn: Connection, before: Invoice, at: datetime, actor: str, rule: StandingRule
) -> None:
    """Write the contract status change `rule` decides for a change of invoice `before`."""
    # The contract's row lock comes first: a write-off or payment of another of its invoices,
    # committing meanwhile, is then either seen below or decided after this, never lost.
    status = await lock_contract_status(conn, before.tenant_id, before.contract_id)
    rows = await conn.fetch(
        "SELECT invoice_id FROM invoices WHERE tenant_id = $1 AND contract_id = $2"
        " AND state = 'uncollectible'",
        before.tenant_id,
        before.contract_id,
    )
    standing = ContractStanding(status, frozenset(str(row["invoice_id"]) for row in rows))
    change = rule(before, standing, at)
    if change is not None:
        await change_contract_status(conn, change, actor=actor)


async def lock_invoice(conn: Connection, tenant_id: str, invoice_id: str) -> Invoice | None:
    """The invoice, its row locked until the transaction ends; None if there is none."""
    row = await conn.fetchrow(
        "SELECT document FROM invoices WHERE tenant_id = $1 AND invoice_id = $2 FOR UPDATE",
        tenant_id,
        invoice_id,
    )
    return None if row is None else invoice_from_dict(invoice_json(row["document"]))


async def write_invoice_state(conn: Connection, invoice: Invoice, **moments: datetime) -> None:
    """Store an invoice's state, number and document, and the moment named by `moments`.

    Its rendered HTML and PDF showed the state before: they are cleared, and rendered again
    from the new state when next read (`Invoicing.document`).
    """
    (column, at), *_ = moments.items()
    await conn.execute(
        f"UPDATE invoices SET state = $3, number = $4, document = $5::jsonb, {column} = $6,"
        " html = NULL, pdf = NULL WHERE tenant_id = $1 AND invoice_id = $2",
        invoice.tenant_id,
        invoice.invoice_id,
        str(invoice.state),
        invoice.number,
        json.dumps(invoice_to_dict(invoice)),
        at,
    )


def invoice_not_found(invoice_id: str) -> NotFound:
    """The error for an invoice the tenant does not have (unknown, or another tenant's)."""
    return NotFound(
        f"no invoice {invoice_id!r}",
        reason="INVOICE_NOT_FOUND",
        metadata={"invoice_id": invoice_id},
    )


def invoice_json(value: object) -> dict[str, Any]:
    """A stored JSON document (asyncpg gives jsonb as text) as a dict."""
    data = json.loads(value) if isinstance(value, str) else value
    assert isinstance(data, dict), f"an invoice document is a JSON object, got {value!r}"
    return data
