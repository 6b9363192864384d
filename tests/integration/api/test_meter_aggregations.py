"""Meter aggregations through the API: RateAndDebit, Quote and PreviewInvoice, with real storage.

The catalog is `rating_service/examples/meters.yaml` (graduated: 2.00 a unit up to 10, then
1.00; P(q) = 2q up to 10, 20 + (q − 10) beyond). The contract's one period is an hour, started
30 minutes ago, so a time-weighted reading at minute m holds (60 − m)/60 hours to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format

from rating_client import RatingClient
from rating_client.errors import RatingError
from rating_client.gen.rating.v1 import catalog_pb2, rating_pb2
from rating_service.cli import main
from rating_service.cli.catalog_file import read_catalog_file
from rating_service.core.auth import Caller, Role
from rating_service.runtime.server import RunningServer
from rating_service.services.catalog import Catalogs
from rating_service.store.catalog import CatalogStore
from rating_service.store.database import asyncpg_dsn, create_engine
from rating_service.store.rating import entries_near_marks
from tests.conftest import TenantKeys
from tests.integration.cycles import (
    BillingContract,
    admin_client,
    credit,
    open_billing_contract,
)
from tests.integration.services.test_tenant_keyed_statements import generic_plan, plan_nodes

D = Decimal
EXAMPLE = Path(__file__).resolve().parents[3] / "rating_service" / "examples" / "meters.yaml"


async def load_meters_catalog(database_url: str, tenant_id: str) -> None:
    """The example catalog, its rate card keyed `list` as the test contracts expect."""
    document = read_catalog_file(EXAMPLE)
    document["rate_cards"][0]["key"] = "list"
    engine = create_engine(database_url, pool_size=1)
    try:
        caller = Caller(tenant_id, "test", Role.ADMIN)
        await Catalogs(CatalogStore(engine)).apply(caller, document, dry_run=False)
    finally:
        await engine.dispose()


@pytest.fixture
async def meters(
    server: RunningServer, acme: TenantKeys, database_url: str
) -> AsyncIterator[RatingClient]:
    """An admin client of a tenant whose catalog is the meters example."""
    await load_meters_catalog(database_url, acme.tenant_id)
    async with admin_client(server, acme) as rating:
        yield rating


async def an_hour_long_period(client: RatingClient, customer_id: str) -> BillingContract:
    """An arrears contract whose one period is an hour, 30 minutes in."""
    return await open_billing_contract(
        client,
        customer_id,
        period_seconds=3600,
        periods=1,
        starts_in=-timedelta(minutes=30),
    )


# (product's event type, minute of the period, properties, charge by hand)
EVENTS = [
    ("gpu.concurrency", 1, {"gpus": "4"}, "8"),  # peak 0 → 4: 2 × 4
    ("gpu.concurrency", 2, {"gpus": "3"}, "0"),  # below the peak
    ("gpu.concurrency", 3, {"gpus": "12"}, "14"),  # 4 → 12: P(12) − P(4) = 22 − 8
    ("user.request", 1, {"user_id": "ann"}, "2"),
    ("user.request", 2, {"user_id": "ann"}, "0"),  # a repeat
    ("user.request", 3, {"user_id": "bob"}, "2"),
    ("storage.reading", 10, {"gb": "12"}, "22"),  # 0 → 12: 20 + 2
    ("storage.reading", 20, {"gb": "5"}, "-12"),  # 12 → 5: 10 − 22
    ("storage.reading", 15, {"gb": "100"}, "0"),  # older than the reading at 20: stands
    ("gpu.instance", 15, {"gpus": "4"}, "6"),  # 4 GPUs × 0.75 h = 3: P(3) = 6
    ("gpu.instance", 25, {"gpus": "0"}, "-4.666666666666"),  # stopped: −4 × 35/60 h
    ("gpu.instance", 20, {"gpus": "8"}, "0.666666666666"),  # late: +(8 − 4) × 5/60 h
    ("finetune.job", 1, {"seconds": "8"}, "16"),
    ("finetune.job", 2, {"seconds": "-3"}, "-6"),  # a refund: 8 → 5
    ("finetune.job", 3, {"seconds": "-9"}, "-10"),  # limited to the 5 left
    ("session.concurrency", 1, {"sessions": "6"}, "12"),
    ("session.concurrency", 1, {"sessions": "11"}, "9"),  # P(11) − P(6) = 21 − 12
    ("session.concurrency", 1, {"sessions": "2"}, "0"),
]


async def test_each_aggregation_is_rated_quoted_and_invoiced_as_computed_by_hand(
    meters: RatingClient,
) -> None:
    contract = await an_hour_long_period(meters, "cus-meters")
    start = contract.term_start
    for n, (event_type, minute, properties, charge) in enumerate(EVENTS):
        answer = await meters.rate_and_debit(
            event_id=f"m{n}",
            customer_id=contract.customer_id,
            event_type=event_type,
            properties=properties,
            timestamp=start + timedelta(minutes=minute),
        )
        assert D(answer.charge) == D(charge), (n, event_type, properties)
    # GPU-hours: 3 − 35/15 + 1/3 to 12 places = 3 − 2.333333333333 + 0.333333333333
    # (each rounded to 12 places) = 1.000000000000; P = 2 = 6 − 4.666666666666 + 0.666666666666

    # The charge line says how the meter moved.
    repeat = await meters.rate_and_debit(
        event_id="m-repeat",
        customer_id=contract.customer_id,
        event_type="user.request",
        properties={"user_id": "bob"},
        timestamp=start + timedelta(minutes=4),
    )
    [line] = repeat.lines
    assert (line.meter.aggregation, line.meter.before, line.meter.after) == (
        "unique_count",
        "2",
        "2",
    )
    assert line.meter.note == "value already counted this period"

    preview = await meters.preview_invoice(contract.customer_id)
    usage = {
        line.product_key: (line.description, D(line.quantity), D(line.exact_amount))
        for line in preview.lines
        if line.kind == "usage"
    }
    day = start + timedelta(minutes=1)
    assert usage == {
        "gpu-peak": ("Peak concurrent GPUs (peak)", D(12), D(22)),
        "active-users": ("Monthly active users (distinct)", D(2), D(4)),
        "stored-gb": ("Stored gigabytes (last reading)", D(5), D(10)),
        "gpu-hours": ("GPU hours (time-weighted)", D(1), D(2)),
        "fine-tune-seconds": ("Fine-tuning seconds", D(0), D(0)),
        "daily-peak-sessions": (
            f"Daily peak sessions (peak) · {day.strftime('%Y-%m-%d')}",
            D(11),
            D(21),
        ),
    }
    tiers = next(line.tiers for line in preview.lines if line.product_key == "gpu-peak")
    assert [(t.quantity, t.amount) for t in tiers] == [("10", "20.00"), ("2", "2.00")]

    # GetUsage: a peak, a gauge, an integral to the period's end and a day's peak are
    # forecast as they stand; only the additive meters grow with the time left.
    to_date = await meters.call(
        meters.rating.GetUsage, rating_pb2.GetUsageRequest(customer_id=contract.customer_id)
    )
    forecast = {row.product_key: (row.quantity, row.forecast_quantity) for row in to_date.rows}
    for product in ("gpu-peak", "stored-gb", "gpu-hours", "daily-peak-sessions"):
        assert forecast[product][0] == forecast[product][1], product
    assert D(forecast["active-users"][1]) > D(forecast["active-users"][0])  # 2 in half the hour

    # Quote: the aggregated quantity on top of what the period holds (the caller says what).
    quoted = await meters.call(
        meters.catalog.Quote,
        catalog_pb2.QuoteRequest(
            customer_id=contract.customer_id,
            lines=[
                catalog_pb2.UsageLine(product_key="gpu-peak", quantity="11"),
                catalog_pb2.UsageLine(product_key="gpu-peak", quantity="15"),
                catalog_pb2.UsageLine(product_key="stored-gb", quantity="2"),
            ],
            period_to_date=[
                catalog_pb2.UsageLine(product_key="gpu-peak", quantity="12"),
                catalog_pb2.UsageLine(product_key="stored-gb", quantity="5"),
            ],
        ),
    )
    # peak 12 → 12 (11 is below): 0; → 15: 3 × 1; gauge 5 → 2: P(2) − P(5) = 4 − 10
    assert [D(q.amount) for q in quoted.lines] == [D(0), D(3), D(-6)]
    assert [(q.meter.aggregation, q.meter.before, q.meter.after) for q in quoted.lines] == [
        ("max", "12", "12"),
        ("max", "12", "15"),
        ("latest", "5", "2"),
    ]


async def test_a_replay_repeats_the_answer_and_remembers_nothing_twice(
    meters: RatingClient, database_url: str
) -> None:
    contract = await an_hour_long_period(meters, "cus-replay")
    at = contract.term_start + timedelta(minutes=5)

    async def user(event_id: str, user_id: str) -> tuple[Decimal, bool]:
        answer = await meters.rate_and_debit(
            event_id=event_id,
            customer_id=contract.customer_id,
            event_type="user.request",
            properties={"user_id": user_id},
            timestamp=at,
        )
        return D(answer.charge), answer.replay

    assert await user("u1", "ann") == (D(2), False)
    assert await user("u1", "ann") == (D(2), True)  # the same answer, not "a repeat"
    assert await user("u2", "ann") == (D(0), False)  # another event of the same user
    with pytest.raises(RatingError) as mismatch:
        await user("u1", "bob")
    assert mismatch.value.reason == "IDEMPOTENCY_KEY_MISMATCH"
    assert await user("u3", "bob") == (D(2), False)  # the mismatch remembered nothing
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT entry_key FROM aggregation_entries WHERE contract_id = $1 ORDER BY 1",
            contract.contract_id,
        )
        counter = await conn.fetchrow(
            "SELECT quantity, amount, events FROM usage_counters WHERE contract_id = $1",
            contract.contract_id,
        )
    finally:
        await conn.close()
    assert [r["entry_key"] for r in rows] == ["ann", "bob"]
    assert counter is not None
    assert (counter["quantity"], counter["amount"], counter["events"]) == (D(2), D(4), 3)


async def test_a_gauge_value_must_be_a_number_and_not_negative(meters: RatingClient) -> None:
    contract = await an_hour_long_period(meters, "cus-bad")
    for properties, says in (({"gpus": "-1"}, "must not be negative"), ({}, "missing")):
        with pytest.raises(RatingError) as refused:
            await meters.rate_and_debit(
                event_id="bad",
                customer_id=contract.customer_id,
                event_type="gpu.instance",
                properties=properties,
                timestamp=contract.term_start,
            )
        assert refused.value.code.name == "INVALID_ARGUMENT"
        assert says in str(refused.value)


async def test_the_entries_read_probes_their_key_by_its_leading_column(database_url: str) -> None:
    # What test_tenant_keyed_statements checks of every hot-path statement, for this one.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
        nodes = list(plan_nodes(await generic_plan(conn, f"SELECT {entries_near_marks(1)}")))
    finally:
        await conn.close()
    probes = [n for n in nodes if n.get("Relation Name") == "aggregation_entries"]
    assert len(probes) == 2  # the entry at or before the mark, and the one after
    for node in probes:
        assert node["Node Type"].startswith("Index"), node
        assert "(tenant_id = " in node["Index Cond"], node


async def test_rating_catalog_apply_takes_every_meter_key_and_exports_it_back(
    database_url: str, acme: TenantKeys, server: RunningServer, tmp_path: Path
) -> None:
    env = {"RATING_DATABASE_URL": database_url}

    async def rating(*args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)

    first = await rating("catalog", "apply", str(EXAMPLE), "--tenant", "acme")
    assert first.exit_code == 0, first.output
    assert "7 changed" in first.output  # six products, one rate card version
    again = await rating("catalog", "apply", str(EXAMPLE), "--tenant", "acme")
    assert again.output.strip() == "catalog already up to date"
    exported = await rating("catalog", "export", "--tenant", "acme")
    for line in (
        "aggregation: max",
        "aggregation: unique_count",
        "unique_property: user_id",
        "aggregation: latest",
        "aggregation: time_weighted_sum",
        "time_unit: hour",
        "corrections: true",
        "window: day",
    ):
        assert line in exported.output, line
    # Over gRPC, the Meter message carries the same keys; a bad one is refused naming the field.
    async with admin_client(server, acme) as client:
        reply = await client.call(
            client.catalog.GetProduct, catalog_pb2.GetProductRequest(key="gpu-hours")
        )
        meter = reply.product.meter
        assert (meter.aggregation, meter.quantity_property, meter.time_unit) == (
            "time_weighted_sum",
            "gpus",
            "hour",
        )
        bad = json_format.ParseDict(
            {"key": "bad", "meter": {"event_type": "x", "aggregation": "median"}},
            catalog_pb2.Product(),
        )
        with pytest.raises(RatingError) as refused:
            await client.call(
                client.catalog.CreateProduct, catalog_pb2.CreateProductRequest(product=bad)
            )
    assert refused.value.code.name == "INVALID_ARGUMENT"
    assert "product.meter.aggregation" in refused.value.fields, refused.value.fields


async def test_a_correction_gives_back_to_the_pool_it_drew_from(meters: RatingClient) -> None:
    contract = await an_hour_long_period(meters, "cus-refund")
    await meters.call(meters.contracts.AddCommitment, credit(contract.contract_id, "100"))

    async def job(event_id: str, seconds: str) -> tuple[Decimal, Decimal]:
        answer = await meters.rate_and_debit(
            event_id=event_id,
            customer_id=contract.customer_id,
            event_type="finetune.job",
            properties={"seconds": seconds},  # stamped now: the credit starts now
        )
        [pool] = (await meters.balances(contract.customer_id)).pools
        return D(answer.charge), D(pool.remaining)

    assert await job("j1", "12") == (D(22), D(78))  # 20 + 2
    assert await job("j1-refund", "-4") == (D(-6), D(84))  # P(8) − P(12) = 16 − 22
    assert await job("j1-refund-2", "-20") == (D(-16), D(100))  # 8 left: back to the start
    assert await job("j1-refund-3", "-1") == (D(0), D(100))  # nothing more to give back
