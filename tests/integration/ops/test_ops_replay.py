"""Ops replay on a real Temporal server and PostgreSQL: failures injected at the worst moments
(after the invoice number was assigned, after the payment was taken) and a failure from bad
data; each found, explained, replayed and shown to have happened once: one number, one charge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from click.testing import CliRunner, Result

from rating_client import NotAllowed, RatingClient, RatingRefused
from rating_client.gen.rating.v1 import ops_pb2
from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.core.billing.invoice import invoice_id_for
from rating_service.failpoints import AFTER_NUMBER_ASSIGNED, AFTER_PAYMENT_TAKEN
from rating_service.ops.failures import InvoiceRun, failed_invoices
from rating_service.ops.replay import InvoiceReplays
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings
from rating_service.store.contract import ContractStore
from rating_service.store.database import asyncpg_dsn
from rating_service.store.invoice import InvoiceStore
from rating_service.store.replay import ReplayLog
from rating_service.workflows.invoice import InvoiceRequest, InvoiceWorkflow, invoice_workflow_id
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import (
    BillingContract,
    BillingStack,
    api_env,
    billing_stack,
    database,
    open_billing_contract,
    record_history,
)


async def try_cli(stack: BillingStack, *args: str) -> Result:
    """Run `rating ARGS…` through the API with the tenant's ops key; its result (it may fail)."""
    server = await stack.operator_server.running()
    env = api_env(server, stack.tenant.tokens[Role.OPS])
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)


def ops_client(server: RunningServer, tenant: TenantKeys) -> RatingClient:
    """A client of a server with the tenant's ops key."""
    return RatingClient(f"127.0.0.1:{server.port}", tenant.tokens[Role.OPS], timeout_seconds=10)


@asynccontextmanager
async def ops_server(stack: BillingStack) -> AsyncIterator[RunningServer]:
    """A server that knows the stack's Temporal and task queue, as OpsService needs."""
    running = await start_server(stack.worker_config)
    try:
        yield running
    finally:
        await running.stop(0.5)


async def opening_invoice_failed(
    stack: BillingStack, tenant: TenantKeys, contract: BillingContract
) -> InvoiceRun:
    """Wait until the contract's opening invoice (billed at once) is listed as failed."""
    workflow_id = invoice_workflow_id(
        tenant.tenant_id, contract.contract_id, contract.term_start.isoformat(), 0
    )
    found: list[InvoiceRun] = []

    async def listed() -> bool:
        found[:] = await failed_invoices(
            stack.temporal, tenant.tenant_id, contract_id=contract.contract_id
        )
        return any(run.workflow_id == workflow_id for run in found)

    await eventually(listed, timeout_seconds=20)
    return found[0]


async def books(settings: Settings, contract: BillingContract) -> dict[str, Any]:
    """What the invoice's records say: state, number, attempts, charges, numbers issued."""
    invoice_id = invoice_id_for(contract.contract_id, contract.term_start, 0)
    async with database(settings) as conn:
        invoice = await conn.fetchrow(
            "SELECT state, number FROM invoices WHERE invoice_id = $1", invoice_id
        )
        attempts = await conn.fetch(
            "SELECT attempt, status FROM payment_attempts WHERE invoice_id = $1 ORDER BY attempt",
            invoice_id,
        )
        charges = await conn.fetchval(
            "SELECT count(*) FROM simulated_charges WHERE reference = $1 AND outcome = 'succeeded'",
            invoice_id,
        )
        numbered = await conn.fetchval(
            "SELECT count(*) FROM invoices WHERE contract_id = $1 AND number IS NOT NULL",
            contract.contract_id,
        )
    return {
        "state": invoice["state"] if invoice else None,
        "number": invoice["number"] if invoice else None,
        "attempts": [(a["attempt"], a["status"]) for a in attempts],
        "charges": charges,
        "numbered": numbered,
    }


