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

from rating_service.invoicing import Invoicing
from rating_service.outbox import Handler, start_billing
from rating_service.payments.gateway import PaymentGateway
from rating_service.settings import Settings
from rating_service.store.contracts import CONTRACT_CREATED
from workflows.activities import BillingActivities
from workflows.billing import ContractBillingWorkflow
from workflows.invoice import InvoiceWorkflow

WORKFLOWS: Sequence[type] = (ContractBillingWorkflow, InvoiceWorkflow)

SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        # Loaded once, outside the sandbox: C extensions must never be imported twice.
        "rating_service",
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
    invoicing = Invoicing(deps.pool, deps.engine, deps.gateway)
    return [*BillingActivities(invoicing).all()]


def outbox_handlers(deps: WorkerDependencies) -> dict[str, list[Handler]]:
    """Outbox topic → what delivering a row of it does (each idempotent on business keys)."""
    settings = deps.settings
    return {
        CONTRACT_CREATED: [
            start_billing(deps.client, settings.temporal_task_queue, settings.invoice_grace_seconds)
        ],
    }
