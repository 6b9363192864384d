"""Failed and stuck invoice workflows, found through Temporal's visibility API and read from
their histories.

What ops look at before a replay: which invoice (contract, billing date, revision), which step
failed (or is stuck), with what error, after how many attempts, and since when; and, for one
invoice, each step of its run with the point a reset would restart it from.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHistory,
)
from temporalio.service import RPCError

from rating_service.workflows.invoice import INVOICE_STEPS

STUCK_AFTER = timedelta(minutes=10)
"""An invoice runs in seconds; one still running after this long is listed as stuck."""

LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker Temporal's SDK core records a local activity's outcome in."""


@dataclass(frozen=True)
class InvoiceKey:
    """The business key an invoice workflow's id is made of."""

    tenant_id: str
    contract_id: str
    billing_date: str
    revision: int


@dataclass(frozen=True)
class StepRun:
    """One step of an invoice run, as its history tells it.

    `reset_point` is the workflow task that started the step: a reset to it runs the step (and
    any later one) again in a new run; steps are idempotent, so what was done stays done.
    """

    step: str
    status: str
    attempts: int
    reset_point: int
    error: str = ""


@dataclass(frozen=True)
class InvoiceRun:
    """One run of an invoice workflow: its key, how it stands, and its steps."""

    workflow_id: str
    run_id: str
    key: InvoiceKey
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    steps: tuple[StepRun, ...]
    error: str

    @property
    def failing_step(self) -> StepRun | None:
        """The step that failed the run, or the one it is stuck in; None if neither."""
        for step in reversed(self.steps):
            if step.status != "completed":
                return step
        return None

    @property
    def since(self) -> datetime | None:
        """When it failed (or, running, since when it runs)."""
        return self.closed_at or self.started_at

    def reset_point(self, step: str) -> int | None:
        """The event a reset to `step` restarts from; None if the run never started it."""
        return next((s.reset_point for s in self.steps if s.step == step), None)


def invoice_key(workflow_id: str) -> InvoiceKey | None:
    """Read `invoice/<tenant>/<contract>/<billing date>[/r<n>]`; None for another workflow."""
    parts = workflow_id.split("/")
    if len(parts) not in (4, 5) or parts[0] != "invoice":
        return None
    revision = 0
    if len(parts) == 5:
        if not parts[4].startswith("r") or not parts[4][1:].isdigit():
            return None
        revision = int(parts[4][1:])
    return InvoiceKey(parts[1], parts[2], parts[3], revision)


def _failed_query(stuck_after: timedelta) -> str:
    """The visibility query of invoice runs that failed, or still run after `stuck_after`."""
    stuck_since = datetime.now(UTC) - stuck_after
    return (
        "WorkflowType = 'Invoice' AND (ExecutionStatus = 'Failed'"
        " OR ExecutionStatus = 'TimedOut' OR ExecutionStatus = 'Terminated'"
        " OR ExecutionStatus = 'Canceled' OR (ExecutionStatus = 'Running'"
        f" AND StartTime < '{stuck_since.isoformat()}'))"
    )


async def _failed_run(
    client: Client,
    execution: WorkflowExecution,
    tenant_id: str,
    contract_id: str | None,
    since: datetime | None,
) -> InvoiceRun | None:
    """The execution as a failed invoice run of the tenant, if it is one and still the latest."""
    key = invoice_key(execution.id)
    if key is None or key.tenant_id != tenant_id:
        return None
    if contract_id is not None and key.contract_id != contract_id:
        return None
    latest = await _latest(client, execution.id)
    if latest is None or latest.run_id != execution.run_id:
        return None  # replayed since, or gone
    run = await invoice_run(client, latest)
    if since is not None and (run.since is None or run.since < since):
        return None
    return run


async def failed_invoices(
    client: Client,
    tenant_id: str,
    *,
    contract_id: str | None = None,
    since: datetime | None = None,
    stuck_after: timedelta = STUCK_AFTER,
    limit: int = 100,
) -> list[InvoiceRun]:
    """The tenant's invoices whose latest run failed, or is stuck; latest first.

    A failed run that has since been replayed is not listed: its workflow has a newer run.
    """
    found: list[InvoiceRun] = []
    seen: set[str] = set()
    async for execution in client.list_workflows(_failed_query(stuck_after)):
        if execution.id in seen:
            continue
        run = await _failed_run(client, execution, tenant_id, contract_id, since)
        if run is None:
            continue
        seen.add(execution.id)
        found.append(run)
        if len(found) == limit:
            break
    return found


@dataclass(frozen=True)
class FailedPage:
    """One page of failed invoice runs, and the visibility token of the next (b"": the last)."""

    runs: list[InvoiceRun]
    next_page_token: bytes


class BadPageToken(Exception):
    """Temporal refused the page token: it is not one its visibility API gave."""


async def failed_invoices_page(
    client: Client,
    tenant_id: str,
    *,
    contract_id: str | None = None,
    since: datetime | None = None,
    stuck_after: timedelta = STUCK_AFTER,
    page_size: int = 100,
    page_token: bytes | None = None,
) -> FailedPage:
    """One page of the visibility listing of failed invoice runs, filtered to the tenant's.

    Pages are Temporal's: `page_size` executions are read per page and those that are not the
    tenant's failed invoices (or no longer their workflow's latest run) are left out, so a page
    may hold fewer runs than `page_size`, even none, with more to follow. Each workflow is
    listed at most once across pages: only its latest run qualifies.
    """
    executions = client.list_workflows(
        _failed_query(stuck_after), page_size=page_size, next_page_token=page_token or None
    )
    try:
        await executions.fetch_next_page()
    except RPCError as error:
        if page_token:
            raise BadPageToken(error.message) from error
        raise
    runs = []
    for execution in executions.current_page or []:
        run = await _failed_run(client, execution, tenant_id, contract_id, since)
        if run is not None:
            runs.append(run)
    return FailedPage(runs, executions.next_page_token or b"")


