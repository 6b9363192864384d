"""The rating benchmark's setup: tenant, keys, catalog, funded contracts (as `rating dev`)."""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from bench_database import keep_session
from rating_scenarios import AGGREGATIONS, ON_THE_HOT_CONTRACT, PRODUCT_KEY, Prepared

from rating_service.cli.progress import step

ZIPF_CONTRACTS = 10_000
POOL_CREDIT = Decimal("1000000000")
"""Each seeded pool's credit: far more than any run can spend, so no debit is refused."""
TERM_START = datetime(2024, 1, 1, tzinfo=UTC)
"""When the seeded contracts and pools start: well before any event the benchmark sends."""
SEEDING_PROCESSES = 2
"""Processes opening the zipf contracts: one per core of the benchmark machine."""


@dataclass(frozen=True)
class SeededContract:
    """A contract the benchmark debits: its customer and its one funded pool."""

    customer_id: str
    contract_id: str
    pool_id: str


BENCH_RATE_LIMITS: tuple[Mapping[str, object], ...] = (
    {"limit_id": "calls", "limit": "1000000000", "per": "second"},
    {
        "limit_id": "llm-tokens",
        "limit": "1000000000000",
        "per": "minute",
        "unit": "units",
        "tag": "llm",
    },
    {"limit_id": "completions", "limit": "1000000000", "per": "hour", "product_key": "llm-tokens"},
)
"""Three limits every hot event takes tokens from, none of which a run can reach."""


async def open_funded_contracts(
    database_url: str,
    tenant_id: str,
    customer_ids: Sequence[str],
    credit: Decimal = POOL_CREDIT,
    parallel: int = 8,
    rate_limits: Sequence[Mapping[str, object]] = (),
) -> list[SeededContract]:
    """For each customer: a contract on rate card `list` in USD and one prepaid pool of `credit`.

    Written through ContractAdmin, the path AdminService and `rating dev` use (customer,
    contract, ledger accounts, the grant's funding transfers, audit rows, NOTIFY), `parallel`
    customers at a time. Results are in the order of `customer_ids`.
    """
    from rating_service.core.auth import Caller, Role
    from rating_service.core.money import format_decimal
    from rating_service.store.database import asyncpg_dsn, create_engine

    caller = Caller(tenant_id, "rating bench", Role.ADMIN)
    # Seeding is not measured: it skips the WAL flush at each of its commits (PostgreSQL
    # flushes within a moment anyway), and the session reset a pool sends on every release
    # (nothing here leaves session state behind); both cost more than the writes themselves.
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=parallel,
        reset=keep_session,
        server_settings={"synchronous_commit": "off"},
    )
    engine = create_engine(database_url, pool_size=1)
    # The catalog was loaded before and nothing changes it while seeding, so it may be kept in
    # memory without a change feed (reloading it for every contract was most of the cost).
    from rating_service.runtime.bootstrap import Components, ProcessRole
    from rating_service.settings import Settings

    built = Components(Settings(database_url=database_url), ProcessRole.SOLE_WRITER, engine, pool)
    admin = built.contract_admin
    slots = asyncio.Semaphore(parallel)

    async def open_one(customer_id: str) -> SeededContract:
        async with slots:
            await admin.create_customer(
                caller, {"customer_id": customer_id, "name": f"benchmark {customer_id}"}
            )
            contract = await admin.create_contract(
                caller,
                {
                    "customer_id": customer_id,
                    "term_start": TERM_START.isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    # The pool never runs dry in a run; if it did, refusals would show as errors.
                    "overage_policy": "block",
                    "rate_limits": list(rate_limits),
                },
            )
            granted = await admin.add_commitment(
                caller,
                {
                    "grant_id": f"bench-{customer_id}",
                    "contract_id": contract.contract_id,
                    "kind": "prepaid_commit",
                    "amount": format_decimal(credit),
                    "starts_at": TERM_START.isoformat(),
                },
            )
            return SeededContract(
                customer_id, contract.contract_id, granted.commitment.pool.pool_id
            )

    try:
        await built.catalogs.catalog(tenant_id)  # loaded once, before the parallel writers want it
        return list(await asyncio.gather(*(open_one(c) for c in customer_ids)))
    finally:
        await engine.dispose()
        await pool.close()


async def open_naive_pool(database_url: str, tenant_id: str) -> SeededContract:
    """The naive baseline's pool: a funded contract plus the revenue account its debits credit.

    The rating engine opens a contract's revenue accounts on first use; NaiveDebit only looks
    one up, so it is opened here.
    """
    from rating_service.core.ledger.accounts import AccountKind, revenue_account_id
    from rating_service.store.database import asyncpg_dsn
    from rating_service.store.ledger import open_accounts

    seeded = (await open_funded_contracts(database_url, tenant_id, ["cus_bench_naive"]))[0]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        revenue = revenue_account_id(seeded.contract_id, PRODUCT_KEY)
        await open_accounts(
            conn,
            tenant_id,
            seeded.contract_id,
            [(revenue, AccountKind.REVENUE, PRODUCT_KEY)],
            "USD",
        )
    finally:
        await conn.close()
    return seeded


