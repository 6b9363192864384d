"""DiscountService over real gRPC and PostgreSQL: coupons, discounts on invoices, refusals.

The test catalog prices `calls` (tag `api`) at 1.00 each and small-model `tokens` (tag `llm`)
at 0.001 each. Contracts here have one-minute billing periods from now: events up to five
minutes ahead are accepted, so four periods of usage are rated at once and their invoices
drafted without waiting.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import pytest
from google.protobuf import json_format
from grpc import aio

from rating_client import RatingClient
from rating_client.gen.rating.v1 import discount_pb2, discount_pb2_grpc, rating_pb2
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import Invoice, LineKind
from rating_service.core.billing.postings import DISCOUNTS_REVENUE
from rating_service.core.ledger.accounts import receivable_account_id, revenue_account_id
from rating_service.settings import Settings
from rating_service.store.database import asyncpg_dsn
from rating_service.store.ledger import reconcile
from tests.conftest import TenantKeys, refusal
from tests.integration.cycles import database, open_billing_contract, open_invoicing

if TYPE_CHECKING:
    Stub: TypeAlias = discount_pb2_grpc.DiscountServiceAsyncStub

D = Decimal
PERIOD = timedelta(seconds=60)


@pytest.fixture
def stub(channel: aio.Channel) -> Stub:
    return discount_pb2_grpc.DiscountServiceStub(channel)


def coupon(**fields: Any) -> discount_pb2.Coupon:
    terms = {"coupon_id": "API25", "name": "API launch", "duration": "once", **fields}
    return json_format.ParseDict(terms, discount_pb2.Coupon())


async def create(client: RatingClient, **fields: Any) -> discount_pb2.CreateCouponResponse:
    return await client.call(
        client.discounts.CreateCoupon, discount_pb2.CreateCouponRequest(coupon=coupon(**fields))
    )


async def apply(
    client: RatingClient, request_id: str, contract_id: str, coupon_id: str = "API25"
) -> discount_pb2.ApplyCouponResponse:
    return await client.call(
        client.discounts.ApplyCoupon,
        discount_pb2.ApplyCouponRequest(
            request_id=request_id, contract_id=contract_id, coupon_id=coupon_id
        ),
    )


async def rate(
    client: RatingClient, customer_id: str, event_id: str, at: datetime, **usage: str
) -> None:
    event_type = "llm.completion" if "tokens" in usage else "api.call"
    await client.rate_and_debit(
        event_id=event_id,
        customer_id=customer_id,
        event_type=event_type,
        properties=usage,
        timestamp=at,
    )


async def posted(
    conn: asyncpg.Connection, tenant_id: str, account_id: str
) -> tuple[Decimal, Decimal]:
    """An account's (debits posted, credits posted)."""
    row = await conn.fetchrow(
        "SELECT debits_posted, credits_posted FROM accounts"
        " WHERE tenant_id = $1 AND account_id = $2",
        tenant_id,
        account_id,
    )
    assert row is not None, account_id
    return row["debits_posted"], row["credits_posted"]


def discount_lines(invoice: Invoice) -> list[tuple[str, Decimal]]:
    return [(line.key, line.amount) for line in invoice.lines if line.kind is LineKind.COUPON]


