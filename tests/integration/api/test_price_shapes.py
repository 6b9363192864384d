"""Issue 19's price shapes end to end: a YAML catalog applied by `rating catalog apply`, events
rated by RateAndDebit, usage quoted by Quote, and the period's invoice by PreviewInvoice, over
real gRPC and PostgreSQL. Every amount is worked out by hand in the comments.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format

from rating_client import RatingClient, RatingError
from rating_client.gen.rating.v1 import catalog_pb2, contract_pb2, invoice_pb2
from rating_service.cli import main
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys
from tests.integration.billing import open_account
from tests.integration.cycles import admin_client

D = Decimal

CATALOG_YAML = """\
products:
  - {key: calls, name: API calls, meter: {event_type: api.call}}
  - {key: deals, name: Deals, meter: {event_type: deal.closed, quantity_property: value}}
  - {key: frames, name: Frames, meter: {event_type: video.rendered, quantity_property: frames}}
  - {key: gpu, name: GPU hours, meter: {event_type: gpu.used, quantity_property: hours}}
  - {key: seats, name: Seats, meter: {event_type: seat.used, quantity_property: hours}}
  - {key: storage, name: Storage, meter: {event_type: storage.used, quantity_property: gb}}
rate_cards:
  - key: list
    version: 1
    effective_from: "2020-01-01T00:00:00+00:00"
    pricing_unit: USD
    prices:
      # The first 3 calls of a period free, then $1 each, at most $5 a period.
      calls: {model: per_unit, unit_price: "1", free_units: "3", maximum_spend: "5"}
      # 10% + 0.50 per deal within [1, 20]; the first deal, and the first 150 of value, free.
      deals:
        model: percentage
        rate: "0.1"
        fixed_fee: "0.5"
        minimum: "1"
        maximum: "20"
        free_events: 1
        free_value: "150"
      # Whole blocks of 10 frames at $3; a part-used block is free.
      frames: {model: package, block_size: "10", block_price: "3", rounding: down}
      # The first $10 of each period free, then $0.50 a GPU hour.
      gpu: {model: per_unit, unit_price: "0.5", free_amount: "10"}
      # 10 GB at $1 with a $20 first-tier fee owed even at zero usage, then blocks of 100 GB
      # at $5; at least $50 a period.
      storage:
        model: graduated
        tiers:
          - {up_to: "10", unit_price: "1", flat_fee: "20"}
          - {up_to: null, block_size: "100", block_price: "5"}
        first_tier_fee_at_zero: true
        minimum_spend: "50"
  - key: prorated
    version: 1
    effective_from: "2020-01-01T00:00:00+00:00"
    pricing_unit: USD
    prices:
      # 10 hours at $1 then $0.50, at least $16 a period; all prorated to the active share.
      seats:
        model: graduated
        tiers: [{up_to: "10", unit_price: "1"}, {up_to: null, unit_price: "0.5"}]
        prorated: true
        minimum_spend: "16"
