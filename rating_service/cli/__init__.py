"""The `rating` command: run the server, the worker or the local stack; manage data and keys."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import yaml

from rating_service.core.auth import Caller, Role, issue_key
from rating_service.core.errors import DomainError
from rating_service.core.money import format_decimal
from rating_service.runtime.logs import configure_logging
from rating_service.settings import Settings

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.ext.asyncio import AsyncEngine
    from temporalio.client import Client as TemporalClient

    from rating_service.core.billing.invoice import Invoice
    from rating_service.core.contracts.contract import Contract, Customer
    from rating_service.core.ledger.invariants import DriftReport
    from rating_service.core.pricing.catalog import CatalogChange
    from rating_service.ops.failures import InvoiceRun
    from rating_service.ops.replay import InvoiceReplays, ReplayPlan
    from rating_service.services.catalog import Catalogs
    from rating_service.services.contract import ContractAdmin, Outcome
    from rating_service.services.invoice import Invoicing
    from rating_service.services.webhook import NewEndpoint, Notifications
    from rating_service.store.contract import Commitment
    from rating_service.store.invoice import PaymentAttempt
    from rating_service.store.replay import Replay
    from rating_service.store.webhook import DeliveryAttempt, WebhookEndpoint

T = TypeVar("T")

tenant_option = click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
"""The `--tenant NAME_OR_ID` every per-tenant operator command takes."""


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except DomainError as exc:
        raise click.ClickException(str(exc)) from exc


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise click.ClickException(
            "RATING_DATABASE_URL is not set; `rating dev` prints the URL of its embedded database"
        )
    return settings.database_url


def _run(coroutine_function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a command's coroutine in an event loop of its own; every async command goes here.

    Its Temporal clients are shut down inside the loop (see rating_service.runtime.temporal):
    left to interpreter exit, they abort the process about one run in four.
    """
    from rating_service.runtime.temporal import temporal_runtime

    async def command() -> T:
        async with temporal_runtime():
            return await coroutine_function(*args)

    try:
        return asyncio.run(command())
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def main() -> None:
    """Rating and billing service for AI usage."""


@main.command()
def serve() -> None:
    """Run the gRPC server until SIGTERM (then drain gracefully)."""
    from rating_service.api.server import serve as serve_forever

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _run(serve_forever, settings)


@main.command()
def worker() -> None:
    """Run the Temporal worker until SIGTERM."""
    from rating_service.runtime.worker import work

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    _run(work, settings)


@main.command()
@click.option("--address", help="host:port to ask (default: RATING_LISTEN_ADDRESS).")
@click.option("--service", default="", help="Service name; empty means the whole server.")
def health(address: str | None, service: str) -> None:
    """Exit 0 if the server reports SERVING (for container health checks)."""
    from rating_service.api.health import probe

    target = address or _settings().listen_address
    status = _run(probe, target, service)
    click.echo(status)
    if status != "SERVING":
        sys.exit(1)


@main.command("dev")
@click.option("--demo", is_flag=True, help="Drive simulated traffic and show a live view of it.")
def dev_command(demo: bool) -> None:
    """Start everything locally: embedded PostgreSQL, Temporal dev server, server and worker."""
    # pgserver forks pg_ctl while gRPC threads run; gRPC's fork handlers are not needed for that.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from rating_service.cli.dev import run_dev

    settings = _settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, "text")
    try:
        _run(run_dev, settings, demo)
    except KeyboardInterrupt:
        sys.exit(130)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations to RATING_DATABASE_URL."""
    from rating_service.services.webhook import webhook_secret_keys
    from rating_service.store import migrations

    settings = _settings()
    try:
        # The keys: a migration seals webhook secrets stored before they were encrypted (0007).
        migrations.upgrade(_database_url(settings), revision, webhook_secret_keys(settings))
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"database at {revision}")


@main.group()
def tenants() -> None:
    """Tenants (operator commands, straight to the database)."""


@tenants.command("create")
@click.argument("name")
def tenants_create(name: str) -> None:
    """Create a tenant and its first admin API key (the bootstrap of a fresh install)."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    async def create() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            store = TenantStore(engine)
            tenant = await store.create_tenant(name, actor="cli")
            issued = issue_key(tenant.tenant_id, Role.ADMIN, "bootstrap admin", datetime.now(UTC))
            await store.add_key(issued.key, actor="cli")
        finally:
            await engine.dispose()
        click.echo(f"tenant {tenant.tenant_id} ({tenant.name})")
        click.echo(f"admin API key (shown once, keep it secret): {issued.token}")

    _run(create)


@tenants.command("list")
def tenants_list() -> None:
    """List the tenants."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    async def show() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            for tenant in await TenantStore(engine).list_tenants():
                click.echo(f"{tenant.tenant_id}  {tenant.name}  {tenant.created_at:%Y-%m-%d}")
        finally:
            await engine.dispose()

    _run(show)


@main.group()
def keys() -> None:
    """API keys (operator commands, straight to the database)."""


@keys.command("create")
@tenant_option
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default="", help="A label for humans, e.g. checkout-service.")
def keys_create(tenant_name: str, role: str, name: str) -> None:
    """Create an API key; its secret is printed once and stored only as a hash."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    async def create() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            store = TenantStore(engine)
            tenant = await store.find(tenant_name)
            issued = issue_key(tenant.tenant_id, Role(role), name, datetime.now(UTC))
            await store.add_key(issued.key, actor="cli")
        finally:
            await engine.dispose()
        click.echo(f"key {issued.key.key_id} ({role}) for tenant {tenant.name}")
        click.echo(f"API key (shown once, keep it secret): {issued.token}")

    _run(create)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    async def revoke() -> None:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            key = await TenantStore(engine).revoke_key(key_id, datetime.now(UTC), actor="cli")
        finally:
            await engine.dispose()
        click.echo(f"key {key.key_id} revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")

    _run(revoke)