async def _latest(client: Client, workflow_id: str) -> WorkflowExecution | None:
    """The workflow's latest run, or None if the server no longer knows it."""
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return None


async def find_invoice_run(client: Client, tenant_id: str, workflow_id: str) -> InvoiceRun | None:
    """The latest run of one of the tenant's invoice workflows; None if there is none."""
    key = invoice_key(workflow_id)
    if key is None or key.tenant_id != tenant_id:
        return None
    latest = await _latest(client, workflow_id)
    return None if latest is None else await invoice_run(client, latest)


async def invoice_run(client: Client, execution: WorkflowExecution) -> InvoiceRun:
    """An invoice run summarised from its history (and, while it runs, its pending step)."""
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    history = await handle.fetch_history()
    key = invoice_key(execution.id)
    assert key is not None, "only invoice workflows are summarised"
    steps, error = summarise(history)
    status = _status_name(execution.status)
    if execution.status == WorkflowExecutionStatus.RUNNING:
        status = "running"
        steps = await _with_pending(client, execution, steps)
    return InvoiceRun(
        execution.id,
        execution.run_id,
        key,
        status,
        execution.start_time,
        execution.close_time,
        steps,
        error,
    )


def _status_name(status: WorkflowExecutionStatus | None) -> str:
    return "unknown" if status is None else status.name.lower()


async def _with_pending(
    client: Client, execution: WorkflowExecution, steps: tuple[StepRun, ...]
) -> tuple[StepRun, ...]:
    """A running invoice's steps, with the step it is in now (its attempts and last error)."""
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        running = StepRun(
            pending.activity_type.name,
            "running",
            pending.attempt,
            steps[-1].reset_point if steps else 0,
            _root(pending.last_failure).message if pending.HasField("last_failure") else "",
        )
        return (*[s for s in steps if s.step != running.step], running)
    # A local step shows in no list: ask the workflow where it is. No worker may be there to
    # answer (that may be why it is stuck): the history alone then tells what it did.
    with contextlib.suppress(Exception):
        step = await handle.query("step", rpc_timeout=timedelta(seconds=3))
        if step in INVOICE_STEPS and step not in {s.step for s in steps}:
            point = steps[-1].reset_point if steps else 0
            return (*steps, StepRun(step, "running", 0, point))
    return steps


def summarise(history: WorkflowHistory) -> tuple[tuple[StepRun, ...], str]:
    """Each step the run took (in order, with attempts and reset point), and the run's error.

    An ordinary activity shows as scheduled, started (with its attempt) and closed events; a
    local activity (the invoice's database steps) as one marker recorded when it ended.
    """
    steps: dict[int, StepRun] = {}
    error = ""
    for event in history.events:
        _take(event, steps)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            error = _root(event.workflow_execution_failed_event_attributes.failure).message
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            error = "terminated: " + event.workflow_execution_terminated_event_attributes.reason
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            error = "the workflow timed out"
    return tuple(steps.values()), error


def _take(event: HistoryEvent, steps: dict[int, StepRun]) -> None:
    """Fold one history event into the steps seen so far, keyed by their first event."""
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        scheduled = event.activity_task_scheduled_event_attributes
        steps[event.event_id] = StepRun(
            scheduled.activity_type.name, "running", 0, scheduled.workflow_task_completed_event_id
        )
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
        started = event.activity_task_started_event_attributes
        steps[started.scheduled_event_id] = replace(
            steps[started.scheduled_event_id], attempts=started.attempt
        )
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        done = event.activity_task_completed_event_attributes
        steps[done.scheduled_event_id] = replace(steps[done.scheduled_event_id], status="completed")
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
        failed = event.activity_task_failed_event_attributes
        steps[failed.scheduled_event_id] = replace(
            steps[failed.scheduled_event_id], status="failed", error=_root(failed.failure).message
        )
    elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
        timed_out = event.activity_task_timed_out_event_attributes
        steps[timed_out.scheduled_event_id] = replace(
            steps[timed_out.scheduled_event_id], status="timed_out", error="timed out"
        )
    elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != LOCAL_ACTIVITY_MARKER:
            return
        recorded = _marker_data(marker.details)
        failed_step = marker.HasField("failure")
        steps[event.event_id] = StepRun(
            str(recorded.get("activity_type", "")),
            "failed" if failed_step else "completed",
            int(recorded.get("attempt", 1)),
            marker.workflow_task_completed_event_id,
            _root(marker.failure).message if failed_step else "",
        )


def _marker_data(details: Mapping[str, Payloads]) -> dict[str, Any]:
    data = details.get("data")
    if data is None or not data.payloads:
        return {}
    recorded = json.loads(data.payloads[0].data)
    return recorded if isinstance(recorded, dict) else {}


def _root(failure: Failure) -> Failure:
    """The error the step itself reported: the first application failure in the chain.

    Above it are Temporal's wrappers (activity, child workflow); below it, the exceptions it
    was raised from, whose messages say less than the one the step wrote for ops.
    """
    while not failure.HasField("application_failure_info") and failure.HasField("cause"):
        failure = failure.cause
    return failure
