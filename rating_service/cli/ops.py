"""`rating ops`: ledger reconciliation, failed invoice workflows and their replays, histories."""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from rating_service.cli.command_line import (
    echo_table,
    load_settings,
    parse_timestamp,
    require_database_url,
    run_async,
    tenant_option,
)
from rating_service.cli.tenant_services import tenant_components

if TYPE_CHECKING:
    from rating_service.core.ledger.invariants import DriftReport
    from rating_service.ops.failures import InvoiceRun
    from rating_service.ops.replay import InvoiceReplays, ReplayPlan
    from rating_service.store.replay import Replay


@click.group()
def ops() -> None:
    """Operations: ledger reconciliation, the workflow determinism guard."""


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
    """Invoice workflows that failed: find them, see why, replay them (every replay logged)."""


@ops_invoices.command("failed")
@tenant_option
@click.option("--contract", "contract_id", help="Only this contract's (default: all).")
@click.option("--since", help="Only those failed since (ISO 8601 with offset, e.g. …T09:00Z).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most to show."
)
def ops_invoices_failed(
    tenant_name: str, contract_id: str | None, since: str | None, limit: int
) -> None:
    """List failed (or stuck) invoice workflows: contract, date, step, error, attempts, since."""

    async def find() -> list[InvoiceRun]:
        async with _invoice_replays(tenant_name) as (replays, tenant_id):
            return await replays.failed(
                tenant_id,
                contract_id=contract_id,
                since=parse_timestamp("--since", since),
                limit=limit,
            )

    found: list[InvoiceRun] = run_async(find)
    if not found:
        click.echo("no failed invoice workflows")
        return
    rows = [("CONTRACT", "BILLING DATE", "STATUS", "STEP", "ATTEMPTS", "SINCE", "ERROR")]
    for run in found:
        failing = run.failing_step
        rows.append(
            (
                run.key.contract_id,
                run.key.billing_date + (f" r{run.key.revision}" if run.key.revision else ""),
                run.status,
                "" if failing is None else failing.step,
                "" if failing is None else str(failing.attempts),
                _when(run.since),
                _short(run.error or ("" if failing is None else failing.error)),
            )
        )
    echo_table(rows, right_aligned={4})
    click.echo("\nsee one with `rating ops invoices show WORKFLOW`; workflows:")
    for run in found:
        click.echo(f"  {run.workflow_id}")


@ops_invoices.command("show")
@click.argument("workflow_id")
@tenant_option
def ops_invoices_show(workflow_id: str, tenant_name: str) -> None:
    """An invoice workflow's latest run step by step, why it failed, and what a replay does."""

    async def show() -> tuple[ReplayPlan, list[Replay]]:
        async with _invoice_replays(tenant_name) as (replays, tenant_id):
            plan = await replays.plan(tenant_id, workflow_id)
            return plan, await replays.replays(tenant_id, workflow_id)

    shown: tuple[ReplayPlan, list[Replay]] = run_async(show)
    plan, logged = shown
    run = plan.run
    click.echo(f"workflow  {run.workflow_id}")
    click.echo(f"run       {run.run_id} ({run.status}, since {_when(run.since)})")
    click.echo(f"contract  {run.key.contract_id}, billing date {run.key.billing_date}")
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
    if logged:
        click.echo("\nreplays so far:")
        _echo_replays(logged)


