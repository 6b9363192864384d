"""Invoicing: the steps of the invoice workflow, and the live preview, over the stores.

Each step is idempotent on business keys (contract, billing date, invoice id, attempt), so the
workflow may retry it, and ops may replay a whole invoice in a new run, without a second
invoice, number or charge. The workflows in `rating_service/workflows/` only orchestrate
these steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rating_service.core.billing.compose import InvoiceInputs, compose_invoice
from rating_service.core.billing.document import InvoiceParties, render_html, render_pdf
from rating_service.core.billing.dunning import (
    GATEWAY_TIMEOUT_CODE,
    next_retry_at,
    reinstatement_on_payment,
    suspension_on_write_off,
)
from rating_service.core.billing.invoice import Invoice, InvoiceState, invoice_id_for
from rating_service.core.billing.schedule import BillingDate, billing_date, next_billing_date
from rating_service.core.contracts.contract import (
    Contract,
    billing_period_containing,
    cancelled,
)
from rating_service.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
)
from rating_service.core.rating.rate import contract_covering
from rating_service.failpoints import AFTER_NUMBER_ASSIGNED, AFTER_PAYMENT_TAKEN, Failpoints
from rating_service.outbox.topics import PaymentFailure
from rating_service.payments.gateway import ChargeRequest, PaymentGateway, UnknownPaymentMethod
from rating_service.services.catalog import utc_now
from rating_service.store.catalog import CatalogStore
from rating_service.store.contract import ContractStore
from rating_service.store.invoice import InvoiceStore, PaymentAttempt, payment_key
from rating_service.store.tenant import TenantStore


class Collection(StrEnum):
    """What an attempt to collect an invoice ended in."""

    PAID = "paid"
    NOTHING_DUE = "nothing_due"
    """The total is zero: paid without charging anyone."""
    NO_PAYMENT_METHOD = "no_payment_method"
    """Nothing saved to charge: the invoice waits to be paid by other means."""
    DECLINED = "declined"
    GATEWAY_TIMEOUT = "gateway_timeout"
    """The gateway never answered: recorded as a failure, and the next attempt uses a new key."""
    ALREADY_SETTLED = "already_settled"
    """Paid or void before this attempt."""


PAYMENT_METHOD_UNKNOWN = "PAYMENT_METHOD_UNKNOWN"
"""Error reason: the gateway refused the saved payment method; fix it, then replay."""


@dataclass(frozen=True, slots=True)
class CollectionResult:
    """An attempt's outcome; when it failed, the decline code, message and next retry time.

    `next_retry_at` None after a failure means the dunning schedule is used up.
    """

    outcome: Collection
    decline_code: str = ""
    message: str = ""
    next_retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DunningPlan:
    """Where dunning of an invoice stands, from what the invoice has recorded.

    `attempts` is the highest attempt number settled (the next one is `attempts + 1`);
    `next_retry_at` None means the schedule is used up (the invoice is, or is about to be,
    uncollectible).
    """

    contract_id: str
    state: InvoiceState
    attempts: int
    next_retry_at: datetime | None


UNANSWERED = "the gateway did not answer; the charge's outcome is unknown"
"""The message recorded for an attempt the gateway never answered."""

INVOICE_NOT_RENDERED = "INVOICE_NOT_RENDERED"
"""FailedPrecondition reason: the invoice is a draft, whose documents are not rendered."""


class Invoicing:
    """Closes periods, drafts, finalizes, renders and collects invoices; previews the next one.

    Built without a payment gateway (as the API server builds it) it does everything but
    collect: reads, previews and renders need no gateway.
    """

    def __init__(
        self,
        contracts: ContractStore,
        invoices: InvoiceStore,
        catalogs: CatalogStore,
        tenants: TenantStore,
        gateway: PaymentGateway | None = None,
        clock: Callable[[], datetime] = utc_now,
        failpoints: Failpoints | None = None,
    ) -> None:
        self._contracts = contracts
        self._invoices = invoices
        self._catalogs = catalogs
        self._tenants = tenants
        self._gateway = gateway
        self._clock = clock
        self._failpoints = failpoints or Failpoints()

    @property
    def invoices(self) -> InvoiceStore:
        """The invoice store, for reads."""
        return self._invoices

    async def next_billing_date(
        self, tenant_id: str, contract_id: str, after: datetime | None
    ) -> BillingDate | None:
        """The contract's next billing date after `after`, as its terms are now."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        return next_billing_date(contract, after)

    async def close_period(self, tenant_id: str, contract_id: str, at: datetime) -> None:
        """Close the period that ends on billing date `at`: its late events are refused now."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        arrears = billing_date(contract, at).arrears
        if arrears is not None:
            await self._invoices.close_period(tenant_id, contract_id, arrears)

    async def draft(
        self, tenant_id: str, contract_id: str, at: datetime, revision: int = 0
    ) -> Invoice | None:
        """Compose and store the draft invoice of billing date `at` (None: nothing to bill).

        An opening date with nothing due in advance issues no invoice; every period end does,
        even at zero, so a customer's invoices have no holes.
        """
        contract = await self._contracts.contract(tenant_id, contract_id)
        invoice = await self._compose(contract, billing_date(contract, at), revision)
        if invoice.billing_date <= contract.term_start and not invoice.lines:
            return None
        return await self._invoices.save_draft(invoice)

    async def preview(self, tenant_id: str, contract_id: str) -> Invoice:
        """The open period's invoice as it would be issued if no more usage arrived."""
        contract = await self._contracts.contract(tenant_id, contract_id)
        now = self._clock()
        if not contract.covers(now):
            description = "the contract has no open billing period now"
            raise FailedPrecondition(
                f"contract {contract_id!r}: {description}",
                reason="NO_OPEN_PERIOD",
                violations=[
                    PreconditionViolation("CONTRACT_TERM", f"contracts/{contract_id}", description)
                ],
            )
        end = billing_period_containing(contract, now)[1]
        return await self._compose(contract, billing_date(contract, end), 0)

    async def preview_for_customer(self, tenant_id: str, customer_id: str) -> Invoice:
        """The open period's invoice of the customer's contract in force now (see `preview`)."""
        contracts = await self._contracts.contracts(tenant_id, customer_id)
        contract = contract_covering(contracts, self._clock())
        return await self.preview(tenant_id, contract.contract_id)

    async def _compose(self, contract: Contract, when: BillingDate, revision: int) -> Invoice:
        tenant_id, contract_id = contract.tenant_id, contract.contract_id
        _, catalog = await self._catalogs.load(tenant_id)
        commitments = await self._contracts.commitments(tenant_id, contract_id)
        period = None
        if when.arrears is not None:
            period = await self._invoices.closed_period(tenant_id, contract_id, when.arrears[0])
        term_usage = (
            await self._invoices.term_usage(tenant_id, contract_id) if when.is_final else None
        )
        return compose_invoice(
            InvoiceInputs(
                tenant_id,
                contract,
                when,
                catalog,
                usage=period.usage if period is not None else (),
                drawn=period.drawn if period is not None else None,
                pools=tuple(c.pool for c in commitments),
                billed_commitments=await self._invoices.billed_commitments(
                    tenant_id, contract_id, invoice_id_for(contract_id, when.at, revision)
                ),
                term_usage=term_usage,
                revision=revision,
            )
        )

    async def finalize(self, tenant_id: str, invoice_id: str) -> Invoice:
        """Number the draft (gapless, per tenant) and post it to the ledger; once."""
        invoice = await self._invoices.finalize(tenant_id, invoice_id, self._clock())
        self._failpoints.hit(AFTER_NUMBER_ASSIGNED)
        return invoice

    async def render(self, tenant_id: str, invoice_id: str) -> None:
        """Render and keep the invoice's HTML and PDF (the same invoice renders the same)."""
        await self._render(await self._invoices.invoice(tenant_id, invoice_id))

    async def _render(self, invoice: Invoice) -> tuple[str, bytes]:
        """The invoice's HTML and PDF as it is, kept unless its state changed meanwhile."""
        parties = await self.parties(invoice)
        # Laying out a PDF is pure CPU for tens of milliseconds: off the event loop, so the
        # worker's other activities and workflow tasks keep moving meanwhile.
        html, pdf = await asyncio.to_thread(_documents, invoice, parties)
        await self._invoices.store_documents(invoice, html, pdf)
        return html, pdf

    async def document(self, tenant_id: str, invoice_id: str, kind: str) -> str | bytes:
        """The invoice's HTML (`html`) or PDF (`pdf`) showing its state now; none for a draft.

        Documents are kept once rendered; a change of state (paid, void, uncollectible) clears
        them, and they are rendered again here, so a paid invoice's PDF never says "Amount due".
        """
        body = await self._invoices.document(tenant_id, invoice_id, kind)
        if body is not None:
            return body
        invoice = await self._invoices.invoice(tenant_id, invoice_id)
        if invoice.state is InvoiceState.DRAFT:
            description = "not rendered yet: an invoice is rendered after it is finalized"
            raise FailedPrecondition(
                f"invoice {invoice_id!r}: {description}",
                reason=INVOICE_NOT_RENDERED,
                violations=[
                    PreconditionViolation("DOCUMENT", f"invoices/{invoice_id}", description)
                ],
                metadata={"invoice_id": invoice_id},
            )
        html, pdf = await self._render(invoice)
        return pdf if kind == "pdf" else html

    async def payment_attempts(self, tenant_id: str, invoice_id: str) -> list[PaymentAttempt]:
        """Every attempt to collect one of the tenant's invoices (NotFound for another's)."""
        await self._invoices.invoice(tenant_id, invoice_id)
        return await self._invoices.payment_attempts(tenant_id, invoice_id)

    async def contract_of(self, invoice: Invoice) -> Contract:
        """The contract an invoice bills, with its status as it is now."""
        return await self._contracts.contract(invoice.tenant_id, invoice.contract_id)

    async def parties(self, invoice: Invoice) -> InvoiceParties:
        """Who the invoice is from and to."""
        tenant = await self._tenants.tenant(invoice.tenant_id)
        customer = await self._contracts.customer(invoice.tenant_id, invoice.customer_id)
        return InvoiceParties(tenant.name, customer.name, customer.customer_id)

    async def collect(self, tenant_id: str, invoice_id: str, attempt: int) -> CollectionResult:
        """Charge the contract's saved payment method for the invoice: attempt n, at most once.

        The idempotency key comes from the invoice and the attempt number, so a retried or
        replayed attempt gets the gateway's first answer and never charges twice.
        """
        invoice = await self._invoices.invoice(tenant_id, invoice_id)
        if invoice.state not in (InvoiceState.FINALIZED, InvoiceState.UNCOLLECTIBLE):
            return CollectionResult(Collection.ALREADY_SETTLED)
        if invoice.amount_due <= 0:
            await self._invoices.paid(
                tenant_id, invoice_id, None, "", self._clock(), reinstatement_on_payment
            )
            return CollectionResult(Collection.NOTHING_DUE)
        contract = await self._contracts.contract(tenant_id, invoice.contract_id)
        if not contract.payment_method:
            return CollectionResult(Collection.NO_PAYMENT_METHOD)
        recorded = await self._invoices.start_payment(invoice, attempt, contract.payment_method)
        if recorded.status == "failed":
            return _failed(contract, recorded)
        if self._gateway is None:
            raise RuntimeError(
                "this Invoicing has no payment gateway: build it with one to collect"
            )
        key = payment_key(invoice_id, attempt)
        try:
            outcome = await self._gateway.charge(
                ChargeRequest(
                    key, recorded.payment_method, recorded.amount, invoice.currency.code, invoice_id
                )
            )
        except UnknownPaymentMethod as refused:
            # Nothing was charged and the key is unused: record it, and fail loudly so ops fix
            # the token and replay (dunning the customer for our data would not help).
            await self._invoices.payment_refused(tenant_id, key, refused.code, str(refused))
            description = (
                f"the gateway refused payment method {recorded.payment_method!r}: {refused};"
                " set the right one (`rating contracts payment-method`) and replay the invoice"
            )
            raise FailedPrecondition(
                f"invoice {invoice_id!r}: {description}",
                reason=PAYMENT_METHOD_UNKNOWN,
                violations=[
                    PreconditionViolation(
                        "PAYMENT_METHOD", f"contracts/{contract.contract_id}", description
                    )
                ],
                metadata={"invoice_id": invoice_id, "contract_id": contract.contract_id},
            ) from refused
        if not outcome.succeeded:
            failure = self._failure(
                contract, invoice_id, attempt, outcome.decline_code, outcome.message
            )
            await self._invoices.payment_failed(failure, outcome.gateway_reference)
            return CollectionResult(
                Collection.DECLINED, outcome.decline_code, outcome.message, failure.next_retry_at
            )
        self._failpoints.hit(AFTER_PAYMENT_TAKEN)
        await self._invoices.paid(
            tenant_id,
            invoice_id,
            key,
            outcome.gateway_reference,
            self._clock(),
            reinstatement_on_payment,
        )
        return CollectionResult(Collection.PAID)

    async def collection_unanswered(
        self, tenant_id: str, invoice_id: str, attempt: int
    ) -> CollectionResult:
        """Record attempt n, which the gateway never answered, as failed (and announce it).

        Its outcome is unknown; the simulated gateway never charges then, and a real gateway's
        adapter looks the earlier key up before charging under the next one.
        """
        invoice = await self._invoices.invoice(tenant_id, invoice_id)
        if invoice.state not in (InvoiceState.FINALIZED, InvoiceState.UNCOLLECTIBLE):
            return CollectionResult(Collection.ALREADY_SETTLED)
        contract = await self._contracts.contract(tenant_id, invoice.contract_id)
        if not contract.payment_method:
            return CollectionResult(Collection.NO_PAYMENT_METHOD)
        recorded = await self._invoices.start_payment(invoice, attempt, contract.payment_method)
        if recorded.status == "failed":
            return _failed(contract, recorded)
        if recorded.status == "succeeded":
            return CollectionResult(Collection.PAID)
        failure = self._failure(contract, invoice_id, attempt, GATEWAY_TIMEOUT_CODE, UNANSWERED)
        await self._invoices.payment_failed(failure, "")
        return CollectionResult(
            Collection.GATEWAY_TIMEOUT, failure.decline_code, failure.message, failure.next_retry_at
        )

    def _failure(
        self, contract: Contract, invoice_id: str, attempt: int, code: str, message: str
    ) -> PaymentFailure:
        """Attempt n failing now, with when the contract's schedule retries it."""
        failed_at = self._clock()
        return PaymentFailure(
            contract.tenant_id,
            invoice_id,
            contract.contract_id,
            attempt,
            code,
            message,
            failed_at,
            next_retry_at(contract.dunning, attempt, failed_at),
        )

    async def dunning_plan(self, tenant_id: str, invoice_id: str) -> DunningPlan:
        """The invoice's state, attempts so far, and when the contract's schedule retries next."""
        invoice = await self._invoices.invoice(tenant_id, invoice_id)
        contract = await self._contracts.contract(tenant_id, invoice.contract_id)
        attempts = await self._invoices.payment_attempts(tenant_id, invoice_id)
        if not attempts:
            # Nothing tried yet: dunning starts with an attempt at once.
            return DunningPlan(contract.contract_id, invoice.state, 0, self._clock())
        last = max(attempts, key=lambda recorded: recorded.attempt)
        if last.status == "pending":
            # Its answer was lost (a run ended mid-charge): ask again under the same key, at
            # once, and the gateway answers what it did then; a new key could charge twice.
            return DunningPlan(contract.contract_id, invoice.state, last.attempt - 1, self._clock())
        failed_at = last.settled_at or last.created_at
        return DunningPlan(
            contract.contract_id,
            invoice.state,
            last.attempt,
            next_retry_at(contract.dunning, last.attempt, failed_at),
        )

    async def give_up_collecting(self, tenant_id: str, invoice_id: str, actor: str) -> Invoice:
        """Mark the invoice uncollectible and suspend its contract (rating refuses it then)."""
        return await self._invoices.mark_uncollectible(
            tenant_id, invoice_id, self._clock(), actor, suspension_on_write_off
        )

    async def record_payment(
        self, tenant_id: str, invoice_id: str, reference: str, actor: str
    ) -> Invoice:
        """Record a payment made by other means (a wire); reinstates a suspended contract."""
        if not reference.strip():
            raise InvalidArgument.of_field("reference", "say how it was paid (a wire reference)")
        return await self._invoices.record_payment(
            tenant_id, invoice_id, reference, self._clock(), actor, reinstatement_on_payment
        )

    async def void(self, tenant_id: str, invoice_id: str, actor: str, reason: str) -> Invoice:
        """Void an invoice for a correction (audited); `regenerate` the next revision after."""
        if not reason.strip():
            raise InvalidArgument.of_field("reason", "say why the invoice is voided")
        return await self._invoices.void(tenant_id, invoice_id, self._clock(), actor, reason)

    async def end_contract(self, tenant_id: str, contract_id: str, actor: str) -> Contract:
        """Cancel a contract now: its term ends, and its final invoice comes next."""
        return await self._contracts.end_contract(
            tenant_id, contract_id, self._clock(), actor, cancelled
        )


def _failed(contract: Contract, recorded: PaymentAttempt) -> CollectionResult:
    """A recorded failed attempt's result, its next retry counted from when it failed."""
    code = recorded.failure_code or ""
    failed_at = recorded.settled_at or recorded.created_at
    return CollectionResult(
        Collection.GATEWAY_TIMEOUT if code == GATEWAY_TIMEOUT_CODE else Collection.DECLINED,
        code,
        recorded.failure_message or "",
        next_retry_at(contract.dunning, recorded.attempt, failed_at),
    )


def _documents(invoice: Invoice, parties: InvoiceParties) -> tuple[str, bytes]:
    """The invoice's HTML and PDF."""
    return render_html(invoice, parties), render_pdf(invoice, parties)
