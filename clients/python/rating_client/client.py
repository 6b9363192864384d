"""The caller library: a typed async client for internal services that rate usage.

It sets a deadline on every call, retries transient failures (UNAVAILABLE, ABORTED,
DEADLINE_EXCEEDED) with the same event or reservation id — safe, because the server is
idempotent on them — and turns the server's status details into typed exceptions, so callers write
`except InsufficientCredit:` instead of parsing strings.

    async with RatingClient("127.0.0.1:50051", api_key) as rating:
        answer = await rating.rate_and_debit(
            event_id="req-81f3", customer_id="acme", event_type="llm.completion",
            properties={"tokens": "1200", "model": "gpt-4o", "token_type": "input"},
        )
        print(answer.charge, [(d.pool_id, d.amount) for d in answer.draws])

High-volume callers stream instead: one result per event, none raised.

        async for result in rating.stream_rate_and_debit(events):
            if not result.ok:
                log.warning("not rated", event_id=result.event_id, error=result.answer)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from rating_client.errors import RETRYABLE, typed_error
from rating_client.gen.rating.v1 import (
    admin_pb2_grpc,
    catalog_pb2_grpc,
    contract_pb2,
    contract_pb2_grpc,
    discount_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
    ops_pb2,
    ops_pb2_grpc,
    portal_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
    webhook_pb2,
    webhook_pb2_grpc,
)
from rating_client.streaming import DEFAULT_WINDOW, EventResult, EventStream

T = TypeVar("T")


class RatingClient:
    """An authenticated channel to the rating service, with retries and typed errors."""

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout_seconds: float = 2.0,
        attempts: int = 4,
        backoff_seconds: float = 0.05,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = (
            aio.insecure_channel(target)
            if credentials is None
            else aio.secure_channel(target, credentials)
        )
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff = backoff_seconds
        self.rating = rating_pb2_grpc.RatingServiceStub(self._channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self.contracts = contract_pb2_grpc.ContractServiceStub(self._channel)
        self.discounts = discount_pb2_grpc.DiscountServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.invoicing = invoice_pb2_grpc.InvoiceServiceStub(self._channel)
        self.ops = ops_pb2_grpc.OpsServiceStub(self._channel)
        self.portal = portal_pb2_grpc.PortalServiceStub(self._channel)
        self.webhooks = webhook_pb2_grpc.WebhookServiceStub(self._channel)

    async def __aenter__(self) -> RatingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close(grace=None)

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """Call any RPC with this client's key and deadline; typed errors, no retries."""
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except aio.AioRpcError as error:
            raise typed_error(error) from None

    async def idempotent(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """Call an RPC that is idempotent on an id in the request, retrying transient failures."""
        for attempt in range(self._attempts):
            try:
                return await method(request, metadata=self._metadata, timeout=self._timeout)
            except aio.AioRpcError as error:
                if error.code() not in RETRYABLE or attempt == self._attempts - 1:
                    raise typed_error(error) from None
            # Full jitter: concurrent callers that failed together do not retry together.
            await asyncio.sleep(random.uniform(0, self._backoff * 2**attempt))
        raise AssertionError("unreachable: the last attempt raises")

    async def rate_and_debit(
        self,
        *,
        event_id: str,
        customer_id: str,
        event_type: str,
        properties: Mapping[str, str],
        timestamp: datetime | None = None,
    ) -> rating_pb2.RateAndDebitResponse:
        """Rate one event and debit its contract; safe to call again with the same event_id."""
        request = rating_pb2.RateAndDebitRequest(
            event=usage_event(event_id, customer_id, event_type, properties, timestamp)
        )
        return await self.idempotent(self.rating.RateAndDebit, request)

    def stream_rate_and_debit(
        self,
        events: AsyncIterable[rating_pb2.UsageEvent] | Iterable[rating_pb2.UsageEvent],
        *,
        window: int = DEFAULT_WINDOW,
    ) -> AsyncIterator[EventResult]:
        """Rate many events on one stream: each event's result, the answer or its typed error.

        Each event is answered as `rate_and_debit` would answer it, and a refusal is a result,
        not raised, so one bad event does not end the loop. Events are taken from `events` as
        the stream has room (at most `window` unanswered). Results come in the order of the
        events but for one answered UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED, which is sent
        again (same id) up to the client's attempts and comes when answered; `position` is its
        index in `events`. An event unanswered for the client's timeout, a lost connection or a
        server draining opens a new stream that sends every unanswered event again (the
        server's idempotency makes it safe). Raises only what ends the stream for good: a
        refused key or role, or a transient failure past every attempt (the events with no
        result yet are then unknown: send them again with the same ids).
        """
        stream = EventStream(
            # No request iterator: EventStream writes the events itself.
            lambda: self.rating.StreamRateAndDebit(metadata=self._metadata),  # type: ignore[call-arg]
            events,
            timeout_seconds=self._timeout,
            attempts=self._attempts,
            backoff_seconds=self._backoff,
            window=window,
        )
        return stream.results()

    async def authorize(
        self,
        *,
        reservation_id: str,
        customer_id: str,
        product_key: str,
        amount: Decimal,
        ttl_seconds: int = 0,
        timestamp: datetime | None = None,
    ) -> rating_pb2.AuthorizeResponse:
        """Hold an estimated amount; safe to call again with the same reservation_id."""
        request = rating_pb2.AuthorizeRequest(
            reservation_id=reservation_id,
            customer_id=customer_id,
            product_key=product_key,
            amount=str(amount),
            ttl_seconds=ttl_seconds,
            timestamp=_timestamp(timestamp),
        )
        return await self.idempotent(self.rating.Authorize, request)

    async def capture(
        self, *, reservation_id: str, event: rating_pb2.UsageEvent
    ) -> rating_pb2.CaptureResponse:
        """Post the actual usage of a reservation; safe to retry with the same event id."""
        request = rating_pb2.CaptureRequest(reservation_id=reservation_id, event=event)
        return await self.idempotent(self.rating.Capture, request)

    async def void(self, reservation_id: str) -> rating_pb2.VoidResponse:
        """Release a reservation; safe to retry."""
        return await self.idempotent(
            self.rating.Void, rating_pb2.VoidRequest(reservation_id=reservation_id)
        )

    async def balances(self, customer_id: str) -> rating_pb2.GetBalancesResponse:
        """Every pool of the customer's contract in force."""
        return await self.idempotent(
            self.rating.GetBalances, rating_pb2.GetBalancesRequest(customer_id=customer_id)
        )

    async def usage(self, customer_id: str) -> rating_pb2.GetUsageResponse:
        """Period-to-date usage with a forecast."""
        return await self.idempotent(
            self.rating.GetUsage, rating_pb2.GetUsageRequest(customer_id=customer_id)
        )

    async def margins(self, customer_id: str) -> rating_pb2.GetMarginsResponse:
        """Revenue, free credit drawn, cost and margin per product in the period now."""
        return await self.idempotent(
            self.rating.GetMargins, rating_pb2.GetMarginsRequest(customer_id=customer_id)
        )

    async def check_entitlement(
        self, customer_id: str, feature_key: str
    ) -> rating_pb2.CheckEntitlementResponse:
        """May the customer use a feature now, and how much is left."""
        return await self.idempotent(
            self.rating.CheckEntitlement,
            rating_pb2.CheckEntitlementRequest(customer_id=customer_id, feature_key=feature_key),
        )

    async def preview_invoice(self, customer_id: str) -> invoice_pb2.Invoice:
        """The open period's invoice of the customer's contract, as it stands now (a draft)."""
        reply = await self.idempotent(
            self.rating.PreviewInvoice, rating_pb2.PreviewInvoiceRequest(customer_id=customer_id)
        )
        return reply.invoice

    async def invoice(self, invoice_id: str) -> invoice_pb2.Invoice:
        """One invoice (admin or ops key)."""
        reply = await self.idempotent(
            self.invoicing.GetInvoice, invoice_pb2.GetInvoiceRequest(invoice_id=invoice_id)
        )
        return reply.invoice

    async def invoices(
        self,
        *,
        contract_id: str = "",
        customer_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> invoice_pb2.ListInvoicesResponse:
        """One page of invoices, latest first; pass its next_page_token for the next page."""
        request = invoice_pb2.ListInvoicesRequest(
            contract_id=contract_id,
            customer_id=customer_id,
            page_size=page_size,
            page_token=page_token,
        )
        return await self.idempotent(self.invoicing.ListInvoices, request)

    async def invoice_document(
        self, invoice_id: str, fmt: str
    ) -> invoice_pb2.GetInvoiceDocumentResponse:
        """An invoice's rendered document, `fmt` "html" or "pdf": its bytes and content type."""
        request = invoice_pb2.GetInvoiceDocumentRequest(invoice_id=invoice_id, format=fmt)
        return await self.idempotent(self.invoicing.GetInvoiceDocument, request)

    async def payment_attempts(self, invoice_id: str) -> list[invoice_pb2.PaymentAttempt]:
        """Every attempt to collect an invoice, in order."""
        reply = await self.idempotent(
            self.invoicing.ListPaymentAttempts,
            invoice_pb2.ListPaymentAttemptsRequest(invoice_id=invoice_id),
        )
        return list(reply.attempts)

    async def void_invoice(
        self, invoice_id: str, *, reason: str, regenerate: bool = False
    ) -> invoice_pb2.VoidInvoiceResponse:
        """Void an issued invoice (and, with `regenerate`, start its next revision); ops or
        admin key. Safe to retry: voiding a void invoice answers it again."""
        request = invoice_pb2.VoidInvoiceRequest(
            invoice_id=invoice_id, reason=reason, regenerate=regenerate
        )
        return await self.idempotent(self.invoicing.VoidInvoice, request)

    async def record_payment(
        self, invoice_id: str, *, reference: str
    ) -> invoice_pb2.RecordPaymentResponse:
        """Record a payment made outside the gateway; ops or admin key. Safe to retry."""
        request = invoice_pb2.RecordPaymentRequest(invoice_id=invoice_id, reference=reference)
        return await self.idempotent(self.invoicing.RecordPayment, request)

    async def create_customer(self, customer_id: str, name: str) -> contract_pb2.Customer:
        """Create a customer (admin key). Not retried: a retry would find the id taken."""
        request = contract_pb2.CreateCustomerRequest(customer_id=customer_id, name=name)
        reply = await self.call(self.contracts.CreateCustomer, request)
        return reply.customer

    async def customers(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> contract_pb2.ListCustomersResponse:
        """One page of the tenant's customers, by id."""
        request = contract_pb2.ListCustomersRequest(page_size=page_size, page_token=page_token)
        return await self.idempotent(self.contracts.ListCustomers, request)

    async def create_contract(self, terms: contract_pb2.Contract) -> contract_pb2.Contract:
        """Create a contract with these terms (admin key). Not retried: the request has no id,
        and a retry could open a second contract (or be refused as overlapping the first)."""
        request = contract_pb2.CreateContractRequest(contract=terms)
        reply = await self.call(self.contracts.CreateContract, request)
        return reply.contract

    async def contract(self, contract_id: str) -> contract_pb2.GetContractResponse:
        """A contract and its commitments with their balances now."""
        request = contract_pb2.GetContractRequest(contract_id=contract_id)
        return await self.idempotent(self.contracts.GetContract, request)

    async def contracts_of(
        self, customer_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> contract_pb2.ListContractsResponse:
        """One page of contracts (of one customer, if given), by customer then term start."""
        request = contract_pb2.ListContractsRequest(
            customer_id=customer_id, page_size=page_size, page_token=page_token
        )
        return await self.idempotent(self.contracts.ListContracts, request)

    async def add_commitment(
        self, request: contract_pb2.AddCommitmentRequest
    ) -> contract_pb2.AddCommitmentResponse:
        """Add a credit or commitment (admin key); safe to retry with the same grant_id."""
        return await self.idempotent(self.contracts.AddCommitment, request)

    async def top_up(self, request: contract_pb2.TopUpRequest) -> contract_pb2.TopUpResponse:
        """Add bought credit (admin key); safe to retry with the same top_up_id."""
        return await self.idempotent(self.contracts.TopUp, request)

    async def adjust_balance(
        self, request: contract_pb2.AdjustBalanceRequest
    ) -> contract_pb2.AdjustBalanceResponse:
        """Add to or remove from a pool (admin key); safe to retry with the same adjustment_id."""
        return await self.idempotent(self.contracts.AdjustBalance, request)

    async def set_payment_method(
        self, contract_id: str, payment_method: str
    ) -> contract_pb2.SetPaymentMethodResponse:
        """Save a contract's payment method; its invoices in dunning are retried with it (admin)."""
        request = contract_pb2.SetPaymentMethodRequest(
            contract_id=contract_id, payment_method=payment_method
        )
        return await self.idempotent(self.contracts.SetPaymentMethod, request)

    async def cancel_contract(self, contract_id: str) -> None:
        """End a contract now; its billing workflow issues the final invoice (admin key)."""
        request = contract_pb2.CancelContractRequest(contract_id=contract_id)
        await self.idempotent(self.contracts.CancelContract, request)

    async def bill_now(self, contract_id: str) -> None:
        """Invoice the contract's ended period without the grace window (admin or ops key)."""
        await self.idempotent(
            self.contracts.BillNow, contract_pb2.BillNowRequest(contract_id=contract_id)
        )

    async def create_webhook_endpoint(
        self, url: str, topics: Sequence[str] = ()
    ) -> webhook_pb2.CreateWebhookEndpointResponse:
        """Add a webhook endpoint; the answer holds its secret, shown this once (admin key).

        Not retried: the request has no id, and a retry could add a second endpoint.
        """
        request = webhook_pb2.CreateWebhookEndpointRequest(url=url, topics=topics)
        return await self.call(self.webhooks.CreateWebhookEndpoint, request)

    async def webhook_endpoints(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> webhook_pb2.ListWebhookEndpointsResponse:
        """One page of the tenant's webhook endpoints, enabled and disabled."""
        request = webhook_pb2.ListWebhookEndpointsRequest(
            page_size=page_size, page_token=page_token
        )
        return await self.idempotent(self.webhooks.ListWebhookEndpoints, request)

    async def disable_webhook_endpoint(self, endpoint_id: str) -> webhook_pb2.WebhookEndpoint:
        """Stop sending to an endpoint (its log is kept); admin key. Safe to retry."""
        reply = await self.idempotent(
            self.webhooks.DisableWebhookEndpoint,
            webhook_pb2.DisableWebhookEndpointRequest(endpoint_id=endpoint_id),
        )
        return reply.endpoint

    async def webhook_deliveries(
        self, *, event_id: str = "", limit: int = 0
    ) -> list[webhook_pb2.WebhookDelivery]:
        """The latest delivery attempts (of one notification, if given), oldest of them first."""
        reply = await self.idempotent(
            self.webhooks.ListWebhookDeliveries,
            webhook_pb2.ListWebhookDeliveriesRequest(event_id=event_id, limit=limit),
        )
        return list(reply.deliveries)

    async def redeliver_webhook(self, *, event_id: str, endpoint_id: str, request_id: str) -> str:
        """Send a notification to an endpoint again; the delivering workflow's id. Safe to
        retry with the same request_id: it is sent once."""
        request = webhook_pb2.RedeliverWebhookRequest(
            event_id=event_id, endpoint_id=endpoint_id, request_id=request_id
        )
        reply = await self.idempotent(self.webhooks.RedeliverWebhook, request)
        return reply.workflow_id

    async def failed_invoices(
        self, contract_id: str = "", *, since: datetime | None = None, limit: int = 0
    ) -> list[ops_pb2.InvoiceRun]:
        """Invoice workflows whose latest run failed or is stuck, latest first (ops key)."""
        request = ops_pb2.ListFailedInvoicesRequest(contract_id=contract_id, limit=limit)
        if since is not None:
            request.since.CopyFrom(_timestamp(since))
        reply = await self.idempotent(self.ops.ListFailedInvoices, request)
        return list(reply.runs)

    async def invoice_run(self, workflow_id: str) -> ops_pb2.GetInvoiceRunResponse:
        """An invoice workflow's latest run, step by step, and its replays so far (ops key)."""
        return await self.idempotent(
            self.ops.GetInvoiceRun, ops_pb2.GetInvoiceRunRequest(workflow_id=workflow_id)
        )

    async def replays(
        self, workflow_id: str = "", *, limit: int = 0, page_token: str = ""
    ) -> ops_pb2.ListReplaysResponse:
        """One page of the replay log (of one workflow, if given), latest first (ops key)."""
        request = ops_pb2.ListReplaysRequest(
            workflow_id=workflow_id, limit=limit, page_token=page_token
        )
        return await self.idempotent(self.ops.ListReplays, request)

    async def replay_invoices(
        self,
        workflow_ids: Sequence[str] = (),
        *,
        reason: str,
        reset_to: str = "",
        dry_run: bool = False,
        wait_seconds: int = 0,
        replay_all: bool = False,
        contract_id: str = "",
        since: datetime | None = None,
    ) -> ops_pb2.ReplayInvoicesResponse:
        """Replay invoice workflows, named or (`replay_all`) every failed one, narrowed by
        contract and since; or, dry run, say what would happen. Ops key.

        Not retried: a replay is logged each time it is asked for.
        """
        request = ops_pb2.ReplayInvoicesRequest(
            workflow_ids=workflow_ids,
            all=replay_all,
            contract_id=contract_id,
            reason=reason,
            reset_to=reset_to,
            dry_run=dry_run,
            wait_seconds=wait_seconds,
        )
        if since is not None:
            request.since.CopyFrom(_timestamp(since))
        try:
            return await self.ops.ReplayInvoices(
                request, metadata=self._metadata, timeout=self._timeout + wait_seconds
            )
        except aio.AioRpcError as error:
            raise typed_error(error) from None


def usage_event(
    event_id: str,
    customer_id: str,
    event_type: str,
    properties: Mapping[str, str],
    timestamp: datetime | None = None,
) -> rating_pb2.UsageEvent:
    """A UsageEvent message; the timestamp defaults to now and is fixed for every retry."""
    return rating_pb2.UsageEvent(
        event_id=event_id,
        customer_id=customer_id,
        event_type=event_type,
        timestamp=_timestamp(timestamp),
        properties=dict(properties),
    )


def _timestamp(at: datetime | None) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(at or datetime.now(UTC))
    return message
