"""Failed invoice workflows, found through Temporal's visibility API and read from their histories.

What ops look at before a replay: which invoice (contract, billing date, revision), which step
failed and with what error, and since when.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowHistory


@dataclass(frozen=True)
class InvoiceKey:
    """The business key an invoice workflow's id is made of."""

    tenant_id: str
    contract_id: str
    billing_date: str
    revision: int


@dataclass(frozen=True)
class FailedInvoice:
    """A failed invoice workflow: its key, the step that failed, the error, and when."""

    workflow_id: str
    run_id: str
    key: InvoiceKey
    step: str
    error: str
    since: datetime | None


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


async def failed_invoices(
    client: Client, tenant_id: str, *, contract_id: str | None = None, limit: int = 100
) -> list[FailedInvoice]:
    """The tenant's failed invoice workflows (of one contract, if given), latest first."""
    found: list[FailedInvoice] = []
    query = "WorkflowType = 'Invoice' AND ExecutionStatus = 'Failed'"
    async for execution in client.list_workflows(query):
        key = invoice_key(execution.id)
        if key is None or key.tenant_id != tenant_id:
            continue
        if contract_id is not None and key.contract_id != contract_id:
            continue
        history = await client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        step, error = failing_step(history)
        found.append(
            FailedInvoice(execution.id, execution.run_id, key, step, error, execution.close_time)
        )
        if len(found) == limit:
            break
    return found


def failing_step(history: WorkflowHistory) -> tuple[str, str]:
    """The step whose failure failed the workflow, and the error it gave.

    An ordinary activity's failure names its activity type; a local activity's (the invoice's
    database steps) is recorded in the marker just before, which names it.
    """
    failed: Failure | None = None
    for event in reversed(history.events):
        if failed is None:
            if event.HasField("workflow_execution_failed_event_attributes"):
                failed = event.workflow_execution_failed_event_attributes.failure
                if failed.HasField("activity_failure_info"):
                    return failed.activity_failure_info.activity_type.name, _root(failed).message
            continue
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == LOCAL_ACTIVITY_MARKER and marker.HasField("failure"):
            return _local_activity_type(marker.details), _root(failed).message
    if failed is None:
        return "", ""
    return "workflow", _root(failed).message


LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker Temporal's SDK core records a local activity's outcome in."""


def _local_activity_type(details: Mapping[str, Payloads]) -> str:
    data = details.get("data")
    if data is None or not data.payloads:
        return ""
    recorded = json.loads(data.payloads[0].data)
    return str(recorded.get("activity_type", ""))


def _root(failure: Failure) -> Failure:
    """The innermost cause: the error the step itself raised."""
    while failure.HasField("cause"):
        failure = failure.cause
    return failure
