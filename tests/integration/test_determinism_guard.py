"""`rating ops histories check`: real histories replay against this code, and a changed
workflow that would break them is caught before it is deployed."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner
from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner

from rating_service.api.server import RunningServer
from rating_service.cli import main
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import billing_stack, open_billing_contract, workflow_started
from workflows.activities import BillingActivities, InvoiceRequest
from workflows.billing import billing_workflow_id
from workflows.determinism import DeterminismReport, check_histories
from workflows.invoice import STEP_RETRIES, STEP_TIMEOUT
from workflows.registry import SANDBOX, WORKFLOWS


@workflow.defn(name="Invoice")
class InvoiceDraftingFirst:
    """An Invoice workflow changed carelessly: it drafts before closing the period."""

    @workflow.run
    async def run(self, request: InvoiceRequest) -> None:
        """Draft, then close: not what the recorded runs did."""
        await workflow.execute_local_activity_method(
            BillingActivities.draft_invoice,
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