@main.group()
def ops() -> None:
    """Operations: ledger reconciliation, the workflow determinism guard."""


@ops.command("reconcile")
def ops_reconcile() -> None:
    """Rebuild every account from its transfers and report drift (exit 1 on any drift)."""
    import asyncpg

    from rating_service.store.database import asyncpg_dsn
    from rating_service.store.ledger import reconcile

    async def check() -> dict[str, DriftReport]:
        conn = await asyncpg.connect(asyncpg_dsn(_database_url(_settings())))
        try:
            return await reconcile(conn)
        finally:
            await conn.close()

    reports = _run(check)
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
                since=_timestamp("--since", since),
                limit=limit,
            )

    found: list[InvoiceRun] = _run(find)
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
    _echo_table(rows, right_aligned={4})
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

    shown: tuple[ReplayPlan, list[Replay]] = _run(show)
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
    _echo_table(rows, right_aligned={2, 3})
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
                since=_timestamp("--since", since),
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

    made: list[Replay] | None = _run(replay)
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

    logged: list[Replay] = _run(log)
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
    _echo_table(rows, right_aligned={0})


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str, width: int = 90) -> str:
    """One line of at most `width` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@contextlib.asynccontextmanager
async def _invoice_replays(tenant_name: str) -> AsyncIterator[tuple[InvoiceReplays, str]]:
    """Ops replays (Temporal and the database) for a tenant named on the command line."""
    from rating_service.ops.replay import InvoiceReplays
    from rating_service.runtime.worker import connect_temporal

    settings = _settings()
    client = await connect_temporal(settings)
    async with _tenant_database(tenant_name) as (pool, _engine, tenant_id):
        yield InvoiceReplays(client, pool, settings.temporal_task_queue), tenant_id


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
    from rating_service.runtime.worker import connect_temporal
    from rating_service.workflows.registry import SANDBOX, WORKFLOWS

    async def check() -> DeterminismReport:
        client = await connect_temporal(_settings())
        return await check_histories(client, WORKFLOWS, SANDBOX, per_type)

    report: DeterminismReport = _run(check)
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


@main.group()
def catalog() -> None:
    """A tenant's catalog as a YAML document (operator commands, straight to the database)."""


@catalog.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@click.option("--dry-run", is_flag=True, help="Print the changes without making them.")
def catalog_apply(file: Path, tenant_name: str, dry_run: bool) -> None:
    """Make the tenant's catalog what FILE declares; applying it twice changes nothing."""
    from rating_service.cli.catalog_file import read_catalog_file

    try:
        document = read_catalog_file(file)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.ClickException(f"{file}: {exc}") from exc

    async def apply() -> list[CatalogChange]:
        async with _catalogs(tenant_name) as (catalogs, caller):
            return await catalogs.apply(caller, document, dry_run=dry_run)

    changes = _run(apply)
    for change in changes:
        click.echo(change.describe())
    verb = "would change" if dry_run else "changed"
    click.echo(f"{len(changes)} {verb}" if changes else "catalog already up to date")


@catalog.command("export")
@tenant_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File.")
def catalog_export(tenant_name: str, output: Path | None) -> None:
    """Write the tenant's catalog as YAML (to stdout, or to --output)."""
    from rating_service.cli.catalog_file import dump_catalog

    async def export() -> dict[str, object]:
        async with _catalogs(tenant_name) as (catalogs, caller):
            return (await catalogs.catalog(caller.tenant_id)).to_document()

    text = dump_catalog(_run(export))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")


@main.group()
def customers() -> None:
    """A tenant's customers (operator commands, straight to the database)."""


@customers.command("create")
@click.argument("customer_id")
@tenant_option
@click.option("--name", help="A name for humans (default: the id).")
def customers_create(customer_id: str, tenant_name: str, name: str | None) -> None:
    """Create a customer under the tenant's own id for them (e.g. their CRM id)."""
    request = {"customer_id": customer_id, "name": name or customer_id}
    customer: Customer = _admin_call(
        tenant_name, lambda admin, caller: admin.create_customer(caller, request)
    )
    click.echo(f"customer {customer.customer_id} ({customer.name})")


@customers.command("list")
@tenant_option
def customers_list(tenant_name: str) -> None:
    """List the tenant's customers, by id."""
    found: list[Customer] = _admin_call(tenant_name, lambda admin, caller: admin.customers(caller))
    for customer in found:
        click.echo(f"{customer.customer_id}  {customer.name}")


@main.group()
def contracts() -> None:
    """Customers' contracts (operator commands, straight to the database)."""