async def test_a_three_period_coupon_discounts_the_invoices_of_three_periods(
    client: RatingClient, acme: TenantKeys, settings: Settings
) -> None:
    await create(
        client, percent_off="25", duration="repeating", duration_periods=3, product_tags=["api"]
    )
    contract = await open_billing_contract(client, "cus-coupon", period_seconds=60, periods=6)
    applied = await apply(client, "apply-1", contract.contract_id)
    discount = applied.discount
    assert not applied.replay
    # Applied in the first period: it covers periods 1 to 3.
    assert discount.starts_at.ToDatetime(UTC) == contract.term_start
    assert discount.ends_before.ToDatetime(UTC) == contract.term_start + 3 * PERIOD
    again = await apply(client, "apply-1", contract.contract_id)
    assert (again.replay, again.discount.discount_id) == (True, discount.discount_id)

    start = contract.term_start
    calls = {1: 8, 2: 4, 3: 10, 4: 6}
    for period, count in calls.items():
        for n in range(count):
            at = start + (period - 1) * PERIOD + timedelta(seconds=5 + n)
            await rate(client, contract.customer_id, f"c-{period}-{n}", at)
    # Tokens are out of the coupon's scope: 1000 × 0.001 = 1.00, never discounted.
    await rate(
        client, contract.customer_id, "t-2", start + PERIOD + timedelta(seconds=30),
        tokens="1000", model="small",
    )  # fmt: skip

    # Previewed now, in period 1: 8 calls = 8.00, 25% off = −2.00.
    preview = await client.call(
        client.rating.PreviewInvoice,
        rating_pb2.PreviewInvoiceRequest(contract_id=contract.contract_id),
    )
    previewed = [
        (line.kind, line.amount) for line in preview.invoice.lines if line.kind == "coupon"
    ]
    assert previewed == [("coupon", "-2.00")]
    assert preview.invoice.total == "6.00"

    key = f"coupon:{discount.discount_id}"
    async with open_invoicing(settings) as invoicing:
        invoices = [
            await invoicing.draft(acme.tenant_id, contract.contract_id, start + k * PERIOD)
            for k in (1, 2, 3, 4)
        ]
    assert all(invoice is not None for invoice in invoices)
    drafted = [invoice for invoice in invoices if invoice is not None]
    # 25% of 8.00, 4.00 (not of the 1.00 of tokens), 10.00; none in period 4.
    assert [discount_lines(invoice) for invoice in drafted] == [
        [(key, D("-2.00"))],
        [(key, D("-1.00"))],
        [(key, D("-2.50"))],
        [],
    ]
    assert [invoice.total for invoice in drafted] == [D("6.00"), D("4.00"), D("7.50"), D("6.00")]

    # Finalized, the first invoice owes 6.00; the 2.00 given away is debited to the contract's
    # discounts (contra-revenue) account, and the ledger still reconciles.
    async with open_invoicing(settings) as invoicing:
        await invoicing.finalize(acme.tenant_id, drafted[0].invoice_id)
    async with database(settings) as conn:
        owed = await posted(conn, acme.tenant_id, receivable_account_id(contract.contract_id))
        given = await posted(
            conn, acme.tenant_id, revenue_account_id(contract.contract_id, DISCOUNTS_REVENUE)
        )
        assert owed[0] - owed[1] == D("6.00")
        assert given == (D("2.00"), D(0))
        assert all(report.clean for report in (await reconcile(conn)).values())

    listed = await client.call(
        client.discounts.ListContractDiscounts,
        discount_pb2.ListContractDiscountsRequest(contract_id=contract.contract_id),
    )
    assert [d.discount_id for d in listed.discounts] == [discount.discount_id]
    got = await client.call(
        client.discounts.GetCoupon, discount_pb2.GetCouponRequest(coupon_id="API25")
    )
    assert got.coupon.redemptions == 1


async def test_a_removed_discount_leaves_the_period_of_its_removal_undiscounted(
    client: RatingClient, acme: TenantKeys, settings: Settings
) -> None:
    await create(client, amount_off="3.00", currency="USD", duration="forever")
    contract = await open_billing_contract(client, "cus-remove", period_seconds=60, periods=3)
    applied = await apply(client, "apply-r", contract.contract_id)
    await rate(client, contract.customer_id, "c-1", contract.term_start + timedelta(seconds=5))
    removed = await client.call(
        client.discounts.RemoveDiscount,
        discount_pb2.RemoveDiscountRequest(
            contract_id=contract.contract_id, discount_id=applied.discount.discount_id
        ),
    )
    assert removed.discount.HasField("removed_at")
    # Removed in the period it started: it never discounts anything.
    assert removed.discount.ends_before == removed.discount.starts_at
    async with open_invoicing(settings) as invoicing:
        invoice = await invoicing.draft(
            acme.tenant_id, contract.contract_id, contract.term_start + PERIOD
        )
    assert invoice is not None and discount_lines(invoice) == []
    assert invoice.total == D("1.00")


