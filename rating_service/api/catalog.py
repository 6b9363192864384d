"""CatalogService: products, rate cards and Quote, converted between protos and catalog forms."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2
from grpc import aio

from rating_client.gen.rating.v1 import catalog_pb2, catalog_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page
from rating_service.api.wire import requested_at, timestamp
from rating_service.core.auth import Role
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import PricingUnit, format_decimal
from rating_service.core.pricing.breakdown import PriceLine
from rating_service.core.pricing.matrix import Matrix
from rating_service.core.pricing.meter import Product, product_to_dict
from rating_service.core.pricing.quote import Quote, UsageLine, usage_line
from rating_service.core.pricing.rate_card import RateCard, rate_card_to_dict
from rating_service.core.rating.rate import contract_in_force
from rating_service.core.rating.rated_event import MeterChange
from rating_service.services.catalog import Catalogs
from rating_service.store.books import ContractBooks


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """Converts CatalogService messages to catalog calls and back."""

    def __init__(self, catalogs: Catalogs, books: ContractBooks) -> None:
        self._catalogs = catalogs
        self._books = books

    @allow(Role.ADMIN)
    async def CreateProduct(
        self, request: catalog_pb2.CreateProductRequest, context: aio.ServicerContext
    ) -> catalog_pb2.CreateProductResponse:
        created = await self._catalogs.create_product(current_caller(), _fields(request.product))
        return catalog_pb2.CreateProductResponse(product=product_message(created))

    @allow(Role.ADMIN)
    async def UpdateProduct(
        self, request: catalog_pb2.UpdateProductRequest, context: aio.ServicerContext
    ) -> catalog_pb2.UpdateProductResponse:
        updated = await self._catalogs.update_product(current_caller(), _fields(request.product))
        return catalog_pb2.UpdateProductResponse(product=product_message(updated))

    @allow(Role.ADMIN, Role.OPS, Role.RATER)
    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: aio.ServicerContext
    ) -> catalog_pb2.GetProductResponse:
        found = await self._catalogs.product(current_caller(), request.key)
        return catalog_pb2.GetProductResponse(product=product_message(found))

    @allow(Role.ADMIN, Role.OPS, Role.RATER)
    async def ListProducts(
        self, request: catalog_pb2.ListProductsRequest, context: aio.ServicerContext
    ) -> catalog_pb2.ListProductsResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str,), violations)
        violations.raise_if_any()
        catalog = await self._catalogs.catalog(current_caller().tenant_id)
        products, token = page.of_sorted(
            [catalog.products[k] for k in sorted(catalog.products)], lambda p: (p.key,)
        )
        return catalog_pb2.ListProductsResponse(
            products=[product_message(p) for p in products], next_page_token=token
        )

    @allow(Role.ADMIN)
    async def CreateRateCard(
        self, request: catalog_pb2.CreateRateCardRequest, context: aio.ServicerContext
    ) -> catalog_pb2.CreateRateCardResponse:
        created = await self._catalogs.create_rate_card(
            current_caller(), rate_card_fields(request.rate_card)
        )
        return catalog_pb2.CreateRateCardResponse(rate_card=rate_card_message(created))

    @allow(Role.ADMIN)
    async def UpdateRateCard(
        self, request: catalog_pb2.UpdateRateCardRequest, context: aio.ServicerContext
    ) -> catalog_pb2.UpdateRateCardResponse:
        created, closed = await self._catalogs.update_rate_card(
            current_caller(), rate_card_fields(request.rate_card)
        )
        response = catalog_pb2.UpdateRateCardResponse(rate_card=rate_card_message(created))
        if closed is not None:
            response.closed.CopyFrom(rate_card_message(closed))
        return response

    @allow(Role.ADMIN, Role.OPS, Role.RATER)
    async def GetRateCard(
        self, request: catalog_pb2.GetRateCardRequest, context: aio.ServicerContext
    ) -> catalog_pb2.GetRateCardResponse:
        versions = await self._catalogs.rate_card(current_caller(), request.key)
        return catalog_pb2.GetRateCardResponse(versions=[rate_card_message(v) for v in versions])

    @allow(Role.ADMIN, Role.OPS, Role.RATER)
    async def ListRateCards(
        self, request: catalog_pb2.ListRateCardsRequest, context: aio.ServicerContext
    ) -> catalog_pb2.ListRateCardsResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str, int), violations)
        violations.raise_if_any()
        catalog = await self._catalogs.catalog(current_caller().tenant_id)
        cards, token = page.of_sorted(
            [card for key in sorted(catalog.rate_cards) for card in catalog.versions(key)],
            lambda card: (card.key, card.version),
        )
        return catalog_pb2.ListRateCardsResponse(
            rate_cards=[rate_card_message(card) for card in cards], next_page_token=token
        )

    @allow(Role.ADMIN, Role.OPS, Role.RATER)
    async def Quote(
        self, request: catalog_pb2.QuoteRequest, context: aio.ServicerContext
    ) -> catalog_pb2.QuoteResponse:
        lines = usage_lines(request.lines, "lines")
        period_to_date = usage_lines(request.period_to_date, "period_to_date")
        at = requested_at(request)
        caller = current_caller()
        contract = None
        if request.customer_id:
            book = await self._books.book(caller.tenant_id, request.customer_id)
            contract = contract_in_force(book.contracts, at or datetime.now(UTC))
        result = await self._catalogs.quote(
            caller, request.rate_card_key, at, lines, period_to_date, contract
        )
        return quote_message(result)


def usage_lines(lines: Any, section: str) -> list[UsageLine]:
    """Usage lines from the wire, every bad field reported at once."""
    violations = ViolationCollector()
    parsed = []
    for index, line in enumerate(lines):
        try:
            parsed.append(
                usage_line(line.product_key, line.quantity, line.dimensions, f"{section}[{index}]")
            )
        except InvalidArgument as error:
            violations.violations.extend(error.violations)
    violations.raise_if_any()
    return parsed


def _fields(message: Any) -> dict[str, object]:
    fields: dict[str, object] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return fields


def rate_card_fields(message: catalog_pb2.RateCard) -> dict[str, object]:
    """The catalog form of a RateCard message (its pricing unit as a code or a custom unit)."""
    fields = _fields(message)
    unit = message.pricing_unit
    if unit.currency:
        fields["pricing_unit"] = unit.currency
    elif "pricing_unit" not in fields:
        fields["pricing_unit"] = None
    return fields


def product_message(product: Product) -> catalog_pb2.Product:
    """The wire form of a product."""
    return json_format.ParseDict(product_to_dict(product), catalog_pb2.Product())


def pricing_unit_message(unit: PricingUnit) -> catalog_pb2.PricingUnit:
    """The wire form of a pricing unit."""
    if unit.is_currency:
        return catalog_pb2.PricingUnit(currency=unit.code)
    return catalog_pb2.PricingUnit(
        custom_unit=unit.code,
        invoice_currency=unit.invoice_currency.code,
        rate_to_invoice_currency=format_decimal(unit.rate_to_invoice_currency),
    )


def rate_card_message(card: RateCard) -> catalog_pb2.RateCard:
    """The wire form of a rate card version."""
    message = catalog_pb2.RateCard(
        key=card.key,
        version=card.version,
        effective_from=timestamp(card.effective_from),
        pricing_unit=pricing_unit_message(card.pricing_unit),
    )
    if card.effective_until is not None:
        message.effective_until.CopyFrom(timestamp(card.effective_until))
    prices = rate_card_to_dict(card)["prices"]
    assert isinstance(prices, dict)
    for product_key, price in prices.items():
        struct = struct_pb2.Struct()
        struct.update(price)
        message.prices[product_key].CopyFrom(struct)
    return message


def quote_message(result: Quote) -> catalog_pb2.QuoteResponse:
    """The wire form of a quote, each line with its breakdown."""
    card = result.rate_card
    response = catalog_pb2.QuoteResponse(
        rate_card_key=card.key,
        rate_card_version=card.version,
        pricing_unit=pricing_unit_message(card.pricing_unit),
        total=format_decimal(result.total),
        total_in_invoice_currency=format_decimal(result.total_in_invoice_currency),
        invoice_currency=card.pricing_unit.invoice_currency.code,
    )
    for period_line in result.period_lines:
        model = card.price_of(period_line.product_key)
        names = model.dimensions if isinstance(model, Matrix) else ()
        response.period_lines.append(
            catalog_pb2.QuotedPeriodLine(
                product_key=period_line.product_key,
                cell=dict(zip(names, period_line.cell, strict=False)),
                kind=period_line.kind,
                amount=format_decimal(period_line.amount),
            )
        )
    for quoted in result.lines:
        model = card.price_of(quoted.usage.product_key)
        dimension_names = model.dimensions if isinstance(model, Matrix) else ()
        response.lines.append(
            catalog_pb2.QuotedLine(
                product_key=quoted.usage.product_key,
                quantity=format_decimal(quoted.usage.quantity),
                dimensions=quoted.usage.dimensions,
                amount=format_decimal(quoted.priced.amount),
                breakdown=[
                    price_line_message(line, dimension_names) for line in quoted.priced.lines
                ],
                meter=catalog_pb2.MeterChange(
                    aggregation=str(quoted.aggregation),
                    before=format_decimal(quoted.quantity_before),
                    after=format_decimal(quoted.quantity_after),
                ),
            )
        )
    return response


def meter_change_message(change: MeterChange | None) -> catalog_pb2.MeterChange | None:
    """The wire form of how an event moved its meter's aggregated quantity (None: unset)."""
    if change is None:
        return None
    return catalog_pb2.MeterChange(
        aggregation=change.aggregation,
        window=change.window,
        before=format_decimal(change.before),
        after=format_decimal(change.after),
        note=change.note,
    )


def price_line_message(line: PriceLine, dimension_names: tuple[str, ...]) -> catalog_pb2.PriceLine:
    """The wire form of one breakdown line."""
    message = catalog_pb2.PriceLine(
        item=str(line.item),
        quantity=format_decimal(line.quantity),
        unit_price=format_decimal(line.unit_price),
        flat_fee=format_decimal(line.flat_fee),
        amount=format_decimal(line.amount),
        cell=dict(zip(dimension_names, line.cell, strict=False)),
    )
    if line.tier is not None:
        message.tier = line.tier
    return message