@contracts.command("create")
@tenant_option
@click.option("--customer", "customer_id", required=True, help="The customer's id.")
@click.option("--rate-card", "rate_card_key", required=True, help="A rate card of the catalog.")
@click.option("--start", help="Term start, ISO 8601 with an offset (default: now).")
@click.option("--end", help="Term end, ISO 8601 with an offset (default: evergreen).")
@click.option("--anchor-day", type=click.IntRange(1, 31), help="Billing day (default: start's).")
@click.option(
    "--frequency",
    type=click.Choice(["monthly", "quarterly", "annual"]),
    default="monthly",
    show_default=True,
)
@click.option("--currency", default="USD", show_default=True, help="Invoice currency.")
@click.option(
    "--overage-policy",
    type=click.Choice(["block", "arrears"]),
    default="block",
    show_default=True,
    help="block refuses usage beyond the pools; arrears invoices it as overage.",
)
@click.option("--spend-cap", help="Most spend per billing period (default: no cap).")
def contracts_create(
    tenant_name: str,
    customer_id: str,
    rate_card_key: str,
    start: str | None,
    end: str | None,
    anchor_day: int | None,
    frequency: str,
    currency: str,
    overage_policy: str,
    spend_cap: str | None,
) -> None:
    """Create an active contract for a customer; prints its id."""
    term_start = _timestamp("--start", start) or datetime.now(UTC).replace(microsecond=0)
    terms = {
        "customer_id": customer_id,
        "term_start": term_start,
        "term_end": _timestamp("--end", end),
        # The anchor is in UTC, so "the start's day" is the day of the month there.
        "billing_anchor": {"day": anchor_day or term_start.astimezone(UTC).day},
        "billing_frequency": frequency,
        "invoice_currency": currency,
        "rate_card_key": rate_card_key,
        "overage_policy": overage_policy,
        "spend_cap": spend_cap,
    }
    contract: Contract = _admin_call(
        tenant_name, lambda admin, caller: admin.create_contract(caller, terms)
    )
    click.echo(contract.contract_id)


@contracts.command("list")
@tenant_option
@click.option("--customer", "customer_id", help="Only this customer's (default: all).")
def contracts_list(tenant_name: str, customer_id: str | None) -> None:
    """List contracts, by customer then term start."""
    found: list[Contract] = _admin_call(
        tenant_name, lambda admin, caller: admin.contracts(caller, customer_id)
    )
    for contract in found:
        click.echo(
            f"{contract.contract_id}  {contract.customer_id}  {_term(contract)}"
            f"  {contract.rate_card_key}  {contract.invoice_currency.code}  {contract.status}"
        )


@contracts.command("show")
@click.argument("contract_id")
@tenant_option
def contracts_show(contract_id: str, tenant_name: str) -> None:
    """Show a contract's terms and every commitment with its balance now."""
    shown: tuple[Contract, list[Commitment]] = _admin_call(
        tenant_name, lambda admin, caller: admin.contract(caller, contract_id)
    )
    contract, commitments = shown
    anchor = contract.billing_anchor
    cap = contract.spend_cap
    for label, value in [
        ("contract", contract.contract_id),
        ("customer", contract.customer_id),
        ("status", contract.status),
        ("term", _term(contract)),
        ("rate card", contract.rate_card_key),
        ("currency", contract.invoice_currency.code),
        ("billing", f"{contract.billing_frequency}, from day {anchor.day} at {anchor.time} UTC"),
        ("overage policy", contract.overage_policy),
        ("spend cap", "none" if cap is None else f"{format_decimal(cap)} per period"),
        ("overrides", len(contract.overrides)),
        ("alert thresholds", len(contract.alert_thresholds)),
    ]:
        click.echo(f"{label + ':':<18}{value}")
    click.echo(f"commitments: {len(commitments)}")
    for commitment in commitments:
        click.echo(f"  {_describe(commitment)}")


@main.group()
def credits() -> None:
    """Grants, top-ups and adjustments of contracts' pools, idempotent on their ids."""


@credits.command("grant")
@tenant_option
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--amount", required=True, help="In the contract's currency, > 0.")
@click.option("--grant-id", required=True, help="Your idempotency key for this grant.")
@click.option(
    "--kind",
    type=click.Choice(["credit", "prepaid_commit", "postpaid_commit"]),
    default="credit",
    show_default=True,
)
@click.option("--priority", type=int, help="Drawn smaller first (default: 0).")
@click.option("--cost-basis", help="0 free to 1 face value (default: 0 credit, 1 commit).")
@click.option("--scope", multiple=True, help="A product key it pays for (repeat; default: all).")
@click.option("--starts", help="ISO 8601 with an offset (default: now).")
@click.option("--expires", help="ISO 8601 with an offset (default: never).")
@click.option("--memo", help="A note kept on the ledger transfers and in the audit log.")
def credits_grant(
    tenant_name: str,
    contract_id: str,
    amount: str,
    grant_id: str,
    kind: str,
    priority: int | None,
    cost_basis: str | None,
    scope: tuple[str, ...],
    starts: str | None,
    expires: str | None,
    memo: str | None,
) -> None:
    """Add a credit or commitment to a contract; the same --grant-id again is a replay."""
    request = {
        "grant_id": grant_id,
        "contract_id": contract_id,
        "kind": kind,
        "amount": amount,
        "priority": priority,
        "cost_basis": cost_basis,
        "scope": list(scope),
        "starts_at": _timestamp("--starts", starts),
        "expires_at": _timestamp("--expires", expires),
        "memo": memo,
    }
    outcome: Outcome = _admin_call(
        tenant_name, lambda admin, caller: admin.add_commitment(caller, request)
    )
    _echo_outcome(outcome, live=False)


@credits.command("top-up")
@tenant_option
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--amount", required=True, help="In the contract's currency, > 0.")
@click.option("--top-up-id", required=True, help="Your idempotency key for this top-up.")
@click.option("--priority", type=int, help="Drawn smaller first (default: 0).")
@click.option("--cost-basis", help="What one unit cost the customer (default: 1).")
@click.option("--expires", help="ISO 8601 with an offset (default: never).")
@click.option("--memo", help="A note kept on the ledger transfers and in the audit log.")
def credits_top_up(
    tenant_name: str,
    contract_id: str,
    amount: str,
    top_up_id: str,
    priority: int | None,
    cost_basis: str | None,
    expires: str | None,
    memo: str | None,
) -> None:
    """Add bought credit to a contract; the same --top-up-id again is a replay."""
    request = {
        "top_up_id": top_up_id,
        "contract_id": contract_id,
        "amount": amount,
        "priority": priority,
        "cost_basis": cost_basis,
        "expires_at": _timestamp("--expires", expires),
        "memo": memo,
    }
    outcome: Outcome = _admin_call(tenant_name, lambda admin, caller: admin.top_up(caller, request))
    _echo_outcome(outcome, live=False)