async def test_an_amount_off_never_takes_an_invoice_below_zero(
    client: RatingClient, acme: TenantKeys, settings: Settings
) -> None:
    await create(client, amount_off="50.00", currency="USD")
    contract = await open_billing_contract(client, "cus-cap", period_seconds=60, periods=2)
    applied = await apply(client, "apply-cap", contract.contract_id)
    for n in range(3):
        await rate(
            client, contract.customer_id, f"c-{n}", contract.term_start + timedelta(seconds=n)
        )
    async with open_invoicing(settings) as invoicing:
        invoice = await invoicing.draft(
            acme.tenant_id, contract.contract_id, contract.term_start + PERIOD
        )
    assert invoice is not None
    assert discount_lines(invoice) == [(f"coupon:{applied.discount.discount_id}", D("-3.00"))]
    assert invoice.total == 0


async def coupon_state(database_url: str, tenant_id: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT coupon_id, redemptions FROM coupons WHERE tenant_id = $1 ORDER BY 1",
            tenant_id,
        )
        discounts = await conn.fetchval(
            "SELECT count(*) FROM contract_discounts WHERE tenant_id = $1 AND removed_at IS NULL",
            tenant_id,
        )
    finally:
        await conn.close()
    return [(r["coupon_id"], r["redemptions"]) for r in rows] + [("discounts", discounts)]


