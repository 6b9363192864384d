"""What the worker registers: every workflow, and the activities bound to their dependencies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

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


def activities(billing: BillingActivities) -> Sequence[Callable[..., Any]]:
    """The activity callables, bound to the worker's dependencies."""
    return billing.all()
