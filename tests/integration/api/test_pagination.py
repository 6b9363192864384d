"""Every List* RPC pages: page_size, a next_page_token, and a resumed listing that repeats
nothing and skips nothing, even when rows are added between pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from rating_client.gen.rating.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    contract_pb2,
    contract_pb2_grpc,
)
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys
from tests.integration.api.test_contracts import apply_example_catalog, contract, refusal

Lister = Callable[[int, str], Awaitable[tuple[list[Any], str]]]


def joined(pages: list[list[Any]]) -> list[Any]:
    return [item for page in pages for item in page]


async def every_page(listing: Lister, size: int) -> list[list[Any]]:
    """The listing's pages of `size`, following next_page_token to the end."""
    pages, token = [], ""
    while True:
        items, token = await listing(size, token)
        pages.append(items)
        if not token:
            return pages


async def test_customers_and_contracts_page_by_their_keys(
    channel: aio.Channel, server: RunningServer, acme: TenantKeys, globex: TenantKeys
) -> None:
    stub = contract_pb2_grpc.ContractServiceStub(channel)
    admin = acme.metadata(Role.ADMIN)
    await apply_example_catalog(server, acme)
    for n in range(5):
        await stub.CreateCustomer(
            contract_pb2.CreateCustomerRequest(customer_id=f"cus-{n}", name=f"C{n}"),
            metadata=admin,
        )
    await stub.CreateCustomer(  # another tenant's customer is never listed
        contract_pb2.CreateCustomerRequest(customer_id="cus-other", name="Other"),
        metadata=globex.metadata(Role.ADMIN),
    )
    terms = [  # customer, term start, term end (None: evergreen)
        ("cus-0", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("cus-0", "2027-01-01T00:00:00Z", None),
        ("cus-1", "2026-01-01T00:00:00Z", None),
        ("cus-3", "2026-06-01T00:00:00Z", None),
    ]
    for customer_id, start, end in reversed(terms):  # listed in key order, not creation order
        await stub.CreateContract(
            contract_pb2.CreateContractRequest(
                contract=contract(customer_id=customer_id, term_start=start, term_end=end)
            ),
            metadata=admin,
        )

    async def customers(size: int, token: str) -> tuple[list[Any], str]:
        page = await stub.ListCustomers(
            contract_pb2.ListCustomersRequest(page_size=size, page_token=token), metadata=admin
        )
        return [c.customer_id for c in page.customers], page.next_page_token

    assert await every_page(customers, 2) == [["cus-0", "cus-1"], ["cus-2", "cus-3"], ["cus-4"]]
    assert await every_page(customers, 5) == [[f"cus-{n}" for n in range(5)]]
    assert await every_page(customers, 0) == [[f"cus-{n}" for n in range(5)]]  # 0 means 50

    # A customer added between pages, before the position reached, is not listed twice.
    first, token = await customers(2, "")
    await stub.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="cus-00", name="Late"), metadata=admin
    )
    rest = await every_page(lambda size, _: customers(size, token), 10)
    assert first + rest[0] == ["cus-0", "cus-1", "cus-2", "cus-3", "cus-4"]

    async def contracts(size: int, token: str) -> tuple[list[Any], str]:
        page = await stub.ListContracts(
            contract_pb2.ListContractsRequest(page_size=size, page_token=token), metadata=admin
        )
        return [(c.customer_id, c.term_start.ToJsonString()) for c in page.contracts], (
            page.next_page_token
        )

    whole = [(customer_id, start) for customer_id, start, _ in terms]
    assert await every_page(contracts, 1) == [[c] for c in whole]
    assert await every_page(contracts, 3) == [whole[:3], whole[3:]]


async def test_keys_products_and_rate_cards_page(
    channel: aio.Channel, server: RunningServer, acme: TenantKeys
) -> None:
    admin = acme.metadata(Role.ADMIN)
    keys = admin_pb2_grpc.AdminServiceStub(channel)
    for n in range(3):
        await keys.CreateApiKey(
            admin_pb2.CreateApiKeyRequest(role=admin_pb2.ROLE_RATER, name=f"k{n}"), metadata=admin
        )
    everything = await keys.ListApiKeys(admin_pb2.ListApiKeysRequest(), metadata=admin)
    ids = sorted(k.key_id for k in everything.keys)
    assert [k.key_id for k in everything.keys] == ids and len(ids) >= 4

    async def api_keys(size: int, token: str) -> tuple[list[Any], str]:
        page = await keys.ListApiKeys(
            admin_pb2.ListApiKeysRequest(page_size=size, page_token=token), metadata=admin
        )
        return [k.key_id for k in page.keys], page.next_page_token

    assert joined(await every_page(api_keys, 2)) == ids

    await apply_example_catalog(server, acme)
    catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
    all_products = await catalog.ListProducts(catalog_pb2.ListProductsRequest(), metadata=admin)
    product_keys = [p.key for p in all_products.products]
    assert product_keys == sorted(product_keys) and len(product_keys) >= 3

    async def products(size: int, token: str) -> tuple[list[Any], str]:
        page = await catalog.ListProducts(
            catalog_pb2.ListProductsRequest(page_size=size, page_token=token), metadata=admin
        )
        return [p.key for p in page.products], page.next_page_token

    pages = await every_page(products, 2)
    assert joined(pages) == product_keys and all(len(p) <= 2 for p in pages)

    async def rate_cards(size: int, token: str) -> tuple[list[Any], str]:
        page = await catalog.ListRateCards(
            catalog_pb2.ListRateCardsRequest(page_size=size, page_token=token), metadata=admin
        )
        return [(c.key, c.version) for c in page.rate_cards], page.next_page_token

    whole = (await rate_cards(0, ""))[0]
    assert joined(await every_page(rate_cards, 1)) == whole


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": 501}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "nonsense"}, "page_token"),
        ({"page_token": "WyJhIiwgMV0="}, "page_token"),  # ["a", 1]: another listing's shape
        ({"page_token": "WzFd"}, "page_token"),  # [1]: a number where an id goes
    ],
)
async def test_a_bad_page_is_refused_on_its_field(
    channel: aio.Channel, acme: TenantKeys, request_fields: dict[str, Any], field: str
) -> None:
    stub = contract_pb2_grpc.ContractServiceStub(channel)
    code, _, fields = await refusal(
        stub.ListCustomers(
            contract_pb2.ListCustomersRequest(**request_fields),
            metadata=acme.metadata(Role.ADMIN),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(fields) == {field}
