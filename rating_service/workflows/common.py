"""What several workflow modules share: retry policies, how a database step runs, durable sleeps,
the rule that a domain error fails an activity for good, and starting a workflow once.

Arguments and results of activities are plain dataclasses of strings and numbers (timestamps
ISO-8601, amounts decimal strings), so histories stay readable and replayable.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from rating_service.core.errors import DomainError

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")

STEP_TIMEOUT = timedelta(minutes=2)
STEP_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
"""A step failing this many times fails the invoice loudly, for ops to look at and replay."""

PAYMENT_TIMEOUT = timedelta(seconds=10)
PAYMENT_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
"""A gateway that keeps timing out leaves the invoice unpaid (for dunning), not failed."""

SETTLEMENT_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
"""An outage is waited out (these workflows live for months); a domain error fails at once."""

POLLS_PER_RUN = 200
"""Polls before continuing as new: a wait for a failed invoice may last weeks."""

LOCAL_STEPS = "local-steps"
"""Patch id: the database steps run as local activities, in the worker that runs the workflow.

They are short, idempotent database transactions: run locally, they skip a task queue round
trip and a workflow task each, which halves what an invoice costs Temporal and the worker.
Histories from before the patch replay with those steps as ordinary activities.
"""


@dataclass(frozen=True)
class ContractRef:
    """A contract of a tenant."""

    tenant_id: str
    contract_id: str


async def run_step(step: Callable[[Any, A], Awaitable[R]], argument: A, *, local: bool) -> R:
    """Run one idempotent database step: locally, or as a task (histories before LOCAL_STEPS)."""
    if local:
        return await workflow.execute_local_activity_method(
            step, argument, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRIES
        )
    return await workflow.execute_activity_method(
        step, argument, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRIES
    )


async def sleep_until(moment: datetime) -> None:
    """Sleep on a durable timer until `moment` (not at all when it has passed)."""
    remaining = (moment - workflow.now()).total_seconds()
    if remaining > 0:
        await workflow.sleep(remaining)


def domain_errors_are_final(
    step: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Wrap an activity so a domain error (bad data, a refused change) fails it for good.

    Its reason becomes the error type, so the workflow fails loudly and ops can fix the cause
    and replay it; anything else (a database or gateway outage) is retried.
    """

    @functools.wraps(step)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await step(*args, **kwargs)
        except DomainError as error:
            raise ApplicationError(
                str(error), type=error.reason or type(error).__name__, non_retryable=True
            ) from error

    return run


async def start_once(
    client: Client,
    run: Callable[[Any, A], Awaitable[Any]],
    argument: A,
    *,
    workflow_id: str,
    task_queue: str,
    reuse: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
) -> None:
    """Start a workflow under its business-key id; a redelivered row finds it and adds nothing."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            run, argument, id=workflow_id, task_queue=task_queue, id_reuse_policy=reuse
        )