@credits.command("adjust")
@tenant_option
@click.option("--contract", "contract_id", required=True, help="The contract's id.")
@click.option("--pool", "pool_id", required=True, help="The pool's id (see contracts show).")
@click.option("--amount", required=True, help="Positive adds, negative removes (--amount=-5).")
@click.option("--adjustment-id", required=True, help="Your idempotency key for this change.")
@click.option("--reason", required=True, help="Why; kept on the ledger transfer and audited.")
def credits_adjust(
    tenant_name: str, contract_id: str, pool_id: str, amount: str, adjustment_id: str, reason: str
) -> None:
    """Add to or remove from a pool by hand; a removal never overdraws it."""
    from rating_service.core.errors import FailedPrecondition
    from rating_service.core.ledger.journal import INSUFFICIENT_CREDIT

    request = {
        "adjustment_id": adjustment_id,
        "contract_id": contract_id,
        "pool_id": pool_id,
        "amount": amount,
        "reason": reason,
    }

    async def adjust(admin: ContractAdmin, caller: Caller) -> Outcome:
        try:
            return await admin.adjust_balance(caller, request)
        except FailedPrecondition as refused:
            if refused.reason != INSUFFICIENT_CREDIT:
                raise
            # The ledger names accounts and transfers; an operator thinks in pools.
            balance = "; ".join(v.description for v in refused.violations)
            raise click.ClickException(
                f"insufficient credit in pool {pool_id}: {balance}; nothing changed"
            ) from refused

    _echo_outcome(_admin_call(tenant_name, adjust), live=True)


@contracts.command("cancel")
@click.argument("contract_id")
@tenant_option
def contracts_cancel(contract_id: str, tenant_name: str) -> None:
    """End a contract now: its billing workflow ends the term and issues the final invoice."""
    _run(_signal_billing, tenant_name, contract_id, "cancel")
    click.echo(f"asked {contract_id}'s billing cycle to cancel; `rating invoices list` shows it")


@contracts.command("bill-now")
@click.argument("contract_id")
@tenant_option
def contracts_bill_now(contract_id: str, tenant_name: str) -> None:
    """Invoice a period that has ended without waiting out its grace window."""
    _run(_signal_billing, tenant_name, contract_id, "bill_now")
    click.echo(f"asked {contract_id}'s billing cycle to bill the ended period now")


async def _signal_billing(tenant_name: str, contract_id: str, signal: str) -> None:
    """Send a signal to a contract's billing workflow, with an actionable error if it has none."""
    from temporalio.service import RPCError

    from rating_service.runtime.worker import connect_temporal
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore
    from rating_service.workflows.billing import billing_workflow_id

    settings = _settings()
    engine = create_engine(_database_url(settings), pool_size=1)
    try:
        tenant = await TenantStore(engine).find(tenant_name)
    finally:
        await engine.dispose()
    client = await connect_temporal(settings)
    handle = client.get_workflow_handle(billing_workflow_id(tenant.tenant_id, contract_id))
    try:
        await handle.signal(signal)
    except RPCError as error:
        raise click.ClickException(
            f"contract {contract_id!r} has no running billing cycle ({error.message}); check the"
            " id with `rating contracts list`, and that `rating worker` is running"
        ) from error


@contracts.command("payment-method")
@click.argument("contract_id")
@tenant_option
@click.option("--token", required=True, help="The payment method's token at the gateway.")
def contracts_payment_method(contract_id: str, tenant_name: str, token: str) -> None:
    """Save a contract's new payment method; invoices in dunning are retried with it at once."""
    changed: tuple[Contract, list[str]] = _run(
        _change_payment_method, tenant_name, contract_id, token
    )
    contract, retried = changed
    click.echo(f"saved {token} as {contract.contract_id}'s payment method")
    for invoice_id in retried:
        click.echo(f"retrying {invoice_id} now")


async def _change_payment_method(
    tenant_name: str, contract_id: str, token: str
) -> tuple[Contract, list[str]]:
    """Save the method and signal each unpaid invoice's dunning; the invoices signalled."""
    # Temporal first: a method saved that dunning never hears of leaves a suspended contract
    # suspended, so without Temporal nothing is saved.
    temporal = await _temporal_before(
        "nothing was saved: the dunning of the contract's unpaid invoices must hear of a new"
        " payment method through Temporal (or a suspended contract stays suspended)"
    )
    async with _contract_admin(tenant_name) as (admin, caller):
        contract = await admin.change_payment_method(caller, contract_id, token)
    async with _invoicing(tenant_name) as (invoicing, tenant_id):
        unpaid = await invoicing.invoices.unpaid_invoice_ids(tenant_id, contract_id)
    return contract, await _signal_dunning(temporal, tenant_id, unpaid, "payment_method_updated")


async def _temporal_before(unchanged: str) -> TemporalClient:
    """Temporal, reached before a change that workflows must hear of; if not, say what did not
    happen (`unchanged`) and how to point `rating` at Temporal."""
    from rating_service.runtime.worker import connect_temporal

    try:
        return await connect_temporal(_settings())
    except DomainError as exc:
        raise click.ClickException(f"{exc.message}; {unchanged}") from exc


