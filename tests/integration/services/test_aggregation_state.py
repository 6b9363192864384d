"""Meter state lives with the ledger: a crash, a conflict or an invoice keep it exact.

The debit engine runs on a real PostgreSQL with its store made to fail *after* it wrote a
batch's rows and before the commit: as an outage (the caller is told to retry; nothing was
kept) or as a conflict (the engine retries the batch itself). Either way the retry must find
the entries as they were, so a distinct value is charged once and a gauge's area is exact.
Catalog: rating_service/examples/meters.yaml (P(q) = 2q up to 10, then 1 a unit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from rating_service.core.auth import Caller, Role
from rating_service.core.errors import DomainError
from rating_service.core.pricing.meter import UsageEvent
from rating_service.runtime.bootstrap import Components, ProcessRole
from rating_service.settings import Settings
from rating_service.store.database import Connection, asyncpg_dsn, create_engine
from rating_service.store.rating import BatchWrite, RatingStore
from tests.conftest import TenantKeys
from tests.integration.api.test_meter_aggregations import load_meters_catalog

D = Decimal


class CrashingStore(RatingStore):
    """The hot path's store, failing a batch after its rows are written, when armed."""

    armed: BaseException | None = None

    async def write_batch(self, conn: Connection, batch: BatchWrite) -> None:
        await super().write_batch(conn, batch)
        failure, self.armed = self.armed, None
        if failure is not None:
            raise failure


@pytest.fixture
async def engine(settings: Settings, acme: TenantKeys) -> AsyncIterator[tuple[Components, Any]]:
    """Components whose debit engine writes through a CrashingStore, the meters catalog loaded."""
    url = settings.database_url or ""
    await load_meters_catalog(url, acme.tenant_id)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=0, max_size=4)
    components = Components(settings, ProcessRole.COMMAND, create_engine(url, 2), pool)
    store = CrashingStore(pool)
    components.__dict__["rating_store"] = store  # before anything builds on it
    components.debits.start()
    try:
        yield components, store
    finally:
        await components.debits.stop()
        await components.close()


async def a_contract(
    components: Components,
    tenant_id: str,
    start: datetime,
    *,
    late_usage: str = "refuse",
    period_seconds: int = 60,
) -> str:
    """A customer `cus-state` and an arrears contract of three periods from `start`."""
    caller = Caller(tenant_id, "test", Role.ADMIN)
    admin = components.contract_admin
    await admin.create_customer(caller, {"customer_id": "cus-state", "name": "State Inc."})
    contract = await admin.create_contract(
        caller,
        {
            "customer_id": "cus-state",
            "term_start": start.isoformat(),
            "term_end": (start + timedelta(seconds=3 * period_seconds)).isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            "billing_interval_seconds": period_seconds,
            "invoice_currency": "USD",
            "rate_card_key": "list",
            "overage_policy": "arrears",
            "late_usage": late_usage,
        },
    )
    return contract.contract_id