@ops_invoices.command("replay")
@click.argument("workflow_ids", nargs=-1)
@tenant_option
@click.option("--all", "replay_all", is_flag=True, help="Every failed invoice workflow.")
@click.option("--contract", "contract_id", help="With --all: only this contract's.")
@click.option("--since", help="With --all: only those failed since (ISO 8601 with offset).")
@click.option(
    "--reset-to",
    metavar="STEP",
    help="Reset the failed run to this step (e.g. collect_payment) instead of rerunning it.",
)
@click.option("--reason", required=True, help="Why (kept in the replay log with your name).")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the replays to end.")
def ops_invoices_replay(
    workflow_ids: tuple[str, ...],
    tenant_name: str,
    replay_all: bool,
    contract_id: str | None,
    since: str | None,
    reset_to: str | None,
    reason: str,
    dry_run: bool,
    no_wait: bool,
) -> None:
    """Replay failed invoice workflows: rerun under the same id, or reset to a step.

    Every step is idempotent on the invoice's business keys: a replay keeps the number the
    invoice was given and never charges twice. Each replay is logged (who, why, when, outcome).
    """
    if bool(workflow_ids) == replay_all:
        raise click.UsageError("name the workflows to replay, or pass --all (not both)")
    if not replay_all and (contract_id or since):
        raise click.UsageError("--contract and --since narrow --all")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    actor = f"cli:{getpass.getuser()}"

    async def replay() -> list[Replay] | None:
        from rating_service.ops.replay import REPLAY_WAIT

        async with _invoice_replays(tenant_name) as (replays, tenant_id):
            plans = await replays.plans(
                tenant_id,
                None if replay_all else workflow_ids,
                contract_id=contract_id,
                since=parse_timestamp("--since", since),
                reset_to=reset_to,
            )
            if not plans:
                click.echo("no failed invoice workflows to replay")
                return []
            if dry_run:
                for plan in plans:
                    click.echo(f"\n{plan.run.workflow_id} ({plan.run.status})")
                    _echo_plan(plan, heading="would")
                click.echo(f"\ndry run: {len(plans)} replay(s) planned, nothing changed")
                return None
            made = []
            with click.progressbar(
                plans, label=f"replaying {len(plans)} invoice(s)", show_pos=True
            ) as bar:
                for plan in bar:
                    made.append(
                        await replays.replay(
                            tenant_id,
                            plan.run.workflow_id,
                            reason=reason,
                            actor=actor,
                            reset_to=reset_to,
                            wait=None,
                        )
                    )
            if no_wait:
                return made
            click.echo("waiting for the replayed runs to end …")
            return await replays.settle(made, REPLAY_WAIT)

    made: list[Replay] | None = run_async(replay)
    if not made:
        return
    _echo_replays(made)
    if any(r.outcome in ("failed", "refused") for r in made):
        click.echo("\nsome replays did not succeed: see `rating ops invoices show WORKFLOW`")
        sys.exit(1)


@ops.command("replays")
@tenant_option
@click.option("--workflow", "workflow_id", help="Only this invoice workflow's.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most to show."
)
def ops_replays(tenant_name: str, workflow_id: str | None, limit: int) -> None:
    """The replay log, latest first: who replayed what, when, why, and how it ended."""

    async def log() -> list[Replay]:
        async with _invoice_replays(tenant_name) as (replays, tenant_id):
            return await replays.replays(tenant_id, workflow_id, limit)

    logged: list[Replay] = run_async(log)
    if not logged:
        click.echo("no replays")
        return
    _echo_replays(logged)


def _echo_plan(plan: ReplayPlan, heading: str) -> None:
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


def _echo_replays(replays: Sequence[Replay]) -> None:
    rows = [("ID", "WHEN", "WHO", "WORKFLOW", "MODE", "OUTCOME", "DETAIL", "REASON")]
    rows += [
        (
            str(r.replay_id),
            _when(r.requested_at),
            r.request.actor,
            r.request.workflow_id,
            r.request.mode + (f" to {r.request.reset_to}" if r.request.reset_to else ""),
            r.outcome,
            _short(r.detail),
            _short(r.request.reason),
        )
        for r in replays
    ]
    echo_table(rows, right_aligned={0})


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 90) -> str:
    """One line of at most `width` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@contextlib.asynccontextmanager
async def _invoice_replays(tenant_name: str) -> AsyncIterator[tuple[InvoiceReplays, str]]:
    """Ops replays (Temporal and the database) for a tenant named on the command line."""
    from rating_service.runtime.temporal import connect_temporal

    client = await connect_temporal(load_settings())
    async with tenant_components(tenant_name) as (built, caller):
        yield built.invoice_replays(client), caller.tenant_id


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