async def _signal_dunning(
    temporal: TemporalClient, tenant_id: str, invoice_ids: Sequence[str], signal: str
) -> list[str]:
    """Signal the dunning workflows of these invoices that are running; the invoices signalled."""
    from temporalio.service import RPCError

    from rating_service.workflows.dunning import dunning_workflow_id

    signalled = []
    for invoice_id in invoice_ids:
        handle = temporal.get_workflow_handle(dunning_workflow_id(tenant_id, invoice_id))
        try:
            await handle.signal(signal)
        except RPCError:
            continue  # not in dunning: never failed to pay, or its dunning has ended
        signalled.append(invoice_id)
    return signalled


@main.group()
def invoices() -> None:
    """Invoices, their documents and payments (operator commands, straight to the database)."""


@invoices.command("list")
@tenant_option
@click.option("--contract", "contract_id", help="Only this contract's (default: all).")
@click.option("--customer", "customer_id", help="Only this customer's (default: all).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most to show."
)
def invoices_list(
    tenant_name: str, contract_id: str | None, customer_id: str | None, limit: int
) -> None:
    """List invoices, latest billing date first."""
    found: list[Invoice] = _invoicing_call(
        tenant_name,
        lambda invoicing, tenant_id: invoicing.invoices.invoices(
            tenant_id, contract_id, limit, customer_id=customer_id
        ),
    )
    if not found:
        click.echo("no invoices yet: the billing worker issues them at each billing date")
        return
    rows = [("NUMBER", "INVOICE", "CONTRACT", "BILLING DATE", "STATE", "TOTAL")]
    rows += [
        (
            invoice.number or "(draft)",
            invoice.invoice_id,
            invoice.contract_id,
            invoice.billing_date.isoformat(),
            str(invoice.state),
            _money(invoice.total, invoice),
        )
        for invoice in found
    ]
    _echo_table(rows, right_aligned={5})


@invoices.command("show")
@click.argument("invoice_id")
@tenant_option
def invoices_show(invoice_id: str, tenant_name: str) -> None:
    """Show an invoice: its lines with their tiers, subtotals, total and payment attempts."""

    async def show(invoicing: Invoicing, tenant_id: str) -> tuple[Invoice, list[PaymentAttempt]]:
        invoice = await invoicing.invoices.invoice(tenant_id, invoice_id)
        return invoice, await invoicing.invoices.payment_attempts(tenant_id, invoice_id)

    shown: tuple[Invoice, list[PaymentAttempt]] = _invoicing_call(tenant_name, show)
    invoice, attempts = shown
    issued = "not yet (a draft)" if invoice.issued_at is None else invoice.issued_at.isoformat()
    for label, value in [
        ("invoice", invoice.invoice_id),
        ("number", invoice.number or "none yet (a draft)"),
        ("state", invoice.state),
        ("contract", invoice.contract_id),
        ("customer", invoice.customer_id),
        ("billing date", invoice.billing_date.isoformat()),
        ("period", _span(invoice.period_start, invoice.period_end)),
        ("issued", issued),
        ("revision", invoice.revision),
    ]:
        click.echo(f"{label + ':':<18}{value}")
    click.echo(f"lines: {len(invoice.lines)}")
    rows = [("  KIND", "DESCRIPTION", "QUANTITY", "UNIT PRICE", "AMOUNT")]
    for line in invoice.lines:
        service = (line.service_start, line.service_end)
        when = "" if service == (invoice.period_start, invoice.period_end) else _span(*service)
        rows.append(
            (
                f"  {line.kind}",
                f"{line.description} ({when})" if when else line.description,
                _optional_decimal(line.quantity),
                _optional_decimal(line.unit_price),
                _money(line.amount, invoice),
            )
        )
        # Tier amounts are exact: they explain the line, which alone is rounded.
        rows += [
            (
                "",
                f"    {tier.description}",
                format_decimal(tier.quantity),
                format_decimal(tier.unit_price),
                format_decimal(tier.amount),
            )
            for tier in line.tiers
        ]
    _echo_table(rows, right_aligned={2, 3, 4})
    for kind in dict.fromkeys(line.kind for line in invoice.lines):
        click.echo(f"{'subtotal ' + kind + ':':<18}{_money(invoice.subtotal(kind), invoice)}")
    click.echo(f"{'total:':<18}{_money(invoice.total, invoice)}")
    if invoice.exact_total != invoice.total:
        click.echo(f"{'exact total:':<18}{format_decimal(invoice.exact_total)} (before rounding)")
    click.echo(f"payment attempts: {len(attempts) or 'none'}")
    for attempt in attempts:
        failure = (
            f"  declined {attempt.failure_code} ({attempt.failure_message or 'no message'})"
            if attempt.failure_code
            else ""
        )
        reference = f"  ref {attempt.gateway_reference}" if attempt.gateway_reference else ""
        click.echo(
            f"  #{attempt.attempt}  {attempt.status}  {_money(attempt.amount, invoice)}"
            f"  {attempt.payment_method}  {attempt.created_at.isoformat()}{reference}{failure}"
        )


@invoices.command("pdf")
@click.argument("invoice_id")
@tenant_option
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File."
)
def invoices_pdf(invoice_id: str, tenant_name: str, output: Path) -> None:
    """Write an invoice's PDF, showing its state now (paid, void, …), to a file."""
    _write_document(tenant_name, invoice_id, "pdf", output)


