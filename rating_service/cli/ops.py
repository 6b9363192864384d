"""`rating ops`: failed invoice workflows and their replays (through the API, an ops key);
ledger reconciliation and the determinism guard (straight to the database and Temporal)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING

import click

from rating_service.cli.api_client import api_call
from rating_service.cli.command_line import (
    echo_table,
    load_settings,
    parse_timestamp,
    require_database_url,
    run_async,
)

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from rating_client import RatingClient
    from rating_client.gen.rating.v1 import ops_pb2
    from rating_service.core.ledger.invariants import DriftReport


@click.group()
def ops() -> None:
    """Operations: failed invoice workflows and their replays (through the API, an ops key);
    ledger reconciliation and the determinism guard (straight to the database and Temporal,
    for recovery and deploys)."""


@ops.command("reconcile")
def ops_reconcile() -> None:
    """Rebuild every account from its transfers and report drift (exit 1 on any drift)."""
    import asyncpg

    from rating_service.store.database import asyncpg_dsn
    from rating_service.store.ledger import reconcile

    async def check() -> dict[str, DriftReport]:
        conn = await asyncpg.connect(asyncpg_dsn(require_database_url(load_settings())))
        try:
            return await reconcile(conn)
        finally:
            await conn.close()

    reports = run_async(check)
    drifted = False
    for tenant_id, report in reports.items():
        for drift in report.drifts:
            drifted = True
            click.echo(
                f"DRIFT {tenant_id} {drift.account_id} {drift.total}:"
                f" recorded {drift.recorded}, transfers say {drift.recomputed}"
            )
        for problem in report.unreplayable:
            drifted = True
            click.echo(f"UNREPLAYABLE {tenant_id} {problem}")
    click.echo(f"{len(reports)} tenants checked: " + ("drift found" if drifted else "no drift"))
    if drifted:
        sys.exit(1)


@ops.group("invoices")
def ops_invoices() -> None:
    """Invoice workflows that failed: find them, see why, replay them (every replay logged).

    Through the API (`OpsService`), with an ops key of the tenant in RATING_API_KEY.
    """


@ops_invoices.command("failed")
@click.option("--contract", "contract_id", help="Only this contract's (default: all).")
@click.option("--since", help="Only those failed since (ISO 8601 with offset, e.g. …T09:00Z).")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1000),
    default=100,
    show_default=True,
    help="Most to show.",
)
def ops_invoices_failed(contract_id: str | None, since: str | None, limit: int) -> None:
    """List failed (or stuck) invoice workflows: contract, date, step, error, attempts, since
    (`ListFailedInvoices`)."""
    after = parse_timestamp("--since", since)
    found: list[ops_pb2.InvoiceRun] = api_call(
        lambda client: client.failed_invoices(contract_id or "", since=after, limit=limit)
    )
    if not found:
        click.echo("no failed invoice workflows")
        return
    rows = [("CONTRACT", "BILLING DATE", "STATUS", "STEP", "ATTEMPTS", "SINCE", "ERROR")]
    rows += [
        (
            run.contract_id,
            run.billing_date + (f" r{run.revision}" if run.revision else ""),
            run.status,
            run.failing_step,
            str(run.attempts) if run.failing_step else "",
            _when(run.since if run.HasField("since") else None),
            _short(run.error),
        )
        for run in found
    ]
    echo_table(rows, right_aligned={4})
    click.echo("\nsee one with `rating ops invoices show WORKFLOW`; workflows:")
    for run in found:
        click.echo(f"  {run.workflow_id}")


@ops_invoices.command("show")
@click.argument("workflow_id")
def ops_invoices_show(workflow_id: str) -> None:
    """An invoice workflow's latest run step by step, why it failed, and what a replay does
    (`GetInvoiceRun`, and `ReplayInvoices` as a dry run)."""

    async def show(
        client: RatingClient,
    ) -> tuple[ops_pb2.GetInvoiceRunResponse, ops_pb2.ReplayPlan]:
        shown = await client.invoice_run(workflow_id)
        rehearsed = await client.replay_invoices(
            [workflow_id],
            reason="what a replay would do (a dry run: nothing is logged)",
            dry_run=True,
        )
        return shown, rehearsed.plans[0]

    shown, plan = api_call(show, _RUN_NEXT_STEPS)
    run = shown.run
    since = _when(run.since if run.HasField("since") else None)
    click.echo(f"workflow  {run.workflow_id}")
    click.echo(f"run       {run.run_id} ({run.status}, since {since})")
    click.echo(f"contract  {run.contract_id}, billing date {run.billing_date}")
    click.echo(f"invoice   {plan.invoice_id}")
    if run.error:
        click.echo(f"error     {run.error}")
    click.echo("")
    rows = [("STEP", "STATUS", "ATTEMPTS", "RESET POINT", "ERROR")]
    rows += [
        (s.step, s.status, str(s.attempts), str(s.reset_point), _short(s.error)) for s in run.steps
    ]
    echo_table(rows, right_aligned={2, 3})
    _echo_plan(plan, heading="a replay now")
    if shown.replays:
        click.echo("\nreplays so far:")
        _echo_replays(shown.replays)


@ops_invoices.command("replay")
@click.argument("workflow_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every failed invoice workflow.")
@click.option("--contract", "contract_id", help="With --all: only this contract's.")
@click.option("--since", help="With --all: only those failed since (ISO 8601 with offset).")
@click.option(
    "--reset-to",
    metavar="STEP",
    help="Reset the failed run to this step (e.g. collect_payment) instead of rerunning it.",
)
@click.option("--reason", required=True, help="Why (kept in the replay log with your key).")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the replays to end.")
def ops_invoices_replay(
    workflow_ids: tuple[str, ...],
    replay_all: bool,
    contract_id: str | None,
    since: str | None,
    reset_to: str | None,
    reason: str,
    dry_run: bool,
    no_wait: bool,
) -> None:
    """Replay failed invoice workflows: rerun under the same id, or reset to a step
    (`ReplayInvoices`).

    Every step is idempotent on the invoice's business keys: a replay keeps the number the
    invoice was given and never charges twice. Each replay is logged (which key, why, when,
    outcome).
    """
    if bool(workflow_ids) == replay_all:
        raise click.UsageError("name the workflows to replay, or pass --all (not both)")
    if not replay_all and (contract_id or since):
        raise click.UsageError("--contract and --since narrow --all")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    after = parse_timestamp("--since", since)
    if not dry_run and not no_wait:
        click.echo(f"replaying, waiting up to {REPLAY_WAIT_SECONDS}s for the runs to end …")
    answer: ops_pb2.ReplayInvoicesResponse = api_call(
        lambda client: client.replay_invoices(
            workflow_ids,
            replay_all=replay_all,
            contract_id=contract_id or "",
            since=after,
            reason=reason,
            reset_to=reset_to or "",
            dry_run=dry_run,
            wait_seconds=0 if dry_run or no_wait else REPLAY_WAIT_SECONDS,
        ),
        _RUN_NEXT_STEPS,
    )
    if not answer.plans:
        click.echo("no failed invoice workflows to replay")
        return
    if dry_run:
        for plan in answer.plans:
            click.echo(f"\n{plan.run.workflow_id} ({plan.run.status})")
            _echo_plan(plan, heading="would")
        click.echo(f"\ndry run: {len(answer.plans)} replay(s) planned, nothing changed")
        return
    _echo_replays(answer.replays)
    if any(r.outcome in ("failed", "refused") for r in answer.replays):
        click.echo("\nsome replays did not succeed: see `rating ops invoices show WORKFLOW`")
        sys.exit(1)


@ops.command("replays")
@click.option("--workflow", "workflow_id", help="Only this invoice workflow's.")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=1000),
    default=50,
    show_default=True,
    help="Most to show.",
)
def ops_replays(workflow_id: str | None, limit: int) -> None:
    """The replay log, latest first: which key replayed what, when, why, and how it ended
    (`ListReplays`, an ops key)."""
    answer: ops_pb2.ListReplaysResponse = api_call(
        lambda client: client.replays(workflow_id or "", limit=limit)
    )
    if not answer.replays:
        click.echo("no replays")
        return
    _echo_replays(answer.replays)


REPLAY_WAIT_SECONDS = 120
"""How long `replay` waits for the replayed runs to end (the most the API waits)."""

_RUN_NEXT_STEPS = {
    "WORKFLOW_NOT_FOUND": "`rating ops invoices failed` lists the failed invoice workflows",
}


def _echo_plan(plan: ops_pb2.ReplayPlan, heading: str) -> None:
    """What a replay does: mode, restart point, effects; or why it is refused."""
    if plan.refusal:
        click.echo(f"\n{heading}: refused: {plan.refusal}")
        return
    how = (
        "rerun it from the start under the same id"
        if plan.mode == "rerun"
        else f"reset its run to {plan.reset_to} (event {plan.reset_point})"
    )
    click.echo(f"\n{heading}: {how}")
    for effect in plan.effects:
        click.echo(f"  - {effect}")


def _echo_replays(replays: Sequence[ops_pb2.Replay]) -> None:
    rows = [("ID", "WHEN", "WHO", "WORKFLOW", "MODE", "OUTCOME", "DETAIL", "REASON")]
    rows += [
        (
            str(r.replay_id),
            _when(r.requested_at),
            r.actor,
            r.workflow_id,
            r.mode + (f" to {r.reset_to}" if r.reset_to else ""),
            r.outcome,
            _short(r.detail),
            _short(r.reason),
        )
        for r in replays
    ]
    echo_table(rows, right_aligned={0})


def _when(at: Timestamp | None) -> str:
    return "" if at is None else at.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 90) -> str:
    """One line of at most `width` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@ops.group("histories")
