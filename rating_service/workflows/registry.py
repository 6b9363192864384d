"""What the worker runs: every workflow, the activities bound to their dependencies, and how
outbox topics start workflows. Each lifecycle piece adds its lines here, and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from temporalio.client import Client
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from rating_service.outbox.dispatcher import Handler
from rating_service.outbox.topics import NOTIFICATION_TOPICS, Topic
from rating_service.services.credit_expiry import CreditExpiry
from rating_service.services.invoice import Invoicing
from rating_service.services.recharge import AutoRecharging
from rating_service.services.renewal import Renewals
from rating_service.services.trial import Trials
from rating_service.services.webhook import Webhooks
from rating_service.settings import Settings
from rating_service.workflows.billing import (
    BillingActivities,
    ContractBillingWorkflow,
    start_billing,
)
from rating_service.workflows.credit_expiry import (
    CreditExpiryWorkflow,
    ExpiryActivities,
    start_ended_expiry,
    start_expiry,
)
from rating_service.workflows.dunning import DunningActivities, DunningWorkflow, start_dunning
from rating_service.workflows.invoice import InvoiceActivities, InvoiceWorkflow
from rating_service.workflows.recharge import (
    AutoRechargeWorkflow,
    RechargeActivities,
    start_recharge,
)
from rating_service.workflows.renewal import RenewalActivities, RenewalWorkflow, start_renewal
from rating_service.workflows.trial import TrialActivities, TrialWorkflow, start_trial
from rating_service.workflows.webhook import (
    DeliveryPolicy,
    NotificationActivities,
    NotificationWorkflow,
    start_notifications,
)

WORKFLOWS: Sequence[type] = (
    ContractBillingWorkflow,
    InvoiceWorkflow,
    AutoRechargeWorkflow,
    NotificationWorkflow,
    DunningWorkflow,
    CreditExpiryWorkflow,
    RenewalWorkflow,
    TrialWorkflow,
)

SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        # Loaded once, outside the sandbox: C extensions must never be imported twice. Every
        # layer below the workflows, not the package: the workflows themselves stay sandboxed.
        "rating_service.core",
        "rating_service.services",
        "rating_service.store",
        "rating_service.outbox",
        "rating_service.payments",
        "rating_service.settings",
        "rating_service.failpoints",
        "rating_service.faults",
        "rating_service.background",
        "asyncpg",
        "sqlalchemy",
        "grpc",
        "google.protobuf",
        "fpdf",
    )
)
"""The workflow runner: Temporal's sandbox, passing the service's own modules through."""


class WorkerServices(Protocol):
    """The services activities act through; the composition root (`runtime.bootstrap`) has them."""

    @property
    def invoicing(self) -> Invoicing: ...
    @property
    def recharging(self) -> AutoRecharging: ...
    @property
    def webhooks(self) -> Webhooks: ...
    @property
    def credit_expiry(self) -> CreditExpiry: ...
    @property
    def renewals(self) -> Renewals: ...
    @property
    def trials(self) -> Trials: ...


def activities(services: WorkerServices) -> list[Callable[..., Any]]:
    """The activity callables, bound to the worker's services."""
    return [
        *BillingActivities(services.invoicing).all(),
        *InvoiceActivities(services.invoicing).all(),
        *RechargeActivities(services.recharging).all(),
        *NotificationActivities(services.webhooks).all(),
        *DunningActivities(services.invoicing).all(),
        *ExpiryActivities(services.credit_expiry).all(),
        *RenewalActivities(services.renewals).all(),
        *TrialActivities(services.trials).all(),
    ]


def outbox_handlers(
    client: Client, settings: Settings, webhooks: Webhooks
) -> dict[Topic, list[Handler]]:
    """Outbox topic → what delivering a row of it does (each idempotent on business keys)."""
    handlers: dict[Topic, list[Handler]] = {
        Topic.CONTRACT_CREATED: [
            start_billing(
                client,
                settings.temporal_task_queue,
                settings.invoice_grace_seconds,
                settings.billing_dates_per_run,
            ),
            start_renewal(client, settings.temporal_task_queue, settings.settlement_poll_seconds),
            start_trial(client, settings.temporal_task_queue),
        ],
        Topic.COMMITMENT_ADDED: [
            start_expiry(
                client,
                settings.temporal_task_queue,
                settings.expiry_warning_seconds,
                settings.settlement_poll_seconds,
            )
        ],
        Topic.COMMITMENT_ENDED: [
            start_ended_expiry(
                client,
                settings.temporal_task_queue,
                settings.expiry_warning_seconds,
                settings.settlement_poll_seconds,
            )
        ],
        Topic.AUTO_RECHARGE: [start_recharge(client, settings.temporal_task_queue)],
        Topic.PAYMENT_FAILED: [start_dunning(client, settings.temporal_task_queue)],
    }
    notify = start_notifications(
        client,
        settings.temporal_task_queue,
        webhooks,
        DeliveryPolicy.from_settings(settings),
    )
    for topic in NOTIFICATION_TOPICS:  # a topic may start other workflows too: append
        handlers.setdefault(topic, []).append(notify)
    return handlers
