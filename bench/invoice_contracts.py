"""The invoicing benchmark's contracts: one shared period, opened by ContractAdmin; their usage."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from bench_database import keep_session
from invoice_report import Progress

from rating_service.core.auth import Caller, Role
from rating_service.core.errors import DomainError
from rating_service.core.pricing.meter import UsageEvent
from rating_service.runtime.bootstrap import Components, ProcessRole
from rating_service.services.rating.engine import DebitEngine
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn, create_engine

RATE_CARD = "list"
PAYMENT_METHOD = "pm_ok"
"""The simulated gateway's card that always pays: every invoice is charged and settled."""

EVENTS_PER_CONTRACT = 3
"""Usage of each throughput and baseline contract: one event of each token type."""
TOKEN_TYPES = ("input", "cached_input", "output")

RATING_BATCH = 2000
"""Events handed to the DebitEngine at once (it commits them up to 512 per transaction)."""
SEEDING_PROCESSES = 2
"""Processes opening contracts: one per core of the benchmark machine."""
SEEDING_CHUNK = 100
"""Contracts a seeding process opens per call, so progress can be reported between calls."""
PAST_PERIOD = timedelta(hours=1)
"""Length of the latency and baseline contracts' period, which has ended when they are opened."""


@dataclass(frozen=True)
class Period:
    """The one billing period a phase's contracts share: [start, end), the end their term end."""

    start: datetime
    end: datetime

    def terms(self, customer_id: str) -> dict[str, object]:
        """A contract whose only period is this one, paid by a card that always pays."""
        return {
            "customer_id": customer_id,
            "term_start": self.start.isoformat(),
            "term_end": self.end.isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            "billing_interval_seconds": int((self.end - self.start).total_seconds()),
            "invoice_currency": "USD",
            "rate_card_key": RATE_CARD,
            # No pools: all usage is billed in arrears on the period's invoice.
            "overage_policy": "arrears",
            "payment_method": PAYMENT_METHOD,
        }

    def moment(self, index: int, count: int) -> datetime:
        """The index-th of `count` moments spread over the period, none after now."""
        span = min(self.end, datetime.now(UTC)) - self.start
        return self.start + span * index / max(count, 1)


def ended_period(length: timedelta = PAST_PERIOD) -> Period:
    """A period that ended a moment ago: its invoice is due as soon as a worker picks it up."""
    end = datetime.now(UTC).replace(microsecond=0)
    return Period(end - length, end)


@dataclass(frozen=True)
class BenchContract:
    """A contract the benchmark invoices."""

    customer_id: str
    contract_id: str


async def open_contracts(
    database_url: str,
    tenant_id: str,
    customer_ids: Sequence[str],
    period: Period,
    parallel: int = 8,
) -> list[BenchContract]:
    """A customer and a contract on `period` for each id, through ContractAdmin, in order."""
    caller = Caller(tenant_id, "invoice bench", Role.ADMIN)
    # Seeding is not measured: it skips the WAL flush at its commits and the session reset on
    # release, as bench/rating_seeding.py does.
    pool = await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=parallel,
        reset=keep_session,
        server_settings={"synchronous_commit": "off"},
    )
    engine = create_engine(database_url, pool_size=1)
    # Nothing changes the catalog meanwhile: kept in memory without a change feed.
    built = Components(Settings(database_url=database_url), ProcessRole.SOLE_WRITER, engine, pool)
    admin = built.contract_admin
    slots = asyncio.Semaphore(parallel)

    async def open_one(customer_id: str) -> BenchContract:
        async with slots:
            await admin.create_customer(
                caller, {"customer_id": customer_id, "name": f"benchmark {customer_id}"}
            )
            contract = await admin.create_contract(caller, period.terms(customer_id))
            return BenchContract(customer_id, contract.contract_id)

    try:
        await built.catalogs.catalog(tenant_id)  # loaded once, before the parallel writers want it
        return list(await asyncio.gather(*(open_one(c) for c in customer_ids)))
    finally:
        await engine.dispose()
        await pool.close()


def open_contracts_here(
    database_url: str, tenant_id: str, customer_ids: list[str], period: Period
) -> list[BenchContract]:
    """`open_contracts` on an event loop of this process (for a seeding process)."""
    return asyncio.run(open_contracts(database_url, tenant_id, customer_ids, period))


