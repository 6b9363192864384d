"""RatingService: RateAndDebit, its batch and stream forms, balances, usage, invoice preview."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta

from grpc import aio

from rating_client.gen.rating.v1 import rating_pb2, rating_pb2_grpc
from rating_service.api import limits
from rating_service.api.catalog import meter_change_message, price_line_message
from rating_service.api.edge import allow, current_caller
from rating_service.api.errors import rich_status, status_code
from rating_service.api.invoice import invoice_message
from rating_service.api.wire import requested_at, timestamp
from rating_service.background import stop_task
from rating_service.core.auth import Role
from rating_service.core.billing.margins import Margin
from rating_service.core.errors import DomainError, InvalidArgument, ViolationCollector
from rating_service.core.money import format_decimal, parse_decimal
from rating_service.core.pricing.meter import UsageEvent
from rating_service.faults import unexpected_failure
from rating_service.services.invoice import Invoicing
from rating_service.services.rating.engine import DebitEngine, Outcome
from rating_service.services.rating.entitlements import Entitlements
from rating_service.services.rating.reservations import DEFAULT_TTL, Reservations
from rating_service.services.rating.views import AccountViews

MAX_BATCH_EVENTS = 1000


class RatingServicer(rating_pb2_grpc.RatingServiceServicer):
    """Converts RatingService messages to engine calls and back."""

    def __init__(
        self,
        engine: DebitEngine,
        views: AccountViews,
        reservations: Reservations,
        invoicing: Invoicing,
        entitlements: Entitlements,
        max_message_bytes: int,
    ) -> None:
        self._engine = engine
        self._entitlements = entitlements
        self._views = views
        self._reservations = reservations
        self._invoicing = invoicing
        self._max_message_bytes = max_message_bytes

    @allow(Role.RATER, Role.ADMIN)
    async def RateAndDebit(
        self, request: rating_pb2.RateAndDebitRequest, context: aio.ServicerContext
    ) -> rating_pb2.RateAndDebitResponse:
        outcome = await self._rate(request.event, "event")
        return rated_message(outcome)

    @allow(Role.RATER, Role.ADMIN)
    async def BatchRateAndDebit(
        self, request: rating_pb2.BatchRateAndDebitRequest, context: aio.ServicerContext
    ) -> rating_pb2.BatchRateAndDebitResponse:
        if len(request.events) > MAX_BATCH_EVENTS:
            raise InvalidArgument.of_field("events", f"at most {MAX_BATCH_EVENTS} per call")
        # Submitted together and in order, the events share the engine's next group commit.
        outcomes: dict[int, Outcome | DomainError] = {}
        valid: list[tuple[int, tuple[str, str, UsageEvent]]] = []
        for n, event in enumerate(request.events):
            try:
                # The edge leaves each event's limits to us, so a bad one fails alone.
                valid.append((n, _usage(event, f"events[{n}]", check_limits=True)))
            except DomainError as error:
                outcomes[n] = error
        rated = await self._engine.rate_in_order(
            current_caller().tenant_id, [item for _, item in valid]
        )
        for (n, _), outcome in zip(valid, rated, strict=True):
            outcomes[n] = outcome
        response = rating_pb2.BatchRateAndDebitResponse()
        for outcome in (outcomes[n] for n in range(len(request.events))):
            if isinstance(outcome, Outcome):
                response.results.add(response=rated_message(outcome))
            else:
                response.results.add(
                    error=rating_pb2.BatchItemError(
                        code=status_code(outcome).value[0],
                        message=outcome.message,
                        reason=outcome.reason,
                    )
                )
        return response

    @allow(Role.RATER, Role.ADMIN)
    async def StreamRateAndDebit(
        self,
        request_iterator: AsyncIterator[rating_pb2.StreamRateAndDebitRequest],
        context: aio.ServicerContext,
    ) -> AsyncIterator[rating_pb2.StreamRateAndDebitResponse]:
        tenant_id = current_caller().tenant_id
        # Events are submitted as they are read, so they are debited in stream order and share
        # group commits; answers go out in the same order. The edge's window bounds this queue.
        answers: asyncio.Queue[_Streamed | None] = asyncio.Queue()

        async def read() -> None:
            try:
                position = 0
                async for request in request_iterator:
                    answer = await self._submit(tenant_id, request)
                    answers.put_nowait(_Streamed(position, request.event.event_id, answer))
                    position += 1
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read(), name="stream-reader")
        try:
            while (streamed := await answers.get()) is not None:
                yield await streamed.message()
            await reader  # a failure to read ends the stream
        finally:
            await stop_task(reader)
            while not answers.empty():  # the stream was cut short: nobody awaits these now
                left = answers.get_nowait()
                if left is not None:
                    left.forget()

    async def _submit(
        self, tenant_id: str, request: rating_pb2.StreamRateAndDebitRequest
    ) -> Awaitable[Outcome] | DomainError:
        """Check one streamed event as the edge and RateAndDebit would, and queue it."""
        try:
            limits.check(request, self._max_message_bytes)
            customer_id, event_id, usage = _usage(request.event, "event")
        except DomainError as error:
            return error
        return await self._engine.submit(tenant_id, customer_id, event_id, usage)

    @allow(Role.RATER, Role.ADMIN)
    async def Authorize(
        self, request: rating_pb2.AuthorizeRequest, context: aio.ServicerContext
    ) -> rating_pb2.AuthorizeResponse:
        violations = ViolationCollector()
        for name in ("reservation_id", "customer_id", "product_key"):
            if not getattr(request, name):
                violations.add(name, "is required")
        if not request.HasField("timestamp"):
            violations.add("timestamp", "is required (retries must send the same one)")
        violations.raise_if_any()
        ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else DEFAULT_TTL
        hold, replay, balances = await self._reservations.authorize(
            current_caller().tenant_id,
            request.reservation_id,
            request.customer_id,
            request.product_key,
            parse_decimal(request.amount, "amount"),
            request.timestamp.ToDatetime(tzinfo=UTC),
            ttl,
        )
        return rating_pb2.AuthorizeResponse(
            reservation_id=hold.reservation_id,
            replay=replay,
            holds=[
                rating_pb2.PoolDraw(pool_id=pool, amount=format_decimal(amount))
                for pool, amount in hold.holds
            ],
            expire_time=timestamp(hold.expires_at),
            balances=[
                rating_pb2.PoolBalance(
                    pool_id=pool_id,
                    remaining=format_decimal(remaining),
                    pending=format_decimal(pending),
                )
                for pool_id, remaining, pending in balances
            ],
        )

    @allow(Role.RATER, Role.ADMIN)
    async def Capture(
        self, request: rating_pb2.CaptureRequest, context: aio.ServicerContext
    ) -> rating_pb2.CaptureResponse:
        if not request.reservation_id:
            raise InvalidArgument.of_field("reservation_id", "is required")
        outcome = await self._rate(request.event, "event", capture=request.reservation_id)
        released = await self._reservations.released(
            current_caller().tenant_id, request.reservation_id, outcome.result.charge
        )
        return rating_pb2.CaptureResponse(
            reservation_id=request.reservation_id,
            debit=rated_message(outcome),
            released=format_decimal(released),
        )

    @allow(Role.RATER, Role.ADMIN)
    async def Void(
        self, request: rating_pb2.VoidRequest, context: aio.ServicerContext
    ) -> rating_pb2.VoidResponse:
        if not request.reservation_id:
            raise InvalidArgument.of_field("reservation_id", "is required")
        hold, replay = await self._reservations.void(
            current_caller().tenant_id, request.reservation_id
        )
        return rating_pb2.VoidResponse(
            reservation_id=hold.reservation_id, released=format_decimal(hold.held), replay=replay
        )

    @allow(Role.RATER, Role.ADMIN, Role.OPS)
    async def GetBalances(
        self, request: rating_pb2.GetBalancesRequest, context: aio.ServicerContext
    ) -> rating_pb2.GetBalancesResponse:
        at = requested_at(request) or datetime.now(UTC)
        balances = await self._views.balances(current_caller().tenant_id, request.customer_id, at)
        response = rating_pb2.GetBalancesResponse(
            contract_id=balances.contract_id,
            invoice_currency=balances.invoice_currency,
            available=format_decimal(balances.available),
            overage=format_decimal(balances.overage),
        )
        for pool in balances.pools:
            view = response.pools.add(
                pool_id=pool.pool_id,
                kind=str(pool.kind),
                priority=pool.priority,
                scope=sorted(pool.scope or ()),
                original=format_decimal(pool.original_amount),
                remaining=format_decimal(pool.balance),
                pending=format_decimal(pool.pending),
                start_time=timestamp(pool.starts_at),
                cost_basis=format_decimal(pool.cost_basis),
            )
            if pool.expires_at is not None:
                view.expire_time.CopyFrom(timestamp(pool.expires_at))
        return response

    @allow(Role.RATER, Role.ADMIN, Role.OPS)
    async def CheckEntitlement(
        self, request: rating_pb2.CheckEntitlementRequest, context: aio.ServicerContext
    ) -> rating_pb2.CheckEntitlementResponse:
        violations = ViolationCollector()
        for name in ("customer_id", "feature_key"):
            if not getattr(request, name):
                violations.add(name, "is required")
        violations.raise_if_any()
        found = await self._entitlements.check(
            current_caller().tenant_id,
            request.customer_id,
            request.feature_key,
            requested_at(request),
        )
        response = rating_pb2.CheckEntitlementResponse(
            feature_key=found.feature_key,
            allowed=found.allowed,
            kind="" if found.kind is None else str(found.kind),
        )
        for name in ("limit", "used", "remaining"):
            value = getattr(found, name)
            if value is not None:
                setattr(response, name, format_decimal(value))
        if found.period is not None:
            response.period_start.CopyFrom(timestamp(found.period[0]))
            response.period_end.CopyFrom(timestamp(found.period[1]))
        return response

    @allow(Role.ADMIN, Role.OPS)
    async def GetMargins(
        self, request: rating_pb2.GetMarginsRequest, context: aio.ServicerContext
    ) -> rating_pb2.GetMarginsResponse:
        if not request.customer_id:
            raise InvalidArgument.of_field("customer_id", "is required")
        at = requested_at(request) or datetime.now(UTC)
        found = await self._views.margins(current_caller().tenant_id, request.customer_id, at)
        return rating_pb2.GetMarginsResponse(
            contract_id=found.contract_id,
            invoice_currency=found.invoice_currency,
            period_start=timestamp(found.period_start),
            period_end=timestamp(found.period_end),
            products=[margin_message(row) for row in found.products],
            total=margin_message(found.total),
        )

    @allow(Role.RATER, Role.ADMIN, Role.OPS)
    async def GetUsage(
        self, request: rating_pb2.GetUsageRequest, context: aio.ServicerContext
    ) -> rating_pb2.GetUsageResponse:
        at = requested_at(request) or datetime.now(UTC)
        usage = await self._views.usage(current_caller().tenant_id, request.customer_id, at)
        response = rating_pb2.GetUsageResponse(
            contract_id=usage.contract_id,
            invoice_currency=usage.invoice_currency,
            period_start=timestamp(usage.period_start),
            period_end=timestamp(usage.period_end),
            total=format_decimal(usage.total),
            forecast_total=format_decimal(usage.forecast_total),
        )
        for row in usage.rows:
            response.rows.add(
                product_key=row.product_key,
                dimensions=row.dimensions,
                quantity=format_decimal(row.quantity),
                amount=format_decimal(row.amount),
                forecast_quantity=format_decimal(row.forecast_quantity),
                forecast_amount=format_decimal(row.forecast_amount),
                cost=format_decimal(row.cost),
            )
        return response

    @allow(Role.RATER, Role.ADMIN, Role.OPS)
    async def PreviewInvoice(
        self, request: rating_pb2.PreviewInvoiceRequest, context: aio.ServicerContext
    ) -> rating_pb2.PreviewInvoiceResponse:
        tenant_id = current_caller().tenant_id
        if bool(request.customer_id) == bool(request.contract_id):
            violations = ViolationCollector()
            for name in ("customer_id", "contract_id"):
                violations.add(name, "give exactly one of customer_id and contract_id")
            violations.raise_if_any()
        if request.customer_id:
            draft = await self._invoicing.preview_for_customer(tenant_id, request.customer_id)
        else:
            draft = await self._invoicing.preview(tenant_id, request.contract_id)
        return rating_pb2.PreviewInvoiceResponse(invoice=invoice_message(draft))

    async def _rate(
        self, event: rating_pb2.UsageEvent, path: str, capture: str | None = None
    ) -> Outcome:
        customer_id, event_id, usage = _usage(event, path)
        return await self._engine.rate(
            current_caller().tenant_id, customer_id, event_id, usage, capture
        )


class _Streamed:
    """A streamed event on its way: where it was in the stream, and its answer to come."""

    __slots__ = ("answer", "event_id", "position")

    def __init__(self, position: int, event_id: str, answer: Awaitable[Outcome] | DomainError):
        self.position = position
        self.event_id = event_id
        self.answer = answer

    async def message(self) -> rating_pb2.StreamRateAndDebitResponse:
        """The answer on the wire: RateAndDebit's response, or the status it would fail with."""
        response = rating_pb2.StreamRateAndDebitResponse(
            event_id=self.event_id, position=self.position
        )
        try:
            if isinstance(self.answer, DomainError):
                raise self.answer
            rated_message(await self.answer, response.response)
        except DomainError as error:
            response.error.CopyFrom(rich_status(error))
        except Exception as error:
            response.error.CopyFrom(rich_status(unexpected_failure("StreamRateAndDebit", error)))
        return response

    def forget(self) -> None:
        """Let the answer arrive with no one to take it (its event is debited or not, as usual)."""
        if isinstance(self.answer, asyncio.Future):
            self.answer.add_done_callback(_retrieved)


