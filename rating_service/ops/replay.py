"""Ops replay of failed invoice workflows: look first (a dry run changes nothing), then replay;
every replay is logged with who asked, why, when, and how it ended.

A replay either reruns the invoice under the same business id (a fresh run, the same input), or
resets the failed run to a step: Temporal keeps its history up to the workflow task that started
that step and runs the rest again. Either way each step is idempotent on the invoice's business
keys, never on the run, so what the failed run did stays done: the number it was given is kept,
and a charge it made is answered again by the gateway under the same key, never made twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from rating_service.core.billing.invoice import InvoiceState, invoice_id_for
from rating_service.core.errors import InvalidArgument, NotFound
from rating_service.ops.failures import (
    STUCK_AFTER,
    BadPageToken,
    FailedPage,
    InvoiceRun,
    failed_invoices,
    failed_invoices_page,
    find_invoice_run,
)
from rating_service.store.contract import ContractStore
from rating_service.store.invoice import InvoiceStore, PaymentAttempt, payment_key
from rating_service.store.replay import Replay, ReplayLog, ReplayRequest
from rating_service.workflows.invoice import INVOICE_STEPS, InvoiceRequest, InvoiceWorkflow

MAX_BATCH = 1000
"""The most failed invoices one `--all` replays (narrow it by contract or time for more)."""

REPLAY_WAIT = timedelta(minutes=5)
"""How long a replay waits for the new run to end before reporting it as still running."""


@dataclass(frozen=True)
class ReplayPlan:
    """What replaying one invoice would do; `refusal` says why it would not be made."""

    run: InvoiceRun
    mode: str
    reset_to: str | None
    reset_point: int | None
    invoice_id: str
    effects: tuple[str, ...]
    refusal: str = ""

    @property
    def allowed(self) -> bool:
        """True when the replay would be made."""
        return not self.refusal


class InvoiceReplays:
    """Finds failed invoice workflows, explains them, and replays them (logged)."""

    def __init__(
        self,
        client: Client,
        pool: asyncpg.Pool,
        invoices: InvoiceStore,
        contracts: ContractStore,
        log: ReplayLog,
        task_queue: str,
        *,
        stuck_after: timedelta = STUCK_AFTER,
    ) -> None:
        self._client = client
        self._pool = pool  # for the advisory lock that makes one replay at a time per invoice
        self._task_queue = task_queue
        self._stuck_after = stuck_after
        self._invoices = invoices
        self._contracts = contracts
        self.log = log

    async def failed(
        self,
        tenant_id: str,
        *,
        contract_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[InvoiceRun]:
        """The tenant's failed (or stuck) invoice workflows, latest first."""
        return await failed_invoices(
            self._client,
            tenant_id,
            contract_id=contract_id,
            since=since,
            stuck_after=self._stuck_after,
            limit=limit,
        )

    async def failed_page(
        self,
        tenant_id: str,
        *,
        contract_id: str | None = None,
        since: datetime | None = None,
        page_size: int = 100,
        page_token: bytes | None = None,
    ) -> FailedPage:
        """One page of the tenant's failed (or stuck) invoice workflows (see failures.py).

        A token Temporal refuses is InvalidArgument on `page_token`.
        """
        try:
            return await failed_invoices_page(
                self._client,
                tenant_id,
                contract_id=contract_id,
                since=since,
                stuck_after=self._stuck_after,
                page_size=page_size,
                page_token=page_token,
            )
        except BadPageToken as error:
            raise InvalidArgument.of_field(
                "page_token", f"is not a token this server gave ({error}): list again without one"
            ) from None

    async def show(self, tenant_id: str, workflow_id: str) -> InvoiceRun:
        """The latest run of one of the tenant's invoice workflows (NotFound if none)."""
        run = await find_invoice_run(self._client, tenant_id, workflow_id)
        if run is None:
            raise NotFound(
                f"no invoice workflow {workflow_id!r}: list failed ones with"
                " `rating ops invoices failed`",
                reason="WORKFLOW_NOT_FOUND",
                metadata={"workflow_id": workflow_id},
            )
        return run

    async def plan(
        self, tenant_id: str, workflow_id: str, reset_to: str | None = None
    ) -> ReplayPlan:
        """What a replay would do now: its mode, restart point and effects, or why not."""
        if reset_to is not None and reset_to not in INVOICE_STEPS:
            raise InvalidArgument.of_field("reset_to", f"must be one of {', '.join(INVOICE_STEPS)}")
        run = await self.show(tenant_id, workflow_id)
        key = run.key
        invoice_id = invoice_id_for(
            key.contract_id, datetime.fromisoformat(key.billing_date), key.revision
        )
        point = None if reset_to is None else run.reset_point(reset_to)
        plan = ReplayPlan(
            run,
            "rerun" if reset_to is None else "reset",
            reset_to,
            point,
            invoice_id,
            await self._effects(tenant_id, run, invoice_id),
        )
        refusal = self._refusal(plan)
        return replace(plan, refusal=refusal)

    async def plans(
        self,
        tenant_id: str,
        workflow_ids: Sequence[str] | None,
        *,
        contract_id: str | None = None,
        since: datetime | None = None,
        reset_to: str | None = None,
    ) -> list[ReplayPlan]:
        """The plan of each named workflow or, given None, of every failed one (up to 1,000).

        Every plan is made before any replay, so an unknown id refuses a batch before it starts.
        """
        if workflow_ids is None:
            failed = await self.failed(
                tenant_id, contract_id=contract_id, since=since, limit=MAX_BATCH
            )
            workflow_ids = [run.workflow_id for run in failed]
        return [await self.plan(tenant_id, target, reset_to) for target in workflow_ids]

    def _refusal(self, plan: ReplayPlan) -> str:
        """Why this replay must not be made, or ""."""
        run = plan.run
        if run.status == "completed":
            return "its latest run completed: there is nothing to replay"
        if run.status == "running":
            stuck = run.started_at is not None and (
                datetime.now(UTC) - run.started_at >= self._stuck_after
            )
            if not stuck:
                return "it is running and not stuck: let it finish"
            if plan.mode == "rerun":
                return "it is still running: reset it to a step (--reset-to), which ends that run"
        if plan.reset_to is not None and plan.reset_point is None:
            steps = ", ".join(s.step for s in run.steps) or "none"
            return f"its run never started {plan.reset_to!r} (steps it ran: {steps})"
        return ""

    async def _effects(self, tenant_id: str, run: InvoiceRun, invoice_id: str) -> tuple[str, ...]:
        """What the invoice's own records say a replay will do: kept, skipped, charged."""
        try:
            invoice = await self._invoices.invoice(tenant_id, invoice_id)
        except NotFound:
            return (f"{invoice_id} has no draft yet: it will be drafted, numbered and collected",)
        if invoice.state is InvoiceState.DRAFT:
            return (f"{invoice_id} is a draft: it will get the next number and be collected",)
        kept = f"{invoice_id} keeps its number {invoice.number} and its ledger postings"
        if invoice.state is not InvoiceState.FINALIZED:
            return (kept, f"it is {invoice.state}: nothing will be charged")
        if invoice.amount_due <= 0:
            return (kept, "nothing is due on it: it will be marked paid, nothing charged")
        attempts = await self._invoices.payment_attempts(tenant_id, invoice_id)
        first = next((a for a in attempts if a.attempt == 1), None)
        contract = await self._contracts.contract(tenant_id, run.key.contract_id)
        return (
            kept,
            _collection_effect(invoice_id, first, invoice.amount_due, contract.payment_method),
        )

    async def replay(
        self,
        tenant_id: str,
        workflow_id: str,
        *,
        reason: str,
        actor: str,
        reset_to: str | None = None,
        wait: timedelta | None = REPLAY_WAIT,
    ) -> Replay:
        """Replay one invoice workflow (logged first), then wait for its outcome if asked."""
        if not reason.strip():
            raise InvalidArgument.of_field("reason", "say why the invoice is replayed")
        async with self._pool.acquire() as lock:
            # One replay of a workflow at a time: two at once could reset each other's runs.
            if not await lock.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"replay:{workflow_id}"
            ):
                plan = await self.plan(tenant_id, workflow_id, reset_to)
                plan = replace(plan, refusal="another replay of it is being made right now")
                return await self._logged_refusal(plan, reason, actor)
            try:
                plan = await self.plan(tenant_id, workflow_id, reset_to)
                if not plan.allowed:
                    return await self._logged_refusal(plan, reason, actor)
                replay_id = await self.log.started(_request(plan, reason, actor))
                new_run = await self._start(plan, replay_id, reason, actor)
            finally:
                await lock.execute(
                    "SELECT pg_advisory_unlock(hashtext($1))", f"replay:{workflow_id}"
                )
        made = await self._replay(tenant_id, replay_id)
        if new_run is None or wait is None:
            return made
        [settled] = await self.settle([made], wait)
        return settled

    async def settle(self, replays: Sequence[Replay], wait: timedelta) -> list[Replay]:
        """The replays as logged once their runs ended, or `wait` passed (waited together)."""
        await asyncio.gather(
            *(
                self._await_outcome(
                    r.request.tenant_id, r.replay_id, r.request.workflow_id, r.new_run, wait
                )
                for r in replays
                if r.outcome == "running" and r.new_run
            )
        )
        return [await self._replay(r.request.tenant_id, r.replay_id) for r in replays]

    async def _start(self, plan: ReplayPlan, replay_id: int, reason: str, actor: str) -> str | None:
        """Start the new run (rerun or reset) and log it; None (logged refused) if refused."""
        run = plan.run
        try:
            if plan.reset_point is None:
                handle = await self._client.start_workflow(
                    InvoiceWorkflow.run,
                    InvoiceRequest(
                        run.key.tenant_id,
                        run.key.contract_id,
                        run.key.billing_date,
                        run.key.revision,
                    ),
                    id=run.workflow_id,
                    task_queue=self._task_queue,
                    # Only a run that did not complete may be followed by another.
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                )
                new_run = handle.result_run_id or ""
            else:
                response = await self._client.workflow_service.reset_workflow_execution(
                    ResetWorkflowExecutionRequest(
                        namespace=self._client.namespace,
                        workflow_execution=ExecutionRef(
                            workflow_id=run.workflow_id, run_id=run.run_id
                        ),
                        reason=f"replay {replay_id} by {actor}: {reason}",
                        workflow_task_finish_event_id=plan.reset_point,
                        request_id=str(uuid.uuid4()),
                    )
                )
                new_run = response.run_id
        except (WorkflowAlreadyStartedError, RPCError) as error:
            await self.log.ended(
                run.key.tenant_id, replay_id, "refused", f"Temporal refused it: {error}"
            )
            return None
        await self.log.made(run.key.tenant_id, replay_id, new_run)
        return new_run

    async def _await_outcome(
        self, tenant_id: str, replay_id: int, workflow_id: str, new_run: str, wait: timedelta
    ) -> None:
        """Log how the new run ended, if it ends within `wait` (else it stays running)."""
        handle = self._client.get_workflow_handle_for(
            InvoiceWorkflow.run, workflow_id, run_id=new_run
        )
        try:
            async with asyncio.timeout(wait.total_seconds()):
                result = await handle.result(follow_runs=False)
        except TimeoutError:
            return
        except WorkflowFailureError as error:
            await self.log.ended(tenant_id, replay_id, "failed", _cause(error))
            return
        if result.invoice_id is None:
            detail = "nothing was due: no invoice issued"
        else:
            detail = f"{result.number} {result.state}, payment {result.payment}"
        await self.log.ended(tenant_id, replay_id, "completed", detail)

    async def replays(
        self,
        tenant_id: str,
        workflow_id: str | None = None,
        limit: int = 100,
        *,
        before: int | None = None,
    ) -> list[Replay]:
        """The replay log (latest first); replays still running are brought up to date."""
        logged = await self.log.replays(tenant_id, workflow_id, limit, before=before)
        return await self.settle(logged, _NO_WAIT)

    async def _logged_refusal(self, plan: ReplayPlan, reason: str, actor: str) -> Replay:
        """Log a refused replay (asked for, not made) and return it."""
        replay_id = await self.log.started(_request(plan, reason, actor))
        await self.log.ended(plan.run.key.tenant_id, replay_id, "refused", plan.refusal)
        return await self._replay(plan.run.key.tenant_id, replay_id)

    async def _replay(self, tenant_id: str, replay_id: int) -> Replay:
        found = await self.log.replay(tenant_id, replay_id)
        assert found is not None, "the replay was logged above"
        return found