async def seed_contracts(
    database_url: str, tenant_id: str, label: str, count: int, period: Period
) -> list[BenchContract]:
    """`count` contracts on `period` (more than a chunk: by seeding processes, in no order)."""
    batch = secrets.token_hex(3)
    customers = [f"cus_{label}_{batch}_{i:05d}" for i in range(count)]
    if count <= SEEDING_CHUNK:
        return await open_contracts(database_url, tenant_id, customers, period)
    # Each contract costs this side about as much CPU as the database; other processes keep
    # this one's event loop free for the worker running in it.
    chunks = [customers[i : i + SEEDING_CHUNK] for i in range(0, count, SEEDING_CHUNK)]
    loop = asyncio.get_running_loop()
    spawn = multiprocessing.get_context("spawn")
    opened: list[BenchContract] = []
    progress = Progress()
    with ProcessPoolExecutor(SEEDING_PROCESSES, mp_context=spawn) as processes:
        calls = [
            loop.run_in_executor(
                processes, open_contracts_here, database_url, tenant_id, chunk, period
            )
            for chunk in chunks
        ]
        for done in asyncio.as_completed(calls):
            opened.extend(await done)
            progress.count(len(opened), count, "contracts")
    progress.close()
    return opened


def usage_event(period: Period, index: int, count: int) -> UsageEvent:
    """An LLM completion of 1,000 gpt-4o-mini tokens, token type cycling, inside the period."""
    return UsageEvent(
        "llm.completion",
        period.moment(index, count),
        {"tokens": "1000", "model": "gpt-4o-mini", "token_type": TOKEN_TYPES[index % 3]},
    )


class InProcessRating:
    """The DebitEngine RateAndDebit uses, run in this process to rate the benchmark's usage."""

    def __init__(self, engine: DebitEngine, tenant_id: str) -> None:
        self._engine = engine
        self.tenant_id = tenant_id

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, database_url: str, tenant_id: str) -> AsyncIterator[InProcessRating]:
        """An engine over its own pool, its committer running until the block ends."""
        # Seeding, not measured: commits skip the WAL flush (see open_contracts).
        pool = await asyncpg.create_pool(
            asyncpg_dsn(database_url),
            min_size=1,
            max_size=4,
            server_settings={"synchronous_commit": "off"},
        )
        sql = create_engine(database_url, pool_size=1)
        # Contracts are only added, never changed, while rating: a customer's book is read when
        # first rated (after its contract was opened) and may be kept without a change feed.
        settings = Settings(database_url=database_url)
        engine = Components(settings, ProcessRole.SOLE_WRITER, sql, pool).debits
        engine.start()
        try:
            yield cls(engine, tenant_id)
        finally:
            await engine.stop()
            await sql.dispose()
            await pool.close()

    async def rate(self, events: Sequence[tuple[str, str, UsageEvent]]) -> None:
        """Rate (customer id, event id, UsageEvent) triples; any refusal ends the benchmark."""
        for start in range(0, len(events), RATING_BATCH):
            outcomes = await self._engine.rate_in_order(
                self.tenant_id, list(events[start : start + RATING_BATCH])
            )
            refused = [o for o in outcomes if isinstance(o, DomainError)]
            if refused:
                raise SystemExit(f"{len(refused)} events were refused, the first: {refused[0]}")

    async def rate_each(self, contracts: Sequence[BenchContract], period: Period) -> None:
        """EVENTS_PER_CONTRACT events for each contract."""
        await self.rate(
            [
                (c.customer_id, f"{c.contract_id}-{i}", usage_event(period, i, EVENTS_PER_CONTRACT))
                for c in contracts
                for i in range(EVENTS_PER_CONTRACT)
            ]
        )

    async def rate_many(self, contract: BenchContract, period: Period, count: int) -> float:
        """`count` events for one contract, with progress lines; the events rated per second."""
        progress = Progress()
        for first in range(0, count, RATING_BATCH):
            last = min(first + RATING_BATCH, count)
            await self.rate(
                [
                    (
                        contract.customer_id,
                        f"{contract.contract_id}-{i}",
                        usage_event(period, i, count),
                    )
                    for i in range(first, last)
                ]
            )
            progress.count(last, count, "events")
        progress.close()
        return count / max(time.monotonic() - progress.started, 1e-9)