def _retrieved(answer: asyncio.Future[Outcome]) -> None:
    if not answer.cancelled():
        answer.exception()  # marks a refusal as retrieved: nobody is there to be told


def _usage(
    event: rating_pb2.UsageEvent, path: str, *, check_limits: bool = False
) -> tuple[str, str, UsageEvent]:
    """(customer id, event id, usage event) from the wire, every missing or bad field named.

    `check_limits` for an event the edge did not check (one of a batch's).
    """
    violations = ViolationCollector(limits.violations(event, f"{path}.") if check_limits else [])
    for name in ("event_id", "customer_id", "event_type"):
        if not getattr(event, name):
            violations.add(f"{path}.{name}", "is required")
    if not event.HasField("timestamp"):
        violations.add(f"{path}.timestamp", "is required (retries must send the same one)")
    violations.raise_if_any()
    usage = UsageEvent(
        event.event_type, event.timestamp.ToDatetime(tzinfo=UTC), dict(event.properties)
    )
    return event.customer_id, event.event_id, usage


def rated_message(
    outcome: Outcome, response: rating_pb2.RateAndDebitResponse | None = None
) -> rating_pb2.RateAndDebitResponse:
    """The wire form of a rated event, written into `response` if given (no copy of it made)."""
    result = outcome.result
    if response is None:
        response = rating_pb2.RateAndDebitResponse()
    response.event_id = result.event_id
    response.replay = outcome.replay
    response.contract_id = result.contract_id
    response.invoice_currency = result.invoice_currency
    response.charge = format_decimal(result.charge)
    response.overage = format_decimal(result.overage)
    response.period_start.CopyFrom(timestamp(result.period_start))
    response.period_end.CopyFrom(timestamp(result.period_end))
    for line in result.lines:
        response.lines.add(
            product_key=line.product_key,
            quantity=format_decimal(line.quantity),
            dimensions=line.dimensions,
            amount=format_decimal(line.amount),
            amount_in_invoice_currency=format_decimal(line.amount_in_invoice_currency),
            breakdown=[price_line_message(p, line.cell_dimensions) for p in line.breakdown],
            meter=meter_change_message(line.meter),
        )
    for pool_id, amount in result.draws:
        response.draws.add(pool_id=pool_id, amount=format_decimal(amount))
    for pool_id, remaining, pending in result.balances:
        response.balances.add(
            pool_id=pool_id, remaining=format_decimal(remaining), pending=format_decimal(pending)
        )
    for alert in result.alerts:
        response.alerts.add(
            kind=alert.kind,
            subject=alert.subject,
            threshold=format_decimal(alert.threshold),
            value=format_decimal(alert.value),
        )
    return response


def margin_message(margin: Margin) -> rating_pb2.MarginRow:
    """The wire form of a margin row."""
    row = rating_pb2.MarginRow(
        product_key=margin.product_key,
        revenue=format_decimal(margin.revenue),
        free_credit=format_decimal(margin.free_credit),
        cost=format_decimal(margin.cost),
        margin=format_decimal(margin.margin),
    )
    if margin.margin_percent is not None:
        row.margin_percent = format_decimal(margin.margin_percent)
    return row
