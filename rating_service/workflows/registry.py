"""What the worker runs: every workflow, the activities bound to their dependencies, and how
outbox topics start workflows. Each lifecycle piece adds its lines here, and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from rating_service.failpoints import Failpoints
from rating_service.outbox.dispatcher import Handler
from rating_service.outbox.topics import NOTIFICATION_TOPICS, Topic
from rating_service.payments.gateway import PaymentGateway
from rating_service.services.credit_expiry import CreditExpiry
from rating_service.services.invoice import Invoicing
from rating_service.services.recharge import AutoRecharging
from rating_service.services.renewal import Renewals
from rating_service.services.webhook import Notifications, webhook_secret_keys
from rating_service.settings import Settings
from rating_service.workflows.billing import (
    BillingActivities,
    ContractBillingWorkflow,
    start_billing,
)
from rating_service.workflows.credit_expiry import (
    CreditExpiryWorkflow,
    ExpiryActivities,
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


@dataclass(frozen=True)
class WorkerDependencies:
    """What activities and outbox handlers may use."""

    pool: asyncpg.Pool
    engine: AsyncEngine
    gateway: PaymentGateway
    client: Client
    settings: Settings


def activities(deps: WorkerDependencies) -> list[Callable[..., Any]]:
    """The activity callables, bound to the worker's dependencies."""
    failpoints = Failpoints.parse(deps.settings.failpoints)
    invoicing = Invoicing(deps.pool, deps.engine, deps.gateway, failpoints=failpoints)
    recharging = AutoRecharging(deps.pool, deps.engine, deps.gateway)
    notifying = NotificationActivities(Notifications(deps.pool, webhook_secret_keys(deps.settings)))
    return [
        *BillingActivities(invoicing).all(),
        *InvoiceActivities(invoicing).all(),
        *RechargeActivities(recharging).all(),
        *notifying.all(),
        *DunningActivities(invoicing).all(),
        *ExpiryActivities(CreditExpiry(deps.pool)).all(),
        *RenewalActivities(Renewals(deps.pool, deps.engine)).all(),
    ]


def outbox_handlers(deps: WorkerDependencies) -> dict[Topic, list[Handler]]:
    """Outbox topic → what delivering a row of it does (each idempotent on business keys)."""
    settings = deps.settings
    handlers: dict[Topic, list[Handler]] = {
        Topic.CONTRACT_CREATED: [
            start_billing(
                deps.client, settings.temporal_task_queue, settings.invoice_grace_seconds
            ),
            start_renewal(
                deps.client, settings.temporal_task_queue, settings.settlement_poll_seconds
            ),
        ],
        Topic.COMMITMENT_ADDED: [
            start_expiry(
                deps.client,
                settings.temporal_task_queue,
                settings.expiry_warning_seconds,
                settings.settlement_poll_seconds,
            )
        ],
        Topic.AUTO_RECHARGE: [start_recharge(deps.client, settings.temporal_task_queue)],
        Topic.PAYMENT_FAILED: [start_dunning(deps.client, settings.temporal_task_queue)],
    }
    notify = start_notifications(
        deps.client,
        settings.temporal_task_queue,
        Notifications(deps.pool, webhook_secret_keys(deps.settings)),
        DeliveryPolicy.from_settings(settings),
    )
    for topic in NOTIFICATION_TOPICS:  # a topic may start other workflows too: append
        handlers.setdefault(topic, []).append(notify)
    return handlers