@invoices.command("html")
@click.argument("invoice_id")
@tenant_option
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File."
)
def invoices_html(invoice_id: str, tenant_name: str, output: Path) -> None:
    """Write an invoice's HTML, showing its state now (paid, void, …), to a file."""
    _write_document(tenant_name, invoice_id, "html", output)


def _write_document(tenant_name: str, invoice_id: str, kind: str, output: Path) -> None:
    """Write an invoice's document as it is now; a draft's is rendered for a look, not kept."""
    from rating_service.core.billing.document import render_html, render_pdf
    from rating_service.core.billing.invoice import InvoiceState

    async def fetch(invoicing: Invoicing, tenant_id: str) -> tuple[str | bytes, str]:
        invoice = await invoicing.invoices.invoice(tenant_id, invoice_id)
        if invoice.state is InvoiceState.DRAFT:
            # A draft may still change: render it for a look, keep nothing.
            parties = await invoicing.parties(invoice)
            render = render_pdf if kind == "pdf" else render_html
            return render(invoice, parties), " (a draft, rendered now and not kept)"
        kept = await invoicing.invoices.document(tenant_id, invoice_id, kind) is not None
        # Not kept yet, or cleared by a change of state: rendered now as the API would, and kept.
        body = await invoicing.document(tenant_id, invoice_id, kind)
        return body, "" if kept else " (rendered now)"

    fetched: tuple[str | bytes, str] = _invoicing_call(tenant_name, fetch)
    body, note = fetched
    content = body.encode() if isinstance(body, str) else body
    try:
        output.write_bytes(content)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write {output}: {exc.strerror}; choose another -o path"
        ) from exc
    click.echo(f"wrote {output} ({len(content)} bytes){note}")


@invoices.command("void")
@click.argument("invoice_id")
@tenant_option
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.option(
    "--regenerate", is_flag=True, help="Issue a corrected revision of the invoice at once."
)
def invoices_void(invoice_id: str, tenant_name: str, reason: str, regenerate: bool) -> None:
    """Void an invoice (its number is kept, its ledger postings reversed); optionally reissue it.

    The revision is composed again from the period's counters and the contract as they are now,
    by a new invoice workflow (`invoice/<tenant>/<contract>/<billing date>/r<n>`).
    """
    actor = f"cli:{os.environ.get('USER', 'operator')}"

    async def void(invoicing: Invoicing, tenant_id: str) -> tuple[Invoice, str | None]:
        temporal = (
            await _temporal_before("nothing was voided: its revision is issued by a workflow")
            if regenerate
            else None
        )
        voided = await invoicing.void(tenant_id, invoice_id, actor, reason)
        if temporal is None:
            return voided, None
        return voided, await _start_revision(temporal, voided, voided.revision + 1)

    done: tuple[Invoice, str | None] = _invoicing_call(tenant_name, void)
    voided, workflow_id = done
    click.echo(f"voided {voided.invoice_id} ({voided.number or 'a draft'})")
    if workflow_id is not None:
        click.echo(f"revision {voided.revision + 1} is being issued by workflow {workflow_id}")


async def _start_revision(temporal: TemporalClient, voided: Invoice, revision: int) -> str:
    """Start the invoice workflow of the next revision of a voided invoice; its id."""
    from rating_service.workflows.invoice import (
        InvoiceRequest,
        InvoiceWorkflow,
        invoice_workflow_id,
    )

    billing_date = voided.billing_date.isoformat()
    workflow_id = invoice_workflow_id(voided.tenant_id, voided.contract_id, billing_date, revision)
    await temporal.start_workflow(
        InvoiceWorkflow.run,
        InvoiceRequest(voided.tenant_id, voided.contract_id, billing_date, revision),
        id=workflow_id,
        task_queue=_settings().temporal_task_queue,
    )
    return workflow_id


@invoices.command("pay")
@click.argument("invoice_id")
@tenant_option
@click.option("--reference", required=True, help="The payment's reference, e.g. the wire's.")
def invoices_pay(invoice_id: str, tenant_name: str, reference: str) -> None:
    """Record a payment made outside the gateway; a contract suspended for the invoice resumes."""
    actor = f"cli:{os.environ.get('USER', 'operator')}"

    async def pay(invoicing: Invoicing, tenant_id: str) -> tuple[Invoice, str]:
        temporal = await _temporal_before(
            "nothing was recorded: the invoice's dunning must hear of a payment through Temporal"
        )
        paid = await invoicing.record_payment(tenant_id, invoice_id, reference, actor)
        contract = await invoicing.contract_of(paid)
        await _signal_dunning(temporal, tenant_id, [invoice_id], "invoice_paid")
        return paid, str(contract.status)

    recorded: tuple[Invoice, str] = _invoicing_call(tenant_name, pay)
    paid, status = recorded
    click.echo(f"{paid.invoice_id} ({paid.number}) is {paid.state}: {_money(paid.total, paid)}")
    click.echo(f"contract {paid.contract_id} is {status}")


@contextlib.asynccontextmanager
async def _invoicing(tenant_name: str) -> AsyncIterator[tuple[Invoicing, str]]:
    """Invoicing over the database (no payment gateway) and the id of the tenant named."""
    from rating_service.services.invoice import Invoicing

    async with _tenant_database(tenant_name) as (pool, engine, tenant_id):
        yield Invoicing(pool, engine), tenant_id


