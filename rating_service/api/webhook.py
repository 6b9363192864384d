"""WebhookService: a tenant's endpoints and their delivery log, as protos."""

from __future__ import annotations

from grpc import aio

from rating_client.gen.rating.v1 import webhook_pb2, webhook_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page
from rating_service.api.wire import timestamp
from rating_service.core.auth import Role
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.ops.actions import OperatorActions
from rating_service.services.webhook import Webhooks
from rating_service.store.webhook import DeliveryAttempt, WebhookEndpoint

READERS = (Role.ADMIN, Role.OPS)
DEFAULT_DELIVERIES = 100
MAX_DELIVERIES = 1000


class WebhookServicer(webhook_pb2_grpc.WebhookServiceServicer):
    """Converts WebhookService messages to Webhooks calls and back."""

    def __init__(self, webhooks: Webhooks, actions: OperatorActions) -> None:
        self._webhooks = webhooks
        self._actions = actions

    @allow(Role.ADMIN)
    async def CreateWebhookEndpoint(
        self, request: webhook_pb2.CreateWebhookEndpointRequest, context: aio.ServicerContext
    ) -> webhook_pb2.CreateWebhookEndpointResponse:
        if not request.url:
            raise InvalidArgument.of_field("url", "is required, e.g. https://example.com/hooks")
        caller = current_caller()
        created = await self._webhooks.add_endpoint(
            caller.tenant_id, request.url, list(request.topics), f"key:{caller.key_id}"
        )
        return webhook_pb2.CreateWebhookEndpointResponse(
            endpoint=endpoint_message(created.endpoint), secret=created.secret
        )

    @allow(*READERS)
    async def ListWebhookEndpoints(
        self, request: webhook_pb2.ListWebhookEndpointsRequest, context: aio.ServicerContext
    ) -> webhook_pb2.ListWebhookEndpointsResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str,), violations)
        violations.raise_if_any()
        every = await self._webhooks.endpoints(current_caller().tenant_id)
        endpoints, token = page.of_sorted(
            sorted(every, key=lambda e: e.endpoint_id), lambda e: (e.endpoint_id,)
        )
        return webhook_pb2.ListWebhookEndpointsResponse(
            endpoints=[endpoint_message(e) for e in endpoints], next_page_token=token
        )

    @allow(Role.ADMIN)
    async def DisableWebhookEndpoint(
        self, request: webhook_pb2.DisableWebhookEndpointRequest, context: aio.ServicerContext
    ) -> webhook_pb2.DisableWebhookEndpointResponse:
        if not request.endpoint_id:
            raise InvalidArgument.of_field("endpoint_id", "is required")
        caller = current_caller()
        disabled = await self._webhooks.disable_endpoint(
            caller.tenant_id, request.endpoint_id, f"key:{caller.key_id}"
        )
        return webhook_pb2.DisableWebhookEndpointResponse(endpoint=endpoint_message(disabled))

    @allow(*READERS)
    async def ListWebhookDeliveries(
        self, request: webhook_pb2.ListWebhookDeliveriesRequest, context: aio.ServicerContext
    ) -> webhook_pb2.ListWebhookDeliveriesResponse:
        if not 0 <= request.limit <= MAX_DELIVERIES:
            raise InvalidArgument.of_field(
                "limit", f"must be 0 (meaning {DEFAULT_DELIVERIES}) to {MAX_DELIVERIES}"
            )
        attempts = await self._webhooks.attempts(
            current_caller().tenant_id,
            request.event_id or None,
            request.limit or DEFAULT_DELIVERIES,
        )
        return webhook_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_message(a) for a in attempts]
        )

    @allow(*READERS)
    async def RedeliverWebhook(
        self, request: webhook_pb2.RedeliverWebhookRequest, context: aio.ServicerContext
    ) -> webhook_pb2.RedeliverWebhookResponse:
        violations = ViolationCollector()
        for name in ("event_id", "endpoint_id", "request_id"):
            if not getattr(request, name):
                violations.add(name, "is required")
        violations.raise_if_any()
        workflow_id = await self._actions.redeliver(
            current_caller(), request.event_id, request.endpoint_id, request.request_id
        )
        return webhook_pb2.RedeliverWebhookResponse(workflow_id=workflow_id)


def endpoint_message(endpoint: WebhookEndpoint) -> webhook_pb2.WebhookEndpoint:
    """The wire form of an endpoint (never its secret)."""
    message = webhook_pb2.WebhookEndpoint(
        endpoint_id=endpoint.endpoint_id,
        url=endpoint.url,
        topics=list(endpoint.topics or ()),
        created_at=timestamp(endpoint.created_at),
    )
    if endpoint.disabled_at is not None:
        message.disabled_at.CopyFrom(timestamp(endpoint.disabled_at))
    return message


def delivery_message(attempt: DeliveryAttempt) -> webhook_pb2.WebhookDelivery:
    """The wire form of one logged delivery attempt."""
    message = webhook_pb2.WebhookDelivery(
        endpoint_id=attempt.endpoint_id,
        event_id=attempt.event_id,
        topic=attempt.topic,
        attempt=attempt.attempt,
        status_code=attempt.status_code or 0,
        error=attempt.error or "",
        succeeded=attempt.succeeded,
    )
    if attempt.at is not None:
        message.at.CopyFrom(timestamp(attempt.at))
    return message
