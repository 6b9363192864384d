"""OpsService: failed invoice workflows, their runs, and their replay (ops keys only)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from grpc import aio

from rating_client.gen.rating.v1 import ops_pb2, ops_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page
from rating_service.api.wire import requested_at, timestamp
from rating_service.core.auth import Role
from rating_service.core.errors import (
    ViolationCollector,
)
from rating_service.core.ledger.invariants import DriftReport
from rating_service.core.money import format_decimal
from rating_service.ops.failures import InvoiceRun
from rating_service.ops.replay import InvoiceReplays, ReplayPlan
from rating_service.store.replay import Replay

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WAIT_SECONDS = 120


class OpsServicer(ops_pb2_grpc.OpsServiceServicer):
    """Converts OpsService messages to InvoiceReplays calls and back."""

    def __init__(
        self,
        invoice_replays: Callable[[], Awaitable[InvoiceReplays]],
        reconcile: Callable[[str], Awaitable[tuple[DriftReport, int]]],
    ) -> None:
        # Connected to Temporal on first use: the server starts without it.
        self._ops = invoice_replays
        self._reconcile = reconcile

    @allow(Role.OPS)
    async def ReconcileLedger(
        self, request: ops_pb2.ReconcileLedgerRequest, context: aio.ServicerContext
    ) -> ops_pb2.ReconcileLedgerResponse:
        report, accounts = await self._reconcile(current_caller().tenant_id)
        return ops_pb2.ReconcileLedgerResponse(
            clean=report.clean,
            accounts_checked=accounts,
            drifts=[
                ops_pb2.LedgerDrift(
                    account_id=drift.account_id,
                    total=drift.total,
                    recorded=format_decimal(drift.recorded),
                    recomputed=format_decimal(drift.recomputed),
                )
                for drift in report.drifts
            ],
            unreplayable=list(report.unreplayable),
            checked_at=timestamp(datetime.now(UTC)),
        )

    @allow(Role.OPS)
    async def ListFailedInvoices(
        self, request: ops_pb2.ListFailedInvoicesRequest, context: aio.ServicerContext
    ) -> ops_pb2.ListFailedInvoicesResponse:
        violations = ViolationCollector()
        limit = _limit(request.limit, violations)
        paged = bool(request.page_size or request.page_token)
        token = _visibility_token(request.page_token, violations)
        if paged and not 1 <= request.page_size <= MAX_LIMIT:
            violations.add("page_size", f"must be 1 to {MAX_LIMIT} to page (or 0 with no token)")
        violations.raise_if_any()
        ops, tenant_id = await self._ops(), current_caller().tenant_id
        contract_id, since = request.contract_id or None, requested_at(request, "since")
        if not paged:
            runs = await ops.failed(tenant_id, contract_id=contract_id, since=since, limit=limit)
            return ops_pb2.ListFailedInvoicesResponse(runs=[run_message(r) for r in runs])
        page = await ops.failed_page(
            tenant_id,
            contract_id=contract_id,
            since=since,
            page_size=request.page_size,
            page_token=token,
        )
        return ops_pb2.ListFailedInvoicesResponse(
            runs=[run_message(r) for r in page.runs],
            next_page_token=_encode_token(page.next_page_token),
        )

    @allow(Role.OPS)
    async def GetInvoiceRun(
        self, request: ops_pb2.GetInvoiceRunRequest, context: aio.ServicerContext
    ) -> ops_pb2.GetInvoiceRunResponse:
        violations = ViolationCollector()
        if not request.workflow_id:
            violations.add("workflow_id", "is required, e.g. invoice/<tenant>/<contract>/<date>")
        violations.raise_if_any()
        ops, tenant_id = await self._ops(), current_caller().tenant_id
        run = await ops.show(tenant_id, request.workflow_id)
        replays = await ops.replays(tenant_id, request.workflow_id)
        return ops_pb2.GetInvoiceRunResponse(
            run=run_message(run), replays=[replay_message(r) for r in replays]
        )

    @allow(Role.OPS)
    async def ReplayInvoices(
        self, request: ops_pb2.ReplayInvoicesRequest, context: aio.ServicerContext
    ) -> ops_pb2.ReplayInvoicesResponse:
        violations = ViolationCollector()
        if not request.reason.strip():
            violations.add("reason", "say why the invoices are replayed (kept in the replay log)")
        if bool(request.workflow_ids) == request.all:
            violations.add("workflow_ids", "name the workflows to replay, or set `all` (not both)")
        if not request.all and (request.contract_id or request.HasField("since")):
            violations.add("all", "contract_id and since narrow `all`: set it, or drop them")
        if not 0 <= request.wait_seconds <= MAX_WAIT_SECONDS:
            violations.add("wait_seconds", f"must be 0 to {MAX_WAIT_SECONDS}")
        violations.raise_if_any()
        ops, caller = await self._ops(), current_caller()
        reset_to = request.reset_to or None
        plans = await ops.plans(
            caller.tenant_id,
            None if request.all else request.workflow_ids,
            contract_id=request.contract_id or None,
            since=requested_at(request, "since"),
            reset_to=reset_to,
        )
        response = ops_pb2.ReplayInvoicesResponse(plans=[plan_message(p) for p in plans])
        if request.dry_run:
            return response
        made = [
            await ops.replay(
                caller.tenant_id,
                plan.run.workflow_id,
                reason=request.reason,
                actor=f"key:{caller.key_id}",
                reset_to=reset_to,
                wait=None,
            )
            for plan in plans
        ]
        if request.wait_seconds:
            made = await ops.settle(made, timedelta(seconds=request.wait_seconds))
        response.replays.extend(replay_message(r) for r in made)
        return response

    @allow(Role.OPS)
    async def ListReplays(
        self, request: ops_pb2.ListReplaysRequest, context: aio.ServicerContext
    ) -> ops_pb2.ListReplaysResponse:
        violations = ViolationCollector()
        page = Page.read(
            request.limit,
            request.page_token,
            (int,),
            violations,
            size_field="limit",
            default_size=DEFAULT_LIMIT,
            max_size=MAX_LIMIT,
        )
        violations.raise_if_any()
        (before,) = page.after or (None,)
        assert before is None or isinstance(before, int)  # the shape Page.read checked
        found = await (await self._ops()).replays(
            current_caller().tenant_id, request.workflow_id or None, page.limit, before=before
        )
        # Latest first: the next page holds the replays older than the last one listed.
        replays, token = page.cut(found, lambda replay: (replay.replay_id,))
        return ops_pb2.ListReplaysResponse(
            replays=[replay_message(r) for r in replays], next_page_token=token
        )


def _visibility_token(token: str, violations: ViolationCollector) -> bytes | None:
    """Temporal's visibility page token, from the opaque one this server gave."""
    if not token:
        return None
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        violations.add("page_token", "is not a token this server gave: list again without one")
        return None