async def seed_contracts(
    database_url: str,
    tenant_id: str,
    count: int,
    rate_limits: Sequence[Mapping[str, object]] = (),
) -> list[str]:
    """`count` active, funded contracts for RateAndDebit; their customer ids, in order.

    The hot scenario asks for 1, zipf for 10,000 (index 0 is the most drawn). Each is in force
    now on rate card `list` of the example catalog, in USD, with one prepaid pool holding far
    more than a run spends. Seeded before the server starts, so no cache needs telling.
    """
    batch = secrets.token_hex(3)
    customers = [f"cus_bench_{batch}_{i:05d}" for i in range(count)]
    if count < 1000:
        await open_funded_contracts(database_url, tenant_id, customers, rate_limits=rate_limits)
        return customers
    # Each contract costs this side about as much CPU as the database (a few dozen statements
    # through the admin code), so one process per core keeps both cores busy.
    shares = [customers[i::SEEDING_PROCESSES] for i in range(SEEDING_PROCESSES)]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(shares), mp_context=spawn) as processes:
        await asyncio.gather(
            *(
                loop.run_in_executor(processes, open_contracts_here, database_url, tenant_id, share)
                for share in shares
            )
        )
    return customers


def open_contracts_here(database_url: str, tenant_id: str, customer_ids: list[str]) -> None:
    """`open_funded_contracts` on an event loop of this process (for a seeding process)."""
    asyncio.run(open_funded_contracts(database_url, tenant_id, customer_ids))


METER_UNIT_PRICE = "0.000001"
"""Each meter product's price on the bench's card: small, so no run exhausts the hot pool."""


async def add_meter_products(built: Any, tenant_id: str) -> None:
    """The meters example's products, priced on a new version of `list` starting now."""
    from rating_service.cli.catalog_file import read_catalog_file
    from rating_service.core.auth import Caller, Role
    from rating_service.core.pricing.rate_card import rate_card_to_dict

    caller = Caller(tenant_id, "rating bench", Role.ADMIN)
    catalog = await built.catalogs.catalog(tenant_id)
    meters = read_catalog_file(Path(__file__).parents[1] / METERS_EXAMPLE)
    history = catalog.rate_cards["list"]
    latest: dict[str, Any] = rate_card_to_dict(history.versions[-1])
    start = datetime.now(UTC) + timedelta(seconds=1)
    version = {
        **latest,
        "version": int(latest["version"]) + 1,
        "effective_from": start.isoformat(),
        "effective_until": None,
        "prices": {
            **latest["prices"],
            **{
                product["key"]: {"model": "per_unit", "unit_price": METER_UNIT_PRICE}
                for product in meters["products"]
            },
        },
    }
    document = catalog.to_document()
    document["products"] = [*document["products"], *meters["products"]]
    # The open version closes where the new one starts (as UpdateRateCard would close it).
    cards = [
        {**card, "effective_until": start.isoformat()}
        if card["key"] == "list" and card["version"] == latest["version"]
        else card
        for card in document["rate_cards"]
    ]
    document["rate_cards"] = [*cards, version]
    await built.catalogs.apply(caller, document, dry_run=False)
    await asyncio.sleep(max((start - datetime.now(UTC)).total_seconds(), 0))


METERS_EXAMPLE = "rating_service/examples/meters.yaml"


async def prepare(database_url: str, workdir: Path, scenarios: Sequence[str]) -> Prepared:
    """Tenant, keys, catalog and seeded contracts, using the helpers `rating dev` uses."""
    # Imported here, not at the top: every load-generator process imports the benchmark's modules
    # again (it is spawned, to unpickle the request factories) and needs none of this.
    from rating_service.cli.dev import DEMO_TENANT, demo_api_key, load_example_catalog
    from rating_service.core.auth import Role, issue_key
    from rating_service.runtime.bootstrap import bootstrap
    from rating_service.settings import Settings

    async with bootstrap(Settings(database_url=database_url)) as built:
        with step(f"preparing tenant {DEMO_TENANT!r} with an admin and a rater key"):
            await demo_api_key(built.tenants, workdir / "admin-api-key")
            tenant = await built.tenants.find(DEMO_TENANT)
            rater = issue_key(tenant.tenant_id, Role.RATER, "rating bench", datetime.now(UTC))
            await built.tenants.add_key(rater.key, actor="rating bench")
        with step("loading the example catalog"):
            await load_example_catalog(built)
        if set(AGGREGATIONS) & set(scenarios):
            with step("adding the meters example's products to rate card list"):
                await add_meter_products(built, tenant.tenant_id)
    with step("opening the naive baseline's pool"):
        naive = await open_naive_pool(database_url, tenant.tenant_id)
    hot: list[str] = []
    limited: list[str] = []
    zipf: list[str] = []
    if ON_THE_HOT_CONTRACT & set(scenarios):
        with step("opening the hot contract"):
            hot = await seed_contracts(database_url, tenant.tenant_id, 1)
    if "hot-limited" in scenarios:
        with step("opening the hot contract with rate limits"):
            limited = await seed_contracts(database_url, tenant.tenant_id, 1, BENCH_RATE_LIMITS)
    if "zipf" in scenarios:
        with step(f"opening {ZIPF_CONTRACTS:,} zipf contracts"):
            zipf = await seed_contracts(database_url, tenant.tenant_id, ZIPF_CONTRACTS)
    return Prepared(
        tenant.tenant_id, rater.token, naive.pool_id, tuple(hot), tuple(zipf), tuple(limited)
    )
