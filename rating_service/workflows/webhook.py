"""NotificationWorkflow: one outbox event delivered to each subscribed webhook endpoint.

The outbox dispatcher only starts it (`start_notifications`), under an id derived from the
outbox row's business key, so billing never waits on an endpoint and a row delivered twice
starts nothing new. Each endpoint gets its own activity, in parallel, retried with exponential
backoff by Temporal (the policy comes from Settings and is recorded in the workflow's input);
every attempt is logged by the activity. When an endpoint has failed every attempt the
workflow still completes, with that endpoint's outcome `failed`: it never retries forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
)

with workflow.unsafe.imports_passed_through():
    from rating_service.outbox.dispatcher import Handler, OutboxRow
    from rating_service.services.webhook import DeliveryOutcome, NotificationEvent, Webhooks
    from rating_service.settings import Settings
    from rating_service.workflows.common import start_once

ATTEMPT_MARGIN = timedelta(seconds=10)
"""An attempt's time beyond the HTTP timeout: reading the endpoint and logging the attempt."""

WEBHOOK_FAILED = "WebhookDeliveryFailed"
"""Error type of a failed attempt (a non-2xx answer or none), retried by the policy."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long an attempt may take, and how failed attempts are retried (seconds)."""

    timeout_seconds: float
    initial_interval_seconds: float
    maximum_interval_seconds: float
    maximum_attempts: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """The policy the settings configure (`RATING_WEBHOOK_*`)."""
        return cls(
            settings.webhook_timeout_seconds,
            settings.webhook_retry_initial_seconds,
            settings.webhook_retry_max_seconds,
            settings.webhook_max_attempts,
        )

    def retry_policy(self) -> RetryPolicy:
        """Temporal's form: the wait doubles after each failed attempt, up to the maximum."""
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.initial_interval_seconds),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=self.maximum_interval_seconds),
            maximum_attempts=self.maximum_attempts,
        )


@dataclass(frozen=True)
class NotificationInput:
    """The event, the endpoints subscribed to it when it was raised, and the delivery policy."""

    event: NotificationEvent
    endpoint_ids: list[str]
    policy: DeliveryPolicy
    again: bool = False
    """A redelivery an operator asked for: sent even to endpoints that had it."""


@dataclass(frozen=True)
class WebhookDeliveryRequest:
    """Deliver one event to one endpoint, each attempt within `timeout_seconds`."""

    event: NotificationEvent
    endpoint_id: str
    timeout_seconds: float
    again: bool = False
    """Send even if the endpoint had it (an operator's redelivery)."""


@dataclass(frozen=True)
class WebhookDelivered:
    """How an endpoint's delivery ended without failing, and on which attempt."""

    outcome: str
    attempt: int
    status_code: int | None


@dataclass(frozen=True)
class EndpointOutcome:
    """One endpoint's result: delivered, already_delivered, endpoint_disabled or failed."""

    endpoint_id: str
    outcome: str
    attempts: int
    error: str = ""


@dataclass(frozen=True)
class NotificationResult:
    """What the workflow records when it completes: every endpoint's outcome."""

    event_id: str
    endpoints: list[EndpointOutcome]


def notification_workflow_id(event_id: str) -> str:
    """The notification workflow's id, from the outbox row's key: starting it twice is harmless."""
    return f"notify/{event_id}"


def redelivery_workflow_id(event_id: str, endpoint_id: str, request_id: str) -> str:
    """A redelivery's workflow id: the same request twice is one redelivery."""
    return f"notify/{event_id}/again/{endpoint_id}/{request_id}"


@workflow.defn(name="Notification")
class NotificationWorkflow:
    """Deliver one notification to every endpoint it is for; complete whatever they answer."""

    @workflow.run
    async def run(self, notification: NotificationInput) -> NotificationResult:
        """Deliver to the endpoints in parallel, so one down endpoint delays no other."""
        outcomes = await asyncio.gather(
            *(self._deliver(notification, endpoint_id) for endpoint_id in notification.endpoint_ids)
        )
        return NotificationResult(notification.event.event_id, list(outcomes))

    async def _deliver(self, notification: NotificationInput, endpoint_id: str) -> EndpointOutcome:
        policy = notification.policy
        try:
            done = await workflow.execute_activity_method(
                NotificationActivities.deliver_webhook,
                WebhookDeliveryRequest(
                    notification.event, endpoint_id, policy.timeout_seconds, notification.again
                ),
                start_to_close_timeout=timedelta(seconds=policy.timeout_seconds) + ATTEMPT_MARGIN,
                retry_policy=policy.retry_policy(),
            )
        except ActivityError as error:
            # Every attempt failed and is in the delivery log: give up on this endpoint.
            workflow.logger.warning(
                "notification %s to %s failed: %s",
                notification.event.event_id,
                endpoint_id,
                error.cause,
            )
            attempts = (
                policy.maximum_attempts
                if error.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED
                else 0
            )
            return EndpointOutcome(
                endpoint_id, str(DeliveryOutcome.FAILED), attempts, str(error.cause)
            )
        return EndpointOutcome(endpoint_id, done.outcome, done.attempt)


class NotificationActivities:
    """The notification activity, bound to one Webhooks."""

    def __init__(self, notifications: Webhooks) -> None:
        self._notifications = notifications

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, request: WebhookDeliveryRequest) -> WebhookDelivered:
        """Send the event to the endpoint once; a failed attempt is logged, then raised to retry."""
        attempt = activity.info().attempt
        result = await self._notifications.deliver(
            request.event,
            request.endpoint_id,
            attempt,
            request.timeout_seconds,
            again=request.again,
        )
        if result.outcome is DeliveryOutcome.FAILED:
            raise ApplicationError(
                f"attempt {attempt} to {request.endpoint_id}: {result.error}", type=WEBHOOK_FAILED
            )
        return WebhookDelivered(str(result.outcome), attempt, result.status_code)

    def all(self) -> list[Callable[..., Awaitable[object]]]:
        """Every activity, for the worker to register."""
        return [self.deliver_webhook]


def start_notifications(
    client: Client, task_queue: str, notifications: Webhooks, policy: DeliveryPolicy
) -> Handler:
    """Start an outbox row's notification workflow, if any endpoint of its tenant takes it."""

    async def start(row: OutboxRow) -> None:
        endpoint_ids = await notifications.subscribers(row.tenant_id, row.topic)
        if not endpoint_ids:
            return  # nobody listens: nothing to send, no workflow to run
        event = NotificationEvent(
            row.dedupe_key, row.tenant_id, row.topic, row.created_at.isoformat(), dict(row.payload)
        )
        # Delivered before: the notification is on its way (or done); never send it twice.
        await start_once(
            client,
            NotificationWorkflow.run,
            NotificationInput(event, endpoint_ids, policy),
            workflow_id=notification_workflow_id(event.event_id),
            task_queue=task_queue,
            reuse=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )

    return start