def _encode_token(token: bytes) -> str:
    return base64.urlsafe_b64encode(token).decode() if token else ""


def _limit(limit: int, violations: ViolationCollector) -> int:
    if not 0 <= limit <= MAX_LIMIT:
        violations.add("limit", f"must be 0 (meaning {DEFAULT_LIMIT}) to {MAX_LIMIT}")
    return limit or DEFAULT_LIMIT


def run_message(run: InvoiceRun) -> ops_pb2.InvoiceRun:
    """The wire form of an invoice run."""
    failing = run.failing_step
    message = ops_pb2.InvoiceRun(
        workflow_id=run.workflow_id,
        run_id=run.run_id,
        contract_id=run.key.contract_id,
        billing_date=run.key.billing_date,
        revision=run.key.revision,
        status=run.status,
        failing_step="" if failing is None else failing.step,
        error=run.error or ("" if failing is None else failing.error),
        attempts=0 if failing is None else failing.attempts,
        steps=[
            ops_pb2.InvoiceStep(
                step=s.step,
                status=s.status,
                attempts=s.attempts,
                reset_point=s.reset_point,
                error=s.error,
            )
            for s in run.steps
        ],
    )
    if run.since is not None:
        message.since.CopyFrom(timestamp(run.since))
    return message


def plan_message(plan: ReplayPlan) -> ops_pb2.ReplayPlan:
    """The wire form of a replay plan."""
    return ops_pb2.ReplayPlan(
        run=run_message(plan.run),
        mode=plan.mode,
        reset_to=plan.reset_to or "",
        reset_point=plan.reset_point or 0,
        invoice_id=plan.invoice_id,
        effects=plan.effects,
        refusal=plan.refusal,
    )


def replay_message(replay: Replay) -> ops_pb2.Replay:
    """The wire form of a logged replay."""
    asked = replay.request
    message = ops_pb2.Replay(
        replay_id=replay.replay_id,
        workflow_id=asked.workflow_id,
        contract_id=asked.contract_id,
        billing_date=asked.billing_date,
        replayed_run=asked.replayed_run,
        new_run=replay.new_run or "",
        failed_step=asked.failed_step,
        error=asked.error,
        mode=asked.mode,
        reset_to=asked.reset_to or "",
        actor=asked.actor,
        reason=asked.reason,
        outcome=replay.outcome,
        detail=replay.detail,
        requested_at=timestamp(replay.requested_at),
    )
    if replay.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(replay.finished_at))
    return message
