"""CatalogService over real gRPC and PostgreSQL, and `rating catalog apply / export`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from rating_client.errors import decode_rich_status, field_violations
from rating_client.gen.rating.v1 import catalog_pb2, catalog_pb2_grpc
from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually, status_of

EXAMPLE = Path(__file__).resolve().parents[3] / "rating_service" / "examples" / "catalog.yaml"

PRODUCT = {
    "key": "tokens",
    "name": "Tokens",
    "meter": {"event_type": "llm", "quantity_property": "n", "dimensions": ["model"]},
}
STRIPE_TIERS = [
    {"up_to": "5", "unit_price": "7"},
    {"up_to": "10", "unit_price": "6.50"},
    {"up_to": None, "unit_price": "6"},
]


def rate_card(**overrides: object) -> catalog_pb2.RateCard:
    fields: dict[str, object] = {
        "key": "list",
        "effective_from": "2026-01-01T00:00:00Z",
        "pricing_unit": {"currency": "USD"},
        "prices": {"tokens": {"model": "graduated", "tiers": STRIPE_TIERS}},
    }
    fields.update(overrides)
    return json_format.ParseDict(fields, catalog_pb2.RateCard())


async def refusal(call: object) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    code, reason = status_of(refused.value)
    status = decode_rich_status(refused.value.trailing_metadata())
    return code, reason, {} if status is None else field_violations(status)


@pytest.fixture
def catalog_stub(channel: aio.Channel) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    return catalog_pb2_grpc.CatalogServiceStub(channel)


async def test_products_and_rate_cards_round_trip_and_quote_explains_the_amount(
    catalog_stub: catalog_pb2_grpc.CatalogServiceAsyncStub, acme: TenantKeys
) -> None:
    admin = acme.metadata(Role.ADMIN)
    product = json_format.ParseDict(PRODUCT, catalog_pb2.Product())
    await catalog_stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product), metadata=admin
    )
    created = await catalog_stub.CreateRateCard(
        catalog_pb2.CreateRateCardRequest(rate_card=rate_card()), metadata=admin
    )
    assert created.rate_card.version == 1
    got = await catalog_stub.GetProduct(catalog_pb2.GetProductRequest(key="tokens"), metadata=admin)
    assert json_format.MessageToDict(got.product, preserving_proto_field_name=True) == PRODUCT
    # Stripe's documented example, graduated: 6 units = 5 × 7 + 1 × 6.50 = 41.50.
    quoted = await catalog_stub.Quote(
        catalog_pb2.QuoteRequest(
            rate_card_key="list", lines=[catalog_pb2.UsageLine(product_key="tokens", quantity="6")]
        ),
        metadata=acme.metadata(Role.RATER),
    )
    assert quoted.total == "41.50"
    assert quoted.total_in_invoice_currency == "41.50"
    assert [(b.tier, b.quantity, b.unit_price, b.amount) for b in quoted.lines[0].breakdown] == [
        (0, "5", "7", "35"),
        (1, "1", "6.50", "6.50"),
    ]


async def test_update_rate_card_adds_a_version_and_closes_the_open_one(
    catalog_stub: catalog_pb2_grpc.CatalogServiceAsyncStub, acme: TenantKeys
) -> None:
    admin = acme.metadata(Role.ADMIN)
    product = json_format.ParseDict(PRODUCT, catalog_pb2.Product())
    await catalog_stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product), metadata=admin
    )
    await catalog_stub.CreateRateCard(
        catalog_pb2.CreateRateCardRequest(rate_card=rate_card()), metadata=admin
    )
    later = rate_card(
        effective_from="2099-01-01T00:00:00Z",
        prices={"tokens": {"model": "per_unit", "unit_price": "5"}},
    )
    updated = await catalog_stub.UpdateRateCard(
        catalog_pb2.UpdateRateCardRequest(rate_card=later), metadata=admin
    )
    assert updated.rate_card.version == 2
    assert updated.closed.version == 1
    assert updated.closed.effective_until.ToJsonString() == "2099-01-01T00:00:00Z"
    versions = await catalog_stub.GetRateCard(
        catalog_pb2.GetRateCardRequest(key="list"), metadata=admin
    )
    assert [v.version for v in versions.versions] == [1, 2]
    in_2100 = await catalog_stub.Quote(
        catalog_pb2.QuoteRequest(
            rate_card_key="list",
            at=Timestamp(seconds=int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())),
            lines=[catalog_pb2.UsageLine(product_key="tokens", quantity="6")],
        ),
        metadata=admin,
    )
    assert (in_2100.rate_card_version, in_2100.total) == (2, "30")


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        (
            {"tokens": {"model": "per_unit", "unit_price": "-1"}},
            "rate_card.prices.tokens.unit_price",
        ),
        (
            {"tokens": {"model": "graduated", "tiers": [STRIPE_TIERS[1], *STRIPE_TIERS[::2]]}},
            "rate_card.prices.tokens.tiers[1].up_to",
        ),
        (
            {"tokens": {"model": "per_unit", "unit_price": 0.5}},
            "rate_card.prices.tokens.unit_price",
        ),
        ({"nope": {"model": "per_unit", "unit_price": "1"}}, "rate_card.prices.nope"),
        (
            {
                "tokens": {
                    "model": "matrix",
                    "dimensions": ["region"],
                    "cells": [
                        {
                            "match": {"region": "eu"},
                            "price": {"model": "per_unit", "unit_price": "1"},
                        }
                    ],
                }
            },
            "rate_card.prices.tokens.dimensions[0]",
        ),
    ],
)
async def test_invalid_rate_cards_name_the_field_and_change_nothing(
    catalog_stub: catalog_pb2_grpc.CatalogServiceAsyncStub,
    acme: TenantKeys,
    prices: dict[str, object],
    field: str,
) -> None:
    admin = acme.metadata(Role.ADMIN)
    product = json_format.ParseDict(PRODUCT, catalog_pb2.Product())
    await catalog_stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product), metadata=admin
    )
    code, _, fields = await refusal(
        catalog_stub.CreateRateCard(
            catalog_pb2.CreateRateCardRequest(rate_card=rate_card(prices=prices)), metadata=admin
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in fields, fields
    listed = await catalog_stub.ListRateCards(catalog_pb2.ListRateCardsRequest(), metadata=admin)
    assert list(listed.rate_cards) == []


async def test_an_overlapping_or_past_version_is_refused(
    catalog_stub: catalog_pb2_grpc.CatalogServiceAsyncStub, acme: TenantKeys
) -> None:
    admin = acme.metadata(Role.ADMIN)
    product = json_format.ParseDict(PRODUCT, catalog_pb2.Product())
    await catalog_stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product), metadata=admin
    )
    await catalog_stub.CreateRateCard(
        catalog_pb2.CreateRateCardRequest(rate_card=rate_card()), metadata=admin
    )
    code, _, fields = await refusal(
        catalog_stub.UpdateRateCard(
            catalog_pb2.UpdateRateCardRequest(
                rate_card=rate_card(effective_from="2026-02-01T00:00:00Z")
            ),
            metadata=admin,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "rate_card.effective_from" in fields
    versions = await catalog_stub.GetRateCard(
        catalog_pb2.GetRateCardRequest(key="list"), metadata=admin
    )
    assert [(v.version, v.HasField("effective_until")) for v in versions.versions] == [(1, False)]


async def test_catalog_writes_need_admin_and_tenants_never_see_each_other(
    catalog_stub: catalog_pb2_grpc.CatalogServiceAsyncStub, acme: TenantKeys, globex: TenantKeys
) -> None:
    product = json_format.ParseDict(PRODUCT, catalog_pb2.Product())
    code, reason, _ = await refusal(
        catalog_stub.CreateProduct(
            catalog_pb2.CreateProductRequest(product=product), metadata=acme.metadata(Role.RATER)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    await catalog_stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product), metadata=acme.metadata(Role.ADMIN)
    )
    code, reason, _ = await refusal(
        catalog_stub.GetProduct(
            catalog_pb2.GetProductRequest(key="tokens"), metadata=globex.metadata(Role.ADMIN)
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PRODUCT_NOT_FOUND")
    code, reason, _ = await refusal(
        catalog_stub.CreateProduct(
            catalog_pb2.CreateProductRequest(product=product), metadata=acme.metadata(Role.ADMIN)
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "PRODUCT_EXISTS")


async def test_a_change_made_through_one_replica_reaches_the_cache_of_another(
    settings: Settings, acme: TenantKeys
) -> None:
    first = await start_server(settings)
    second = await start_server(settings)
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{first.port}") as one,
            aio.insecure_channel(f"127.0.0.1:{second.port}") as two,
        ):
            admin = acme.metadata(Role.ADMIN)
            writer = catalog_pb2_grpc.CatalogServiceStub(one)
            reader = catalog_pb2_grpc.CatalogServiceStub(two)
            await eventually(
                lambda: first.components.changes.listening and second.components.changes.listening
            )
            empty = await reader.ListProducts(catalog_pb2.ListProductsRequest(), metadata=admin)
            assert list(empty.products) == []  # now cached on the second replica
            product = json_format.ParseDict(PRODUCT, catalog_pb2.Product())
            await writer.CreateProduct(
                catalog_pb2.CreateProductRequest(product=product), metadata=admin
            )
            async with asyncio.timeout(10):
                while True:
                    seen = await reader.ListProducts(
                        catalog_pb2.ListProductsRequest(), metadata=admin
                    )
                    if [p.key for p in seen.products] == ["tokens"]:
                        break
                    await asyncio.sleep(0.02)
    finally:
        await first.stop(0.1)
        await second.stop(0.1)


async def test_catalog_apply_is_idempotent_and_export_round_trips(
    database_url: str, acme: TenantKeys, globex: TenantKeys, tmp_path: Path, server: RunningServer
) -> None:
    env = {"RATING_DATABASE_URL": database_url}

    async def rating(*args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)

    dry = await rating("catalog", "apply", str(EXAMPLE), "--tenant", "acme", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "8 would change" in dry.output
    assert "+ create rate card version list v2" in dry.output
    first = await rating("catalog", "apply", str(EXAMPLE), "--tenant", "acme")
    assert first.exit_code == 0, first.output
    assert "8 changed" in first.output
    again = await rating("catalog", "apply", str(EXAMPLE), "--tenant", "acme")
    assert again.output.strip() == "catalog already up to date"
    exported = tmp_path / "acme.yaml"
    out = await rating("catalog", "export", "--tenant", "acme", "-o", str(exported))
    assert out.exit_code == 0, out.output
    copied = await rating("catalog", "apply", str(exported), "--tenant", "globex")
    assert "8 changed" in copied.output
    second = await rating("catalog", "export", "--tenant", "globex")
    assert second.output == exported.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(exported.read_text().replace("unit_price: '0.99'", "unit_price: '-0.99'"))
    refused = await rating("catalog", "apply", str(bad), "--tenant", "acme")
    assert refused.exit_code == 1
    assert "rate_cards[" in refused.output and "unit_price" in refused.output
