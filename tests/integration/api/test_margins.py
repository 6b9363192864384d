"""Unit costs and margins over real gRPC and PostgreSQL, to the cent, with free and paid credit.

Support resolutions sell at $0.99 and cost us $0.30 each; HD images sell at $0.08 and cost
$0.03 (a matrix cell's own cost). The contract holds a promotional credit of $1.00 (cost basis
0: nobody paid for it) and a bought credit of $2.00 (cost basis 1); beyond them, overage.

Five resolutions (4.95) draw both pools whole (1.00 free, 2.00 paid) and 1.95 of overage; two
HD images (0.16) are all overage. Margins:

| product | revenue | free credit | cost | margin | margin % |
|---|---:|---:|---:|---:|---:|
| image-generation | 0.16 | 0 | 0.06 | 0.10 | 0.10 / 0.16 = 62.50 |
| support-resolutions | 4.95 | 1.00 | 1.50 | 2.45 | 2.45 / 3.95 = 62.03 |
| total | 5.11 | 1.00 | 1.56 | 2.55 | 2.55 / 4.11 = 62.04 |
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from google.protobuf import json_format
from grpc import aio

from rating_client.client import usage_event
from rating_client.gen.rating.v1 import (
    contract_pb2,
    contract_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
)
from rating_service.cli import main
from rating_service.cli.catalog_file import read_catalog_file
from rating_service.core.auth import Caller, Role
from rating_service.runtime.server import RunningServer
from rating_service.services.catalog import Catalogs
from rating_service.store.catalog import CatalogStore
from tests.conftest import TenantKeys, refusal
from tests.integration.api.test_catalog import EXAMPLE
from tests.integration.cycles import api_env

COSTS = {
    "support-resolutions": [
        {"effective_from": "2020-01-01T00:00:00+00:00", "currency": "USD", "cost": "0.30"}
    ],
    "image-generation": [
        {
            "effective_from": "2020-01-01T00:00:00+00:00",
            "currency": "USD",
            "cost": "0.01",
            "cells": [{"match": {"quality": "hd"}, "cost": "0.03"}],
        }
    ],
}


async def test_margins_to_the_cent_with_free_and_paid_credit(
    server: RunningServer, channel: aio.Channel, acme: TenantKeys
) -> None:
    document = copy.deepcopy(read_catalog_file(EXAMPLE))
    for product in document["products"]:
        if product["key"] in COSTS:
            product["unit_costs"] = COSTS[product["key"]]
    caller = Caller(acme.tenant_id, "test", Role.ADMIN)
    await Catalogs(CatalogStore(server.components.engine)).apply(caller, document, dry_run=False)
    contracts = contract_pb2_grpc.ContractServiceStub(channel)
    rating = rating_pb2_grpc.RatingServiceStub(channel)
    admin, rater = acme.metadata(Role.ADMIN), acme.metadata(Role.RATER)
    await contracts.CreateCustomer(
        contract_pb2.CreateCustomerRequest(customer_id="margins", name="Margins"), metadata=admin
    )
    created = await contracts.CreateContract(
        contract_pb2.CreateContractRequest(
            contract=json_format.ParseDict(
                {
                    "customer_id": "margins",
                    "term_start": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    "overage_policy": "arrears",
                },
                contract_pb2.Contract(),
            )
        ),
        metadata=admin,
    )
    contract_id = created.contract.contract_id
    for grant_id, amount, basis in (("promo", "1.00", "0"), ("bought", "2.00", "1")):
        await contracts.AddCommitment(
            contract_pb2.AddCommitmentRequest(
                grant_id=grant_id,
                contract_id=contract_id,
                kind="credit",
                amount=amount,
                cost_basis=basis,
            ),
            metadata=admin,
        )

    async def rate(event_id: str, event_type: str, properties: dict[str, str]) -> None:
        event = usage_event(event_id, "margins", event_type, properties)
        await rating.RateAndDebit(rating_pb2.RateAndDebitRequest(event=event), metadata=rater)

    for n in range(5):
        await rate(f"res-{n}", "support.conversation.closed", {"outcome": "resolved"})
    for n in range(2):
        await rate(f"img-{n}", "image.generated", {"quality": "hd"})

    request = rating_pb2.GetMarginsRequest(customer_id="margins")
    assert (await refusal(rating.GetMargins(request, metadata=rater)))[0] == "PERMISSION_DENIED"
    answer = await rating.GetMargins(request, metadata=acme.metadata(Role.OPS))
    rows = [
        (r.product_key, r.revenue, r.free_credit, r.cost, r.margin, r.margin_percent)
        for r in (*answer.products, answer.total)
    ]
    assert rows == [
        ("image-generation", "0.16", "0", "0.06", "0.10", "62.50"),
        ("support-resolutions", "4.95", "1.00", "1.50", "2.45", "62.03"),
        ("", "5.11", "1.00", "1.56", "2.55", "62.04"),
    ]
    assert answer.contract_id == contract_id and answer.invoice_currency == "USD"

    usage = await rating.GetUsage(rating_pb2.GetUsageRequest(customer_id="margins"), metadata=rater)
    assert {(r.product_key, r.amount, r.cost) for r in usage.rows} == {
        ("image-generation", "0.16", "0.06"),
        ("support-resolutions", "4.95", "1.50"),
    }
    code, _, fields = await refusal(
        rating.GetMargins(rating_pb2.GetMarginsRequest(), metadata=acme.metadata(Role.OPS))
    )
    assert (code, fields) == ("INVALID_ARGUMENT", {"customer_id"})

    # The same report from the command line, a client of the API with an ops key.
    env = api_env(server, acme.tokens[Role.OPS])
    shown = await asyncio.to_thread(
        CliRunner().invoke, main, ["reports", "margins", "margins"], env=env
    )
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[1:] == [
        "PRODUCT              REVENUE  FREE CREDIT  COST  MARGIN  MARGIN %",
        "image-generation        0.16            0  0.06    0.10     62.50",
        "support-resolutions     4.95         1.00  1.50    2.45     62.03",
        "total                   5.11         1.00  1.56    2.55     62.04",
    ]