async def test_a_failure_after_the_number_was_assigned_replays_to_one_number_and_one_charge(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(
        settings, temporal_address, server, acme, failpoints=f"{AFTER_NUMBER_ASSIGNED}=1"
    ) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_numbered", period_seconds=60, periods=1
        )
        failed = await opening_invoice_failed(stack, acme, contract)
        assert failed.failing_step is not None
        assert failed.failing_step.step == "finalize_invoice"
        assert "failpoint" in failed.error
        before = await books(settings, contract)
        assert before["state"] == "finalized" and before["number"]
        assert before["attempts"] == [] and before["charges"] == 0

        shown = await stack.run_ops_cli("ops", "invoices", "show", failed.workflow_id)
        assert "finalize_invoice" in shown and "failpoint" in shown
        assert f"keeps its number {before['number']}" in shown

        dry = await stack.run_ops_cli(
            "ops", "invoices", "replay", failed.workflow_id, "--reason", "rehearse", "--dry-run"
        )
        assert "nothing changed" in dry
        assert (await books(settings, contract)) == before

        replayed = await stack.run_ops_cli(
            "ops", "invoices", "replay", failed.workflow_id, "--reason", "finalize crashed"
        )
        assert "completed" in replayed and f"{before['number']} paid" in replayed

        after = await books(settings, contract)
        assert after["state"] == "paid"
        assert after["number"] == before["number"]
        assert after["numbered"] == 1
        assert after["attempts"] == [(1, "succeeded")] and after["charges"] == 1
        assert (
            await failed_invoices(stack.temporal, acme.tenant_id, contract_id=contract.contract_id)
            == []
        )

        log = await stack.run_ops_cli("ops", "replays", "--workflow", failed.workflow_id)
        assert "key:" in log and "finalize crashed" in log and "completed" in log

        # A completed invoice is not replayed again: refused, logged, nothing moves.
        again = await try_cli(
            stack, "ops", "invoices", "replay", failed.workflow_id, "--reason", "again"
        )
        assert again.exit_code == 1 and "refused" in again.output
        assert (await books(settings, contract)) == after

        reconciled = await asyncio.to_thread(
            CliRunner().invoke, main, ["ops", "reconcile"], env=stack.cli_env
        )
        assert reconciled.exit_code == 0 and "no drift" in reconciled.output