"""


async def rating(database_url: str, *args: str) -> Result:
    """Run the `rating` command in a thread: it runs its own event loop, the server ours."""
    env = {"RATING_DATABASE_URL": database_url}
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


@pytest.fixture
async def shapes(
    server: RunningServer, acme: TenantKeys, database_url: str, tmp_path: Path
) -> RatingClient:
    """An admin client of `acme`, whose catalog is CATALOG_YAML applied by the CLI."""
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG_YAML)
    applied = await rating(database_url, "catalog", "apply", str(path), "--tenant", "acme")
    assert applied.exit_code == 0, applied.output
    again = await rating(database_url, "catalog", "apply", str(path), "--tenant", "acme")
    assert again.output.strip() == "catalog already up to date"
    exported = await rating(database_url, "catalog", "export", "--tenant", "acme")
    for key in ("free_units", "maximum_spend", "free_events", "free_value", "rounding: down"):
        assert key in exported.output
    for key in ("block_size", "block_price", "first_tier_fee_at_zero", "minimum_spend"):
        assert key in exported.output
    assert "prorated: true" in exported.output
    return admin_client(server, acme)


async def charge(
    client: RatingClient, customer_id: str, event_id: str, event_type: str, **properties: str
) -> tuple[Decimal, list[str]]:
    """Rate one event now: its charge and the items of its breakdown."""
    answer = await client.rate_and_debit(
        event_id=event_id, customer_id=customer_id, event_type=event_type, properties=properties
    )
    (line,) = answer.lines
    return D(line.amount), [price_line.item for price_line in line.breakdown]


def invoice_lines(invoice: invoice_pb2.Invoice) -> list[tuple[str, str, Decimal]]:
    """(kind, key, exact amount) of each line."""
    return [(line.kind, line.key, D(line.exact_amount)) for line in invoice.lines]


async def test_free_units_caps_blocks_allowances_and_the_fee_at_zero_through_the_api(
    shapes: RatingClient,
) -> None:
    async with shapes as client:
        account = await open_account(client, "cus_shapes", overage_policy="arrears")
        customer = account.customer_id
        # Calls: 3 free, then $1 each until the $5 maximum.
        calls = [await charge(client, customer, f"c{n}", "api.call") for n in range(1, 10)]
        assert [amount for amount, _ in calls] == [D(0)] * 3 + [D(1)] * 5 + [D(0)]
        assert calls[2][1] == ["free_units"]  # the third call: the last free one
        assert calls[3][1] == ["units"]  # the fourth: the first paid
        assert calls[8][1] == ["units", "maximum_spend"]  # past the cap: 1 − 1
        # Deals: the first is free; the allowance ends with the first event.
        assert await charge(client, customer, "d1", "deal.closed", value="100") == (
            D(0),
            ["free_value"],
        )
        # 100 × 0.1 + 0.50, no allowance left (the free event is used up).
        assert (await charge(client, customer, "d2", "deal.closed", value="100"))[0] == D("10.5")
        assert (await charge(client, customer, "d3", "deal.closed", value="1000"))[0] == D(20)
        # Frames in whole blocks of 10, rounded down: 25 → 2 blocks; 29 → 2; 30 → 3.
        assert (await charge(client, customer, "f1", "video.rendered", frames="25"))[0] == D(6)
        assert (await charge(client, customer, "f2", "video.rendered", frames="4"))[0] == D(0)
        assert (await charge(client, customer, "f3", "video.rendered", frames="1"))[0] == D(3)
        # GPU hours: 19 × 0.5 = 9.50 is all free; 30 hours = 15, less the free 10 = 5.
        assert await charge(client, customer, "g1", "gpu.used", hours="19") == (
            D(0),
            ["units", "free_amount"],
        )
        assert await charge(client, customer, "g2", "gpu.used", hours="11") == (
            D(5),
            ["units", "free_amount"],  # 5.50 − 0.50 of free amount left
        )
        # Storage: the first tier's fee is the period's, so events charge units and blocks only.
        assert await charge(client, customer, "s1", "storage.used", gb="5") == (
            D(5),
            ["tier", "first_tier_fee"],  # 5 × 1 + 20 − 20
        )
        assert (await charge(client, customer, "s2", "storage.used", gb="5"))[0] == D(5)
        # 101 GB in blocks of 100: 2 started blocks × 5.
        assert await charge(client, customer, "s3", "storage.used", gb="101") == (
            D(10),
            ["tier_blocks"],
        )

        preview = await client.preview_invoice(customer)
        assert invoice_lines(preview) == [
            # 9 calls, 3 free: 6 × 1 shown, 1 above the maximum taken off.
            ("usage", "usage:calls:[]", D(6)),
            ("discount", "maximum_spend:calls:[]", D(-1)),
            ("usage", "usage:deals:[]", D("30.5")),  # 0 + 10.5 + 20
            ("usage", "usage:frames:[]", D(9)),  # 6 + 0 + 3
            ("usage", "usage:gpu:[]", D(5)),
            ("usage", "usage:storage:[]", D(20)),  # 5 + 5 + 10
            # Storage spent 20 + the 20 fee = 40 of its 50 minimum.
            ("minimum_spend", "minimum_spend:storage:[]", D(10)),
            ("fee", "first_tier_fee:storage:[]", D(20)),
        ]
        # 6 − 1 + 30.5 + 9 + 5 + 20 + 10 + 20
        assert D(preview.total) == D("99.5")
        storage = preview.lines[5]
        assert [(tier.description, D(tier.amount)) for tier in storage.tiers] == [
            ("Tier 1", D(30)),  # 10 × 1 + 20
            ("Tier blocks", D(10)),  # 2 blocks × 5
            ("First tier fee", D(-20)),
        ]
        assert {s.kind: D(s.amount) for s in preview.subtotals} == {
            "usage": D("70.50"),
            "discount": D("-1.00"),
            "minimum_spend": D("10.00"),
            "fee": D("20.00"),
        }

        # Quote on the contract: one more call is past the cap, and more storage shows the
        # period lines its terms would add.
        quoted = await client.call(
            client.catalog.Quote,
            catalog_pb2.QuoteRequest(
                customer_id=customer,
                lines=[
                    catalog_pb2.UsageLine(product_key="calls", quantity="1"),
                    catalog_pb2.UsageLine(product_key="storage", quantity="5"),
                ],
                period_to_date=[catalog_pb2.UsageLine(product_key="calls", quantity="9")],
            ),
        )
        assert [D(line.amount) for line in quoted.lines] == [D(0), D(5)]
        assert [item.item for item in quoted.lines[0].breakdown] == ["units", "maximum_spend"]
        assert [(p.product_key, p.kind, D(p.amount)) for p in quoted.period_lines] == [
            ("storage", "first_tier_fee", D(20)),
            ("storage", "minimum_spend", D(25)),  # 50 − 20 − 5
        ]
        # At list price, period-to-date lines count as events: the free deal is used up.
        listed = await client.call(
            client.catalog.Quote,
            catalog_pb2.QuoteRequest(
                rate_card_key="list",
                lines=[catalog_pb2.UsageLine(product_key="deals", quantity="100")],
                period_to_date=[catalog_pb2.UsageLine(product_key="deals", quantity="100")],
            ),
        )
        assert D(listed.total) == D("10.5")


async def test_a_contract_active_for_half_a_period_gets_half_of_each_tier(
    shapes: RatingClient,
) -> None:
    async with shapes as client:
        await client.call(
            client.contracts.CreateCustomer,
            contract_pb2.CreateCustomerRequest(customer_id="cus_half", name="half"),
        )
        now = datetime.now(UTC)
        # Periods of 4 days from term start; the term ends 2 UTC days in: half the period.
        terms = {
            "customer_id": "cus_half",
            "term_start": (now - timedelta(days=1)).isoformat(),
            "term_end": (now + timedelta(days=1)).isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            "billing_interval_seconds": 4 * 24 * 3600,
            "invoice_currency": "USD",
            "rate_card_key": "prorated",
            "overage_policy": "arrears",
        }
        await client.call(
            client.contracts.CreateContract,
            contract_pb2.CreateContractRequest(
                contract=json_format.ParseDict(terms, contract_pb2.Contract())
            ),
        )
        # Tier 1 is cut to 5 hours: 5 × 1 + 3 × 0.5 = 6.5 (whole tiers would give 8).
        assert await charge(client, "cus_half", "h1", "seat.used", hours="8") == (
            D("6.5"),
            ["tier", "tier"],
        )
        quoted = await client.call(
            client.catalog.Quote,
            catalog_pb2.QuoteRequest(
                customer_id="cus_half",
                lines=[catalog_pb2.UsageLine(product_key="seats", quantity="2")],
                period_to_date=[catalog_pb2.UsageLine(product_key="seats", quantity="8")],
            ),
        )
        assert D(quoted.total) == D(1)  # 2 more hours at 0.50
        # The minimum of 16 halved to 8: 6.5 spent, 1.5 topped up.
        assert [p.kind for p in quoted.period_lines] == ["minimum_spend"]
        assert D(quoted.period_lines[0].amount) == D("0.5")  # 8 − 6.5 − 1
        preview = await client.preview_invoice("cus_half")
        assert invoice_lines(preview) == [
            ("usage", "usage:seats:[]", D("6.5")),
            ("minimum_spend", "minimum_spend:seats:[]", D("1.5")),
        ]


async def test_bad_price_terms_are_refused_at_the_edge_naming_the_field(
    shapes: RatingClient,
) -> None:
    async with shapes as client:
        card = {
            "key": "bad",
            "effective_from": "2026-01-01T00:00:00Z",
            "pricing_unit": {"currency": "USD"},
            "prices": {
                # A percentage is capped per event; a period maximum does not fit it.
                "deals": {"model": "percentage", "rate": "0.1", "maximum_spend": "10"},
                "calls": {
                    "model": "per_unit",
                    "unit_price": "1",
                    "minimum_spend": "10",
                    "maximum_spend": "5",
                },
            },
        }
        with pytest.raises(RatingError) as refused:
            await client.call(
                client.catalog.CreateRateCard,
                catalog_pb2.CreateRateCardRequest(
                    rate_card=json_format.ParseDict(card, catalog_pb2.RateCard())
                ),
            )
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert set(refused.value.fields) == {
            "rate_card.prices.deals.maximum_spend",
            "rate_card.prices.calls.maximum_spend",
        }
        listed = await client.call(client.catalog.ListRateCards, catalog_pb2.ListRateCardsRequest())
        assert sorted({card.key for card in listed.rate_cards}) == ["list", "prorated"]


async def test_terms_written_over_the_wire_read_back_and_quote(shapes: RatingClient) -> None:
    async with shapes as client:
        card = {
            "key": "wire",
            "effective_from": "2026-01-01T00:00:00Z",
            "pricing_unit": {"currency": "USD"},
            "prices": {
                # A Struct carries the count as a number (2.0) and the options as booleans.
                "deals": {"model": "percentage", "rate": "0.2", "free_events": 2},
                "storage": {
                    "model": "volume",
                    "tiers": [
                        {"up_to": "10", "unit_price": "1", "flat_fee": "20"},
                        {"up_to": None, "block_size": "100", "block_price": "5"},
                    ],
                    "first_tier_fee_at_zero": True,
                    "prorated": False,
                },
            },
        }
        created = await client.call(
            client.catalog.CreateRateCard,
            catalog_pb2.CreateRateCardRequest(
                rate_card=json_format.ParseDict(card, catalog_pb2.RateCard())
            ),
        )
        prices = json_format.MessageToDict(created.rate_card)["prices"]
        assert prices["deals"]["free_events"] == 2
        assert prices["storage"]["first_tier_fee_at_zero"] is True
        assert "prorated" not in prices["storage"]  # false is the default, not written
        quoted = await client.call(
            client.catalog.Quote,
            catalog_pb2.QuoteRequest(
                rate_card_key="wire",
                at=created.rate_card.effective_from,
                lines=[
                    catalog_pb2.UsageLine(product_key="deals", quantity="100"),  # third: 20
                    catalog_pb2.UsageLine(product_key="storage", quantity="150"),
                ],
                period_to_date=[
                    catalog_pb2.UsageLine(product_key="deals", quantity="50"),
                    catalog_pb2.UsageLine(product_key="deals", quantity="50"),
                ],
            ),
        )
        # Volume: 150 GB in tier 2 = 2 blocks × 5 = T(150) = 10, but the period already owes
        # T(0) = the tier-1 fee of 20, so the usage is charged 10 − 20: a credit back.
        assert [D(line.amount) for line in quoted.lines] == [D(20), D(-10)]
        assert [(p.kind, D(p.amount)) for p in quoted.period_lines] == [("first_tier_fee", D(20))]
