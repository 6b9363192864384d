"""PortalService: a signed link reads one customer's account and nothing else."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from grpc import aio

from rating_client import RatingClient
from rating_client.gen.rating.v1 import (
    catalog_pb2,
    portal_pb2,
    portal_pb2_grpc,
    rating_pb2,
    rating_pb2_grpc,
)
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys, refusal
from tests.integration.billing import open_account


def portal(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Portal {token}"),)


async def open_link(
    stub: portal_pb2_grpc.PortalServiceAsyncStub, acme: TenantKeys, customer_id: str, ttl: int = 0
) -> portal_pb2.CreatePortalSessionResponse:
    return await stub.CreatePortalSession(
        portal_pb2.CreatePortalSessionRequest(customer_id=customer_id, ttl_seconds=ttl),
        metadata=acme.metadata(Role.OPS),
    )


async def test_a_link_reads_its_customer_and_sees_a_debit(
    server: RunningServer, client: RatingClient, acme: TenantKeys, channel: aio.Channel
) -> None:
    account = await open_account(client, "cust-portal")
    pool = await account.grant("50", grant_id="g-portal")
    stub = portal_pb2_grpc.PortalServiceStub(channel)
    link = await open_link(stub, acme, "cust-portal")
    assert link.url.endswith(f"/portal/{link.token}")

    before = await stub.GetPortalAccount(
        portal_pb2.GetPortalAccountRequest(), metadata=portal(link.token)
    )
    assert before.customer.customer_id == "cust-portal"
    assert before.contract.contract_id == account.contract_id
    assert {p.pool_id: p.remaining for p in before.balances.pools} == {pool: "50"}

    await account.call("portal-e1")  # an api.call costs 1
    after = await stub.GetPortalAccount(
        portal_pb2.GetPortalAccountRequest(), metadata=portal(link.token)
    )
    assert {p.pool_id: p.remaining for p in after.balances.pools} == {pool: "49"}
    assert [(r.product_key, r.quantity, r.amount) for r in after.usage.rows] == [
        ("calls", "1", "1")
    ]
    today = datetime.now(UTC).date().isoformat()
    assert [(d.day, d.amount, d.events) for d in after.daily_spend] == [(today, "1", 1)]

    quote = await stub.PortalQuote(
        portal_pb2.PortalQuoteRequest(
            lines=[catalog_pb2.UsageLine(product_key="calls", quantity="3")]
        ),
        metadata=portal(link.token),
    )
    assert quote.quote.total == "3"  # 3 calls × 1


async def test_a_link_cannot_name_another_customer_or_call_anything_else(
    server: RunningServer, client: RatingClient, acme: TenantKeys, channel: aio.Channel
) -> None:
    await open_account(client, "cust-a")
    await open_account(client, "cust-b")
    stub = portal_pb2_grpc.PortalServiceStub(channel)
    link = await open_link(stub, acme, "cust-a")
    rating = rating_pb2_grpc.RatingServiceStub(channel)
    code, reason, _ = await refusal(
        rating.GetBalances(
            rating_pb2.GetBalancesRequest(customer_id="cust-b"), metadata=portal(link.token)
        )
    )
    assert (code, reason) == ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
    # An API key does not read through the portal: it has its own RPCs.
    code, reason, _ = await refusal(
        stub.GetPortalAccount(
            portal_pb2.GetPortalAccountRequest(), metadata=acme.metadata(Role.ADMIN)
        )
    )
    assert (code, reason) == ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
    # A rater key cannot open links.
    code, reason, _ = await refusal(
        stub.CreatePortalSession(
            portal_pb2.CreatePortalSessionRequest(customer_id="cust-a"),
            metadata=acme.metadata(Role.RATER),
        )
    )
    assert (code, reason) == ("PERMISSION_DENIED", "ROLE_NOT_ALLOWED")
    code, _, _ = await refusal(
        stub.CreatePortalSession(
            portal_pb2.CreatePortalSessionRequest(customer_id="nobody"),
            metadata=acme.metadata(Role.OPS),
        )
    )
    assert code == "NOT_FOUND"


async def test_a_tampered_link_is_refused(
    server: RunningServer, client: RatingClient, acme: TenantKeys, channel: aio.Channel
) -> None:
    await open_account(client, "cust-a")
    await open_account(client, "cust-b")
    stub = portal_pb2_grpc.PortalServiceStub(channel)
    link = await open_link(stub, acme, "cust-a")
    version, payload, signature = link.token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["c"] = "cust-b"  # the same link, pointed at another customer
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    code, reason, _ = await refusal(
        stub.GetPortalAccount(
            portal_pb2.GetPortalAccountRequest(),
            metadata=portal(f"{version}.{forged}.{signature}"),
        )
    )
    assert (code, reason) == ("UNAUTHENTICATED", "PORTAL_LINK_INVALID")