async def test_a_failure_after_the_payment_was_taken_is_reset_and_charges_once(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(
        settings, temporal_address, server, acme, failpoints=f"{AFTER_PAYMENT_TAKEN}=1"
    ) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_charged", period_seconds=60, periods=1
        )
        failed = await opening_invoice_failed(stack, acme, contract)
        assert failed.failing_step is not None
        assert failed.failing_step.step == "collect_payment"
        before = await books(settings, contract)
        assert before["attempts"] == [(1, "pending")] and before["charges"] == 1
        await record_history(stack.temporal, failed.workflow_id, "invoice_failed_after_payment")

        async with ops_client(server, acme) as no_temporal:
            with pytest.raises(RatingRefused, match="TEMPORAL_UNAVAILABLE"):
                await no_temporal.failed_invoices()
        async with ops_server(stack) as served, ops_client(served, acme) as ops:
            with pytest.raises(NotAllowed):
                await stack.client.replay_invoices([failed.workflow_id], reason="admin key")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ops.ops.ReplayInvoices(
                    ops_pb2.ReplayInvoicesRequest(workflow_ids=[failed.workflow_id]),
                    metadata=acme.metadata(Role.OPS),
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            listed = await ops.failed_invoices(contract.contract_id)
            assert [r.workflow_id for r in listed] == [failed.workflow_id]
            assert listed[0].failing_step == "collect_payment"

            # Paged through Temporal's visibility listing, one execution a page: the same runs,
            # however many other executions (other tests', other tenants') the pages pass.
            metadata = acme.metadata(Role.OPS)
            paged: list[str] = []
            token = ""
            for _ in range(1000):
                page = await ops.ops.ListFailedInvoices(
                    ops_pb2.ListFailedInvoicesRequest(page_size=1, page_token=token),
                    metadata=metadata,
                )
                assert len(page.runs) <= 1
                paged.extend(run.workflow_id for run in page.runs)
                token = page.next_page_token
                if not token:
                    break
            assert paged == [r.workflow_id for r in await ops.failed_invoices()]
            assert failed.workflow_id in paged
            for bad in ("%%%", "bm9wZQ=="):  # not base64; base64 of a token Temporal never gave
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await ops.ops.ListFailedInvoices(
                        ops_pb2.ListFailedInvoicesRequest(page_size=1, page_token=bad),
                        metadata=metadata,
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            dry = await ops.replay_invoices(
                [failed.workflow_id],
                reason="gateway answer lost",
                reset_to="collect_payment",
                dry_run=True,
            )
            [plan] = dry.plans
            assert plan.mode == "reset" and plan.reset_point > 0 and not plan.refusal
            assert any("no second charge" in effect for effect in plan.effects)
            assert not dry.replays

            done = await ops.replay_invoices(
                [failed.workflow_id],
                reason="gateway answer lost",
                reset_to="collect_payment",
                wait_seconds=30,
            )
            [replay] = done.replays
            assert (replay.outcome, replay.mode, replay.reset_to) == (
                "completed",
                "reset",
                "collect_payment",
            )
            assert replay.actor.startswith("key:") and replay.new_run != failed.run_id
        await record_history(stack.temporal, failed.workflow_id, "invoice_reset_to_collect")

        after = await books(settings, contract)
        assert after["state"] == "paid" and after["number"] == before["number"]
        assert after["attempts"] == [(1, "succeeded")]
        assert after["charges"] == 1  # the gateway answered the first charge again


async def test_a_failure_from_bad_data_replays_once_the_data_is_fixed(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        # Bad data: a payment method the gateway never issued (a typo in the CRM sync).
        contract = await open_billing_contract(
            stack.client, "cus_typo", period_seconds=60, periods=1, payment_method="pm_typo"
        )
        failed = await opening_invoice_failed(stack, acme, contract)
        assert failed.failing_step is not None
        assert failed.failing_step.step == "collect_payment"
        assert "refused payment method 'pm_typo'" in failed.error
        before = await books(settings, contract)
        assert before["attempts"] == [(1, "refused")] and before["charges"] == 0

        shown = await stack.run_ops_cli("ops", "invoices", "show", failed.workflow_id)
        assert "fix it first" in shown  # the method is still the one refused

        # Replayed before the fix, it fails again, and says so.
        unfixed = await try_cli(
            stack, "ops", "invoices", "replay", failed.workflow_id, "--reason", "try"
        )
        assert unfixed.exit_code == 1 and "failed" in unfixed.output

        await stack.run_cli("contracts", "payment-method", contract.contract_id, "--token", "pm_ok")
        replayed = await stack.run_ops_cli(
            "ops",
            "invoices",
            "replay",
            "--all",
            "--contract",
            contract.contract_id,
            "--reason",
            "payment method fixed",
        )
        assert "completed" in replayed

        after = await books(settings, contract)
        assert after["state"] == "paid" and after["number"] == before["number"]
        assert after["attempts"] == [(1, "succeeded")] and after["charges"] == 1
        log = await stack.run_ops_cli("ops", "replays")
        assert log.count("failed") >= 1 and "payment method fixed" in log


async def test_a_stuck_invoice_is_listed_and_only_a_reset_may_replay_it(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    async with billing_stack(settings, temporal_address, server, acme) as stack:
        contract = await open_billing_contract(
            stack.client, "cus_stuck", period_seconds=60, periods=1
        )
        # Stuck: started on a task queue no worker polls, so it never takes a step.
        billing_date = contract.term_end.isoformat()
        handle = await stack.temporal.start_workflow(
            InvoiceWorkflow.run,
            InvoiceRequest(acme.tenant_id, contract.contract_id, billing_date),
            id=invoice_workflow_id(acme.tenant_id, contract.contract_id, billing_date, 0),
            task_queue="nobody-polls-this",
        )
        pool = await asyncpg.create_pool(
            asyncpg_dsn(settings.database_url or ""), min_size=1, max_size=2
        )
        replays = InvoiceReplays(
            stack.temporal,
            pool,
            InvoiceStore(pool),
            ContractStore(pool),
            ReplayLog(pool),
            "nobody-polls-this",
            stuck_after=timedelta(0),
        )
        stuck: list[InvoiceRun] = []

        async def listed() -> bool:
            stuck[:] = await replays.failed(acme.tenant_id, contract_id=contract.contract_id)
            return any(run.workflow_id == handle.id for run in stuck)

        await eventually(listed, timeout_seconds=15)
        [run] = [r for r in stuck if r.workflow_id == handle.id]
        assert run.status == "running" and run.steps == ()

        rerun = await replays.replay(
            acme.tenant_id, handle.id, reason="unstick", actor="test", wait=None
        )
        assert rerun.outcome == "refused" and "reset it to a step" in rerun.detail
        reset = await replays.replay(
            acme.tenant_id,
            handle.id,
            reason="unstick",
            actor="test",
            reset_to="finalize_invoice",
            wait=None,
        )
        assert reset.outcome == "refused" and "never started" in reset.detail
        assert [r.outcome for r in await replays.replays(acme.tenant_id, handle.id)] == [
            "refused",
            "refused",
        ]
        await handle.terminate("test over")
        await pool.close()

        unknown = await try_cli(
            stack, "ops", "invoices", "show", f"invoice/{acme.tenant_id}/ctr_none/2026-01-01"
        )
        assert unknown.exit_code == 1 and "no invoice workflow" in unknown.output
        no_reason = await try_cli(stack, "ops", "invoices", "replay", "--all")
        assert no_reason.exit_code == 2 and "--reason" in no_reason.output