_NO_WAIT = timedelta(milliseconds=200)
"""Long enough to read a closed run's result, short enough to skip one still running."""


def _request(plan: ReplayPlan, reason: str, actor: str) -> ReplayRequest:
    run = plan.run
    failing = run.failing_step
    return ReplayRequest(
        run.key.tenant_id,
        run.workflow_id,
        run.key.contract_id,
        run.key.billing_date,
        run.run_id,
        "" if failing is None else failing.step,
        run.error or ("" if failing is None else failing.error),
        plan.mode,
        plan.reset_to,
        actor,
        reason,
    )


def _collection_effect(
    invoice_id: str, first: PaymentAttempt | None, total: Decimal, payment_method: str | None
) -> str:
    """What collecting the invoice again will do, given its first attempt."""
    key = payment_key(invoice_id, 1)
    if first is None:
        return f"attempt 1 will charge {total} to {payment_method or 'no saved method'} ({key})"
    if first.status == "succeeded":
        return f"already paid by attempt 1 ({first.gateway_reference}): nothing charged again"
    if first.status == "pending":
        return (
            f"attempt 1's answer was lost: it is asked again under {key}, and the gateway"
            " answers what it did then (no second charge)"
        )
    if first.status == "refused":
        if first.payment_method == payment_method:
            return (
                f"attempt 1 was refused ({first.failure_code}) and {payment_method} is still the"
                " saved method: fix it first (`rating contracts payment-method`)"
            )
        return (
            f"attempt 1 was refused ({first.failure_code}, nothing charged): it is made again"
            f" under {key} with {payment_method or 'no saved method'}"
        )
    return f"attempt 1 was declined ({first.failure_code}): dunning retries it, not the replay"


def _cause(error: WorkflowFailureError) -> str:
    """The error the failing step reported (see `rating_service.ops.failures`), as ops read it."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    return str(error.cause) if cause is None else cause.message
