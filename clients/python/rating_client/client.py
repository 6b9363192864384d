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
    contract_pb2_grpc,
    invoice_pb2,
    invoice_pb2_grpc,
    ops_pb2,
    ops_pb2_grpc,
    portal_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
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
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.invoicing = invoice_pb2_grpc.InvoiceServiceStub(self._channel)
        self.ops = ops_pb2_grpc.OpsServiceStub(self._channel)
        self.portal = portal_pb2_grpc.PortalServiceStub(self._channel)

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

    async def failed_invoices(self, contract_id: str = "") -> list[ops_pb2.InvoiceRun]:
        """Invoice workflows whose latest run failed or is stuck, latest first (ops key)."""
        reply = await self.idempotent(
            self.ops.ListFailedInvoices, ops_pb2.ListFailedInvoicesRequest(contract_id=contract_id)
        )
        return list(reply.runs)

    async def replay_invoices(
        self,
        workflow_ids: Sequence[str],
        *,
        reason: str,
        reset_to: str = "",
        dry_run: bool = False,
        wait_seconds: int = 0,
    ) -> ops_pb2.ReplayInvoicesResponse:
        """Replay invoice workflows (or, dry run, say what would happen); ops key.

        Not retried: a replay is logged each time it is asked for.
        """
        request = ops_pb2.ReplayInvoicesRequest(
            workflow_ids=workflow_ids,
            reason=reason,
            reset_to=reset_to,
            dry_run=dry_run,
            wait_seconds=wait_seconds,
        )
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
