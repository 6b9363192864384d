"""WebhookService: endpoints created, listed (paged) and disabled, and the delivery log read,
each refused to the wrong role and the wrong tenant, and changing nothing on bad input."""

from __future__ import annotations

from grpc import aio

from rating_client.gen.rating.v1 import webhook_pb2, webhook_pb2_grpc
from rating_service.core.auth import Role
from tests.conftest import TenantKeys, refusal


async def test_endpoints_and_their_log_through_the_api(
    channel: aio.Channel, acme: TenantKeys, globex: TenantKeys
) -> None:
    stub = webhook_pb2_grpc.WebhookServiceStub(channel)
    admin, ops = acme.metadata(Role.ADMIN), acme.metadata(Role.OPS)
    create = webhook_pb2.CreateWebhookEndpointRequest

    for request, field in (
        (create(), "url"),
        (create(url="ftp://example.com/hooks"), "url"),
        (create(url="https://example.com/hooks", topics=["no.such.topic"]), "topics"),
    ):
        code, _, fields = await refusal(stub.CreateWebhookEndpoint(request, metadata=admin))
        assert (code, fields) == ("INVALID_ARGUMENT", {field})
    code, _, _ = await refusal(
        stub.CreateWebhookEndpoint(create(url="https://example.com/hooks"), metadata=ops)
    )
    assert code == "PERMISSION_DENIED"
    listing = webhook_pb2.ListWebhookEndpointsRequest()
    assert list((await stub.ListWebhookEndpoints(listing, metadata=ops)).endpoints) == []

    made = [
        await stub.CreateWebhookEndpoint(
            create(url=f"https://example.com/hooks/{n}", topics=["invoice.issued"]),
            metadata=admin,
        )
        for n in range(3)
    ]
    assert all(m.secret.startswith("whsec_") for m in made)
    ids = sorted(m.endpoint.endpoint_id for m in made)
    listed = await stub.ListWebhookEndpoints(listing, metadata=ops)
    assert [e.endpoint_id for e in listed.endpoints] == ids
    assert all(list(e.topics) == ["invoice.issued"] for e in listed.endpoints)
    first = await stub.ListWebhookEndpoints(
        webhook_pb2.ListWebhookEndpointsRequest(page_size=2), metadata=ops
    )
    rest = await stub.ListWebhookEndpoints(
        webhook_pb2.ListWebhookEndpointsRequest(page_size=2, page_token=first.next_page_token),
        metadata=ops,
    )
    assert [e.endpoint_id for e in (*first.endpoints, *rest.endpoints)] == ids
    assert rest.next_page_token == ""
    other = globex.metadata(Role.ADMIN)
    assert list((await stub.ListWebhookEndpoints(listing, metadata=other)).endpoints) == []

    disable = webhook_pb2.DisableWebhookEndpointRequest(endpoint_id=ids[0])
    assert (await refusal(stub.DisableWebhookEndpoint(disable, metadata=other)))[:2] == (
        "NOT_FOUND",
        "WEBHOOK_ENDPOINT_NOT_FOUND",
    )
    assert (await refusal(stub.DisableWebhookEndpoint(disable, metadata=ops)))[0] == (
        "PERMISSION_DENIED"
    )
    disabled = await stub.DisableWebhookEndpoint(disable, metadata=admin)
    assert disabled.endpoint.HasField("disabled_at")
    again = await stub.DisableWebhookEndpoint(disable, metadata=admin)
    assert again.endpoint == disabled.endpoint  # disabled once

    deliveries = webhook_pb2.ListWebhookDeliveriesRequest
    assert list((await stub.ListWebhookDeliveries(deliveries(), metadata=ops)).deliveries) == []
    code, _, fields = await refusal(
        stub.ListWebhookDeliveries(deliveries(limit=1001), metadata=ops)
    )
    assert (code, fields) == ("INVALID_ARGUMENT", {"limit"})
    code, _, _ = await refusal(
        stub.ListWebhookDeliveries(deliveries(), metadata=acme.metadata(Role.RATER))
    )
    assert code == "PERMISSION_DENIED"