def ops_histories() -> None:
    """Workflow histories on the Temporal server."""


@ops_histories.command("check")
@click.option(
    "--per-type",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Latest histories to replay per workflow type.",
)
def ops_histories_check(per_type: int) -> None:
    """Replay recent histories of every workflow type against this code (exit 1 if one fails).

    Run it before deploying: a workflow change that running workflows would not replay
    (non-determinism) fails here instead of in production.
    """
    from rating_service.ops.determinism import DeterminismReport, check_histories
    from rating_service.runtime.temporal import connect_temporal
    from rating_service.workflows.registry import SANDBOX, WORKFLOWS

    async def check() -> DeterminismReport:
        client = await connect_temporal(load_settings())
        return await check_histories(client, WORKFLOWS, SANDBOX, per_type)

    report: DeterminismReport = run_async(check)
    for name, count in report.checked.items():
        click.echo(f"{name:<16} {count} replayed")
    for failure in report.failures:
        click.echo(
            f"NON-DETERMINISTIC {failure.workflow_type} {failure.workflow_id}"
            f" (run {failure.run_id}): {failure.error}"
        )
    if not report.clean:
        click.echo(
            f"{len(report.failures)} histories do not replay: keep the old behaviour behind"
            " workflow.patched() before deploying"
        )
        sys.exit(1)
    click.echo("every history replays")