async def stored(url: str, contract_id: str) -> tuple[list[tuple[str, Decimal]], list[Any]]:
    """The contract's aggregation entries and usage counters as committed."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        entries = await conn.fetch(
            "SELECT product_key, entry_key, value FROM aggregation_entries"
            " WHERE contract_id = $1 ORDER BY product_key, entry_key",
            contract_id,
        )
        counters = await conn.fetch(
            "SELECT period_start, product_key, cell, quantity, amount, events FROM usage_counters"
            " WHERE contract_id = $1 ORDER BY period_start, product_key, cell",
            contract_id,
        )
    finally:
        await conn.close()
    return [(r["entry_key"], r["value"]) for r in entries], [tuple(r) for r in counters]


async def test_a_crash_or_a_conflict_after_writing_keeps_the_entries_exact(
    engine: tuple[Components, CrashingStore], acme: TenantKeys, settings: Settings
) -> None:
    components, store = engine
    tenant = acme.tenant_id
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    contract_id = await a_contract(components, tenant, start)
    debits = components.debits

    async def rate(event_id: str, event_type: str, second: int, **properties: str) -> Decimal:
        event = UsageEvent(event_type, start + timedelta(seconds=second), properties)
        outcome = await debits.rate(tenant, "cus-state", event_id, event)
        assert not outcome.replay
        return outcome.result.charge

    assert await rate("u-ann", "user.request", 1, user_id="ann") == D(2)
    # An outage after the batch wrote bob: the caller is told to retry, nothing was kept.
    store.armed = asyncpg.ConnectionDoesNotExistError("the server went away")
    with pytest.raises(DomainError) as outage:
        await rate("u-bob", "user.request", 2, user_id="bob")
    assert outage.value.reason == "DEPENDENCY_UNAVAILABLE"
    entries, _ = await stored(settings.database_url or "", contract_id)
    assert entries == [("ann", D(1))]
    assert await rate("u-bob", "user.request", 2, user_id="bob") == D(2)  # new, not a repeat
    # A conflict after writing carl: the engine retries the batch on fresh state.
    store.armed = asyncpg.SerializationError("could not serialize access")
    assert await rate("u-carl", "user.request", 3, user_id="carl") == D(2)
    assert await rate("u-carl-2", "user.request", 4, user_id="carl") == D(0)

    # A gauge: 6 GPUs from second 0 to the period's end (60 s): 6/60 h = 0.1 → P = 0.2;
    # the stop at second 30 crashes once, then gives back 6 × 30 s = 0.05 h → −0.1.
    assert await rate("g-start", "gpu.instance", 0, gpus="6") == D("0.2")
    store.armed = asyncpg.ConnectionDoesNotExistError("the server went away")
    with pytest.raises(DomainError):
        await rate("g-stop", "gpu.instance", 30, gpus="0")
    assert await rate("g-stop", "gpu.instance", 30, gpus="0") == D("-0.1")
    store.armed = asyncpg.SerializationError("could not serialize access")
    # late: 2 GPUs from second 20 to the stop at 30: +(2 − 6) × 10 s = −1/90 h
    assert await rate("g-late", "gpu.instance", 20, gpus="2") == D("-0.022222222222")

    entries, counters = await stored(settings.database_url or "", contract_id)
    assert entries == [
        ("ann", D(1)),
        ("bob", D(1)),
        ("carl", D(1)),
        *(
            ((start + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.000000Z"), D(gpus))
            for s, gpus in ((0, 6), (20, 2), (30, 0))
        ),
    ]
    assert [(c[1], c[3], c[4], c[5]) for c in counters] == [
        ("active-users", D(3), D(6), 4),
        # 0.1 − 0.05 − 0.011111111111 (1/90 to 12 places) GPU-hours, at 2 a GPU-hour
        ("gpu-hours", D("0.038888888889"), D("0.077777777778"), 3),
    ]


async def test_a_correction_of_an_invoiced_period_is_booked_in_the_open_one(
    engine: tuple[Components, CrashingStore], acme: TenantKeys, settings: Settings
) -> None:
    components, _ = engine
    tenant = acme.tenant_id
    # The first 10-minute period has ended; the second is open (for 9.5 minutes more).
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=630)
    contract_id = await a_contract(
        components, tenant, start, late_usage="roll_forward", period_seconds=600
    )
    debits = components.debits

    async def job(event_id: str, seconds: str) -> Decimal:
        event = UsageEvent("finetune.job", start + timedelta(seconds=5), {"seconds": seconds})
        return (await debits.rate(tenant, "cus-state", event_id, event)).result.charge

    assert await job("j1", "8") == D(16)
    await components.invoicing.close_period(tenant, contract_id, start + timedelta(seconds=600))
    # Late for the invoiced period: priced on its final 8 seconds, billed on the next invoice.
    assert await job("j1-refund", "-3") == D(-6)  # P(5) − P(8)
    assert await job("j1-refund-2", "-9") == D(-10)  # limited to the 5 left: P(0) − P(5)
    assert await job("j1-refund-3", "-1") == D(0)

    _, counters = await stored(settings.database_url or "", contract_id)
    first, second = start, start + timedelta(seconds=600)
    label = f"correction of {first.isoformat()}"
    assert counters == [
        (first, "fine-tune-seconds", [], D(8), D(16), 1),  # the invoice stands
        (second, "fine-tune-seconds", [label], D(-8), D(-16), 3),
    ]
    # GetUsage: a correction does not grow with the period: its forecast is what it is now.
    usage = await components.account_views.usage(tenant, "cus-state", datetime.now(UTC))
    [row] = usage.rows
    assert (row.quantity, row.amount) == (row.forecast_quantity, row.forecast_amount)
    assert (row.quantity, row.amount) == (D(-8), D(-16))
    preview = await components.invoicing.preview(tenant, contract_id)
    [line] = [line for line in preview.lines if line.product_key == "fine-tune-seconds"]
    assert (line.description, line.quantity, line.amount) == (
        f"Fine-tuning seconds · {label}",
        D(-8),
        D("-16.00"),
    )
