"""PortalService: signed portal links, and the one customer's reads a link opens.

The reads are the same answers the operator RPCs give (balances, usage, contract, invoices,
Quote), asked of the same servicers with the customer taken from the link, never from the
request: a portal caller cannot name another customer, and an invoice of another customer is
NOT_FOUND, exactly as an unknown one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from grpc import aio

from rating_client.gen.rating.v1 import (
    catalog_pb2,
    contract_pb2,
    invoice_pb2,
    portal_pb2,
    portal_pb2_grpc,
    rating_pb2,
)
from rating_service.api.catalog import CatalogServicer
from rating_service.api.contract import ContractServicer
from rating_service.api.edge import allow, current_caller
from rating_service.api.invoice import InvoiceServicer
from rating_service.api.rating import RatingServicer
from rating_service.api.wire import requested_at, timestamp
from rating_service.core.auth import Caller, Role
from rating_service.core.errors import InvalidArgument, NotFound
from rating_service.core.money import format_decimal
from rating_service.services.auth import KeyRing
from rating_service.services.rating.views import AccountViews


class PortalServicer(portal_pb2_grpc.PortalServiceServicer):
    """Signs portal links; answers a link's reads through the operator servicers, scoped."""

    def __init__(
        self,
        keyring: KeyRing,
        views: AccountViews,
        link_seconds: int,
        console_url: str,
        rating: RatingServicer,
        contracts: ContractServicer,
        invoices: InvoiceServicer,
        catalog: CatalogServicer,
    ) -> None:
        self._keyring = keyring
        self._views = views
        self._link_seconds = link_seconds
        self._console_url = console_url.rstrip("/")
        self._rating = rating
        self._contracts = contracts
        self._invoices = invoices
        self._catalog = catalog

    @allow(Role.ADMIN, Role.OPS)
    async def CreatePortalSession(
        self, request: portal_pb2.CreatePortalSessionRequest, context: aio.ServicerContext
    ) -> portal_pb2.CreatePortalSessionResponse:
        if not request.customer_id:
            raise InvalidArgument.of_field("customer_id", "is required")
        if request.ttl_seconds < 0:
            raise InvalidArgument.of_field("ttl_seconds", "must not be negative")
        # An unknown customer is NOT_FOUND now, not a link that opens onto nothing.
        await self._contracts.GetCustomer(
            contract_pb2.GetCustomerRequest(customer_id=request.customer_id), context
        )
        seconds = request.ttl_seconds or self._link_seconds
        link = self._keyring.open_portal(
            current_caller(), request.customer_id, timedelta(seconds=seconds)
        )
        return portal_pb2.CreatePortalSessionResponse(
            token=link.token,
            expire_time=timestamp(link.grant.expires_at),
            url=f"{self._console_url}/portal/{link.token}" if self._console_url else "",
        )

    @allow(Role.PORTAL)
    async def GetPortalAccount(
        self, request: portal_pb2.GetPortalAccountRequest, context: aio.ServicerContext
    ) -> portal_pb2.GetPortalAccountResponse:
        customer_id = _customer(current_caller())
        at = request.at if request.HasField("at") else None
        customer = await self._contracts.GetCustomer(
            contract_pb2.GetCustomerRequest(customer_id=customer_id), context
        )
        balances = await self._rating.GetBalances(
            rating_pb2.GetBalancesRequest(customer_id=customer_id, at=at), context
        )
        usage = await self._rating.GetUsage(
            rating_pb2.GetUsageRequest(customer_id=customer_id, at=at), context
        )
        contract = await self._contracts.GetContract(
            contract_pb2.GetContractRequest(contract_id=balances.contract_id), context
        )
        _, days = await self._views.daily_spend(
            current_caller().tenant_id, customer_id, requested_at(request) or datetime.now(UTC)
        )
        return portal_pb2.GetPortalAccountResponse(
            customer=customer.customer,
            contract=contract.contract,
            balances=balances,
            usage=usage,
            daily_spend=[
                portal_pb2.DailySpend(
                    day=d.day.isoformat(), amount=format_decimal(d.amount), events=d.events
                )
                for d in days
            ],
        )

    @allow(Role.PORTAL)
    async def ListPortalInvoices(
        self, request: portal_pb2.ListPortalInvoicesRequest, context: aio.ServicerContext
    ) -> portal_pb2.ListPortalInvoicesResponse:
        found = await self._invoices.ListInvoices(
            invoice_pb2.ListInvoicesRequest(
                customer_id=_customer(current_caller()),
                page_size=request.page_size,
                page_token=request.page_token,
            ),
            context,
        )
        return portal_pb2.ListPortalInvoicesResponse(
            invoices=found.invoices, next_page_token=found.next_page_token
        )

    @allow(Role.PORTAL)
    async def GetPortalInvoiceDocument(
        self, request: portal_pb2.GetPortalInvoiceDocumentRequest, context: aio.ServicerContext
    ) -> portal_pb2.GetPortalInvoiceDocumentResponse:
        if not request.invoice_id:
            raise InvalidArgument.of_field("invoice_id", "is required")
        found = await self._invoices.GetInvoice(
            invoice_pb2.GetInvoiceRequest(invoice_id=request.invoice_id), context
        )
        if found.invoice.customer_id != _customer(current_caller()):
            # The same answer as an unknown invoice: a link does not reveal what else exists.
            raise NotFound(f"no invoice {request.invoice_id}", reason="INVOICE_NOT_FOUND")
        document = await self._invoices.GetInvoiceDocument(
            invoice_pb2.GetInvoiceDocumentRequest(
                invoice_id=request.invoice_id, format=request.format
            ),
            context,
        )
        return portal_pb2.GetPortalInvoiceDocumentResponse(
            content=document.content, content_type=document.content_type
        )

    @allow(Role.PORTAL)
    async def PortalQuote(
        self, request: portal_pb2.PortalQuoteRequest, context: aio.ServicerContext
    ) -> portal_pb2.PortalQuoteResponse:
        quote = await self._catalog.Quote(
            catalog_pb2.QuoteRequest(
                customer_id=_customer(current_caller()),
                at=request.at if request.HasField("at") else None,
                lines=request.lines,
                period_to_date=request.period_to_date,
            ),
            context,
        )
        return portal_pb2.PortalQuoteResponse(quote=quote)


def _customer(caller: Caller) -> str:
    """The portal caller's one customer (the edge let only portal callers in)."""
    assert caller.customer_id, "a portal read reached by a caller without a customer"
    return caller.customer_id