async def test_refusals_change_nothing(
    client: RatingClient,
    stub: Stub,
    acme: TenantKeys,
    globex: TenantKeys,
    database_url: str,
) -> None:
    admin, rater = acme.metadata(Role.ADMIN), acme.metadata(Role.RATER)
    await create(client, coupon_id="ONCE", percent_off="10", max_redemptions=1)
    await create(client, coupon_id="EUROS", amount_off="5.00", currency="EUR", duration="forever")
    await create(client, coupon_id="OLD", percent_off="10", redeem_by="2020-01-01T00:00:00Z")
    first = await open_billing_contract(client, "cus-a", period_seconds=60, periods=2)
    second = await open_billing_contract(client, "cus-b", period_seconds=60, periods=2)
    first_discount = (await apply(client, "a-1", first.contract_id, "ONCE")).discount.discount_id
    before = await coupon_state(database_url, acme.tenant_id)
    assert before == [("EUROS", 0), ("OLD", 0), ("ONCE", 1), ("discounts", 1)]

    def applying(request_id: str, contract_id: str, coupon_id: str) -> Any:
        return discount_pb2.ApplyCouponRequest(
            request_id=request_id, contract_id=contract_id, coupon_id=coupon_id
        )

    refusals: list[tuple[Awaitable[object], tuple[str, str, set[str]]]] = [
        # max redemptions reached
        (stub.ApplyCoupon(applying("b-1", second.contract_id, "ONCE"), metadata=admin),
         ("FAILED_PRECONDITION", "COUPON_EXHAUSTED", set())),
        # an amount off in EUR on a USD contract
        (stub.ApplyCoupon(applying("b-2", second.contract_id, "EUROS"), metadata=admin),
         ("FAILED_PRECONDITION", "COUPON_CURRENCY_MISMATCH", set())),
        (stub.ApplyCoupon(applying("b-3", second.contract_id, "OLD"), metadata=admin),
         ("FAILED_PRECONDITION", "COUPON_EXPIRED", set())),
        (stub.ApplyCoupon(applying("b-4", second.contract_id, "NOPE"), metadata=admin),
         ("NOT_FOUND", "COUPON_NOT_FOUND", set())),
        # the same request id for another coupon
        (stub.ApplyCoupon(applying("a-1", first.contract_id, "OLD"), metadata=admin),
         ("ALREADY_EXISTS", "IDEMPOTENCY_KEY_MISMATCH", set())),
        # wrong role: a rater key may read, never write
        (stub.ApplyCoupon(applying("b-5", second.contract_id, "EUROS"), metadata=rater),
         ("PERMISSION_DENIED", "", set())),
        (stub.CreateCoupon(discount_pb2.CreateCouponRequest(coupon=coupon(coupon_id="R")),
                           metadata=rater),
         ("PERMISSION_DENIED", "", set())),
        (stub.ArchiveCoupon(discount_pb2.ArchiveCouponRequest(coupon_id="ONCE"), metadata=rater),
         ("PERMISSION_DENIED", "", set())),
        (stub.RemoveDiscount(discount_pb2.RemoveDiscountRequest(
            contract_id=first.contract_id, discount_id=first_discount), metadata=rater),
         ("PERMISSION_DENIED", "", set())),
        (stub.RemoveDiscount(discount_pb2.RemoveDiscountRequest(
            contract_id=first.contract_id, discount_id=first_discount),
            metadata=globex.metadata(Role.ADMIN)),
         ("NOT_FOUND", "CONTRACT_NOT_FOUND", set())),
        (stub.RemoveDiscount(discount_pb2.RemoveDiscountRequest(
            contract_id=second.contract_id, discount_id=first_discount), metadata=admin),
         ("NOT_FOUND", "DISCOUNT_NOT_FOUND", set())),
        # wrong tenant: globex cannot see acme's contract or coupons
        (stub.ApplyCoupon(applying("g-1", first.contract_id, "EUROS"),
                          metadata=globex.metadata(Role.ADMIN)),
         ("NOT_FOUND", "CONTRACT_NOT_FOUND", set())),
        (stub.GetCoupon(discount_pb2.GetCouponRequest(coupon_id="ONCE"),
                        metadata=globex.metadata(Role.ADMIN)),
         ("NOT_FOUND", "COUPON_NOT_FOUND", set())),
        (stub.ListContractDiscounts(
            discount_pb2.ListContractDiscountsRequest(contract_id=first.contract_id),
            metadata=globex.metadata(Role.ADMIN)),
         ("NOT_FOUND", "CONTRACT_NOT_FOUND", set())),
        # bad input, each field named
        (stub.CreateCoupon(discount_pb2.CreateCouponRequest(
            coupon=coupon(coupon_id="BAD", percent_off="150")), metadata=admin),
         ("INVALID_ARGUMENT", "", {"coupon.percent_off"})),
        (stub.CreateCoupon(discount_pb2.CreateCouponRequest(
            coupon=coupon(coupon_id="BAD", percent_off="5", product_keys=["nope"])),
            metadata=admin),
         ("INVALID_ARGUMENT", "CATALOG_MISMATCH", {"coupon.product_keys"})),
        (stub.CreateCoupon(discount_pb2.CreateCouponRequest(
            coupon=coupon(coupon_id="ONCE", percent_off="20", max_redemptions=1)),
            metadata=admin),
         ("ALREADY_EXISTS", "IDEMPOTENCY_KEY_MISMATCH", set())),
        (stub.ApplyCoupon(applying("", "", "ONCE"), metadata=admin),
         ("INVALID_ARGUMENT", "", {"request_id", "contract_id"})),
        (stub.ListCoupons(discount_pb2.ListCouponsRequest(page_token="garbage"), metadata=admin),
         ("INVALID_ARGUMENT", "", {"page_token"})),
    ]  # fmt: skip
    for call, expected in refusals:
        code, reason, fields = await refusal(call)
        assert (code, reason if expected[1] else "", fields) == expected
    assert await coupon_state(database_url, acme.tenant_id) == before
    assert await coupon_state(database_url, globex.tenant_id) == [("discounts", 0)]

    # A rater reads; the listing pages by id.
    page = await stub.ListCoupons(discount_pb2.ListCouponsRequest(page_size=2), metadata=rater)
    assert [c.coupon_id for c in page.coupons] == ["EUROS", "OLD"]
    rest = await stub.ListCoupons(
        discount_pb2.ListCouponsRequest(page_size=2, page_token=page.next_page_token),
        metadata=rater,
    )
    assert ([c.coupon_id for c in rest.coupons], rest.next_page_token) == (["ONCE"], "")

    # An archived coupon makes no new discount; the one it made stays.
    archived = await stub.ArchiveCoupon(
        discount_pb2.ArchiveCouponRequest(coupon_id="EUROS"), metadata=admin
    )
    assert archived.coupon.HasField("archived_at")
    code, reason, _ = await refusal(
        stub.ApplyCoupon(applying("b-6", second.contract_id, "EUROS"), metadata=admin)
    )
    assert (code, reason) == ("FAILED_PRECONDITION", "COUPON_ARCHIVED")