@contextlib.asynccontextmanager
async def _tenant_database(
    tenant_name: str,
) -> AsyncIterator[tuple[asyncpg.Pool, AsyncEngine, str]]:
    """The database (an asyncpg pool and an engine) and the id of the tenant named."""
    import asyncpg

    from rating_service.store.database import asyncpg_dsn, create_engine
    from rating_service.store.tenant import TenantStore

    url = _database_url(_settings())
    engine = create_engine(url, pool_size=1)
    try:
        tenant = await TenantStore(engine).find(tenant_name)
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
        try:
            yield pool, engine, tenant.tenant_id
        finally:
            await pool.close()
    finally:
        await engine.dispose()


def _invoicing_call(tenant_name: str, call: Callable[[Invoicing, str], Awaitable[T]]) -> T:
    """Make one invoicing call for the tenant; an unknown invoice says how to find the right one."""
    from rating_service.core.errors import NotFound

    async def run() -> T:
        async with _invoicing(tenant_name) as (invoicing, tenant_id):
            try:
                return await call(invoicing, tenant_id)
            except NotFound as missing:
                if missing.reason != "INVOICE_NOT_FOUND":
                    raise
                raise click.ClickException(
                    f"{missing.message} for tenant {tenant_name!r}; `rating invoices list"
                    f" --tenant {tenant_name}` lists its invoices"
                ) from missing

    return _run(run)


def _money(amount: Decimal, invoice: Invoice) -> str:
    return f"{invoice.currency.code} {format_decimal(amount)}"


def _optional_decimal(value: Decimal | None) -> str:
    return "" if value is None else format_decimal(value)


def _span(start: datetime, end: datetime) -> str:
    return f"{start.isoformat()} – {end.isoformat()}"


def _echo_table(rows: Sequence[Sequence[str]], right_aligned: set[int]) -> None:
    """Rows as columns two spaces apart, each as wide as its widest cell."""
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if n in right_aligned else cell.ljust(width)
            for n, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


@contextlib.asynccontextmanager
async def _catalogs(tenant_name: str) -> AsyncIterator[tuple[Catalogs, Caller]]:
    """The catalogs of a tenant named on the command line, acting as the operator."""
    from rating_service.services.catalog import Catalogs
    from rating_service.store.catalog import CatalogStore
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    engine = create_engine(_database_url(_settings()), pool_size=1)
    try:
        tenant = await TenantStore(engine).find(tenant_name)
        yield Catalogs(CatalogStore(engine)), Caller(tenant.tenant_id, "cli", Role.ADMIN)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _contract_admin(tenant_name: str) -> AsyncIterator[tuple[ContractAdmin, Caller]]:
    """Contract administration of a tenant named on the command line, acting as the operator."""
    import asyncpg

    from rating_service.services.contract import ContractAdmin
    from rating_service.store.contract import ContractStore
    from rating_service.store.database import asyncpg_dsn

    async with _catalogs(tenant_name) as (catalogs, caller):
        dsn = asyncpg_dsn(_database_url(_settings()))
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            yield ContractAdmin(ContractStore(pool), catalogs), caller
        finally:
            await pool.close()


def _admin_call(tenant_name: str, call: Callable[[ContractAdmin, Caller], Awaitable[T]]) -> T:
    """Make one ContractAdmin call for the tenant; a domain error becomes a click error."""

    async def run() -> T:
        async with _contract_admin(tenant_name) as (admin, caller):
            return await call(admin, caller)

    return _run(run)


def _timestamp(option: str, text: str | None) -> datetime | None:
    """An option's ISO 8601 timestamp; a naive one is refused (it names no moment)."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.ClickException(f"{option} {text!r} is not an ISO 8601 timestamp") from None
    if at.utcoffset() is None:
        raise click.ClickException(
            f"{option} {text!r} has no UTC offset, so it names no moment:"
            " add one, e.g. 2026-01-01T00:00:00Z or 2026-01-01T00:00:00+02:00"
        )
    return at


def _term(contract: Contract) -> str:
    end = "open" if contract.term_end is None else contract.term_end.isoformat()
    return f"{contract.term_start.isoformat()} – {end}"


def _describe(commitment: Commitment, *, live: bool = True) -> str:
    """One pool on one line, amounts exact; `live` when its balance is as it is now."""
    pool = commitment.pool
    scope = "all products" if pool.scope is None else ",".join(sorted(pool.scope))
    expires = "never" if pool.expires_at is None else pool.expires_at.isoformat()
    balance = (
        f"  balance {format_decimal(pool.balance)}  pending {format_decimal(pool.pending)}"
        if live
        else ""
    )
    return (
        f"{pool.pool_id}  {pool.kind}  original {format_decimal(pool.original_amount)}{balance}"
        f"  starts {pool.starts_at.isoformat()}  expires {expires}  scope {scope}"
        f"  priority {pool.priority}"
        f"  cost basis {format_decimal(pool.cost_basis)}  ({commitment.reference})"
    )


def _echo_outcome(outcome: Outcome, *, live: bool) -> None:
    """A write's commitment, said to be a replay when the same id was used before."""
    said = "replay" if outcome.replay else "done"
    click.echo(f"{said}: {_describe(outcome.commitment, live=live)}")


@main.group()
def webhooks() -> None:
    """Webhook endpoints and their delivery log (operator commands, straight to the database)."""


@webhooks.command("add")
@click.argument("url")
@tenant_option
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="A topic it takes, e.g. alert or invoice.issued (repeat; default: every topic).",
)
def webhooks_add(url: str, tenant_name: str, topics: tuple[str, ...]) -> None:
    """Add an endpoint; prints its id and its signing secret, which is shown this once."""
    actor = f"cli:{os.environ.get('USER', 'operator')}"
    added: NewEndpoint = _notifications_call(
        tenant_name,
        lambda notifications, tenant_id: notifications.add_endpoint(tenant_id, url, topics, actor),
    )
    click.echo(f"endpoint {added.endpoint.endpoint_id}")
    click.echo(f"secret   {added.secret}")
    click.echo("keep the secret now (it is not shown again): receivers verify signatures with it")


