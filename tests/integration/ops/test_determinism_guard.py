"""Ops tools on a real Temporal server: the determinism guard (`rating ops histories check`)
and the list of failed invoice workflows (`rating ops invoices failed`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from click.testing import CliRunner
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.worker import UnsandboxedWorkflowRunner

from rating_service.cli import main
from rating_service.ops.determinism import DeterminismReport, check_histories
from rating_service.ops.failures import failed_invoices
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from rating_service.workflows.billing import billing_workflow_id
from rating_service.workflows.common import STEP_RETRIES, STEP_TIMEOUT
from rating_service.workflows.invoice import (
    InvoiceActivities,
    InvoiceRequest,
    InvoiceWorkflow,
    invoice_workflow_id,
)
from rating_service.workflows.registry import SANDBOX, WORKFLOWS
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import billing_stack, open_billing_contract, workflow_started


@workflow.defn(name="Invoice")
class InvoiceDraftingFirst:
    """An Invoice workflow changed carelessly: it drafts before closing the period."""

    @workflow.run
    async def run(self, request: InvoiceRequest) -> None:
        """Draft, then close: not what the recorded runs did."""
        await workflow.execute_local_activity_method(
            InvoiceActivities.draft_invoice,
            request,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRIES,
        )


async def test_recent_histories_replay_and_a_breaking_change_is_caught(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_guard", period_seconds=2, periods=1
        )
        handle = stack.temporal.get_workflow_handle(
            billing_workflow_id(acme.tenant_id, contract.contract_id)
        )
        await eventually(lambda: workflow_started(handle), timeout_seconds=15)
        async with asyncio.timeout(30):
            assert await handle.result() == "ended"

        async def listed() -> bool:
            report = await check_histories(stack.temporal, WORKFLOWS, SANDBOX, per_type=5)
            return report.checked["Invoice"] > 0 and report.checked["ContractBilling"] > 0

        await eventually(listed, timeout_seconds=15)  # visibility lags the server a little
        report: DeterminismReport = await check_histories(
            stack.temporal, WORKFLOWS, SANDBOX, per_type=5
        )
        assert report.clean, report.failures

        changed = await check_histories(
            stack.temporal, [InvoiceDraftingFirst], UnsandboxedWorkflowRunner(), per_type=5
        )
        assert changed.failures
        assert {f.workflow_type for f in changed.failures} == {"Invoice"}

    env = {"RATING_TEMPORAL_ADDRESS": temporal_address}
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["ops", "histories", "check", "--per-type", "3"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "every history replays" in result.output


async def test_a_failed_invoice_is_listed_with_its_step_and_error(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_failing", period_seconds=60, periods=1
        )
        # Bad data: a billing date a day after the term, which has no period to close.
        wrong = (contract.term_end + timedelta(days=1)).isoformat()
        handle = await stack.temporal.start_workflow(
            InvoiceWorkflow.run,
            InvoiceRequest(acme.tenant_id, contract.contract_id, wrong),
            id=invoice_workflow_id(acme.tenant_id, contract.contract_id, wrong, 0),
            task_queue=stack.worker_config.temporal_task_queue,
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()

        async def listed() -> bool:
            found = await failed_invoices(stack.temporal, acme.tenant_id)
            return any(f.workflow_id == handle.id for f in found)

        await eventually(listed, timeout_seconds=15)  # visibility lags the server a little
        [failed] = await failed_invoices(
            stack.temporal, acme.tenant_id, contract_id=contract.contract_id
        )
        assert (failed.key.contract_id, failed.key.billing_date) == (contract.contract_id, wrong)
        assert failed.failing_step is not None
        assert failed.failing_step.step == "close_period"
        assert "outside the contract's term" in failed.error
        assert await failed_invoices(stack.temporal, "another-tenant") == []

        output = await stack.run_ops_cli("ops", "invoices", "failed")
        assert "close_period" in output and contract.contract_id in output