@webhooks.command("list")
@tenant_option
def webhooks_list(tenant_name: str) -> None:
    """List the tenant's endpoints, enabled and disabled (secrets are never shown)."""
    found: list[WebhookEndpoint] = _notifications_call(
        tenant_name, lambda notifications, tenant_id: notifications.endpoints(tenant_id)
    )
    if not found:
        click.echo("no webhook endpoints: add one with `rating webhooks add URL`")
        return
    rows = [("ENDPOINT", "URL", "TOPICS", "STATE", "CREATED")]
    rows += [
        (
            endpoint.endpoint_id,
            endpoint.url,
            "all" if endpoint.topics is None else ",".join(endpoint.topics),
            "enabled"
            if endpoint.disabled_at is None
            else f"disabled {endpoint.disabled_at.isoformat()}",
            endpoint.created_at.isoformat(),
        )
        for endpoint in found
    ]
    _echo_table(rows, right_aligned=set())


@webhooks.command("remove")
@click.argument("endpoint_id")
@tenant_option
def webhooks_remove(endpoint_id: str, tenant_name: str) -> None:
    """Disable an endpoint: nothing more is sent to it; its delivery log is kept."""
    actor = f"cli:{os.environ.get('USER', 'operator')}"
    _notifications_call(
        tenant_name,
        lambda notifications, tenant_id: notifications.disable_endpoint(
            tenant_id, endpoint_id, actor
        ),
    )
    click.echo(f"disabled {endpoint_id} (its delivery log is kept)")


@webhooks.command("new-key")
@click.option(
    "--id",
    "key_id",
    default=lambda: datetime.now(UTC).strftime("%Y%m%d"),
    show_default="today, YYYYMMDD",
    help="The key's id, stored beside every secret it seals.",
)
def webhooks_new_key(key_id: str) -> None:
    """Print a new key for RATING_WEBHOOK_SECRET_KEYS (nothing is stored)."""
    from rating_service.core.encryption import new_key

    try:
        key = new_key(key_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)
    click.echo(
        "put it first in RATING_WEBHOOK_SECRET_KEYS (id:key,id:key; first encrypts, all decrypt),"
        " restart the worker, then run `rating webhooks reencrypt`",
        err=True,
    )


@webhooks.command("reencrypt")
def webhooks_reencrypt() -> None:
    """Re-encrypt every tenant's webhook secrets with the first RATING_WEBHOOK_SECRET_KEYS key."""

    async def reseal(notifications: Notifications) -> tuple[dict[str, int], dict[str, int]]:
        return await notifications.reseal_secrets(), await notifications.secrets_per_key()

    moved, per_key = _run_on_notifications(reseal)
    for key_id, count in moved.items():
        click.echo(f"re-encrypted {count} secret(s) from key {key_id!r}")
    click.echo(
        "secrets per key now: "
        + (", ".join(f"{key_id!r} {count}" for key_id, count in per_key.items()) or "none")
    )
    click.echo("keys no secret uses can be dropped from RATING_WEBHOOK_SECRET_KEYS")


@webhooks.command("deliveries")
@tenant_option
@click.option("--event", "event_id", help="Only this notification's (its Rating-Event-Id).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Most to show."
)
def webhooks_deliveries(tenant_name: str, event_id: str | None, limit: int) -> None:
    """List delivery attempts, latest last: one row per attempt, with the answer or error."""
    found: list[DeliveryAttempt] = _notifications_call(
        tenant_name,
        lambda notifications, tenant_id: notifications.attempts(tenant_id, event_id, limit),
    )
    if not found:
        click.echo("no delivery attempts" + (f" of {event_id}" if event_id else " yet"))
        return
    rows = [("AT", "EVENT", "TOPIC", "ENDPOINT", "ATTEMPT", "RESULT")]
    rows += [
        (
            "" if attempt.at is None else attempt.at.isoformat(timespec="seconds"),
            attempt.event_id,
            attempt.topic,
            attempt.endpoint_id,
            str(attempt.attempt),
            f"delivered (HTTP {attempt.status_code})"
            if attempt.succeeded
            else f"failed ({attempt.error or attempt.status_code})",
        )
        for attempt in found
    ]
    _echo_table(rows, right_aligned={4})


def _notifications_call(tenant_name: str, call: Callable[[Notifications, str], Awaitable[T]]) -> T:
    """Make one call on the notifications of the tenant named (resolved to its id)."""
    from rating_service.store.database import create_engine
    from rating_service.store.tenant import TenantStore

    async def on_tenant(notifications: Notifications) -> T:
        engine = create_engine(_database_url(_settings()), pool_size=1)
        try:
            tenant = await TenantStore(engine).find(tenant_name)
        finally:
            await engine.dispose()
        return await call(notifications, tenant.tenant_id)

    return _run_on_notifications(on_tenant)


def _run_on_notifications(call: Callable[[Notifications], Awaitable[T]]) -> T:
    """Make one call on the notifications service, with the configured webhook-secret keys."""
    import asyncpg

    from rating_service.services.webhook import Notifications, webhook_secret_keys
    from rating_service.store.database import asyncpg_dsn

    async def run() -> T:
        settings = _settings()
        url = _database_url(settings)
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=2)
        try:
            return await call(Notifications(pool, webhook_secret_keys(settings)))
        finally:
            await pool.close()

    return _run(run)


if __name__ == "__main__":
    main()
