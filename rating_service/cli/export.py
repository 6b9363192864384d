"""`rating export`: a tenant's rated events, invoices and ledger to files for a warehouse."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import click

from rating_service.background import stop_task
from rating_service.cli.command_line import (
    load_settings,
    parse_timestamp,
    run_async,
    tenant_option,
)
from rating_service.cli.progress import RowCount
from rating_service.cli.tenant_services import tenant_components
from rating_service.core.export import ExportKind


@click.group()
def export() -> None:
    """Export a tenant's rows to CSV or Parquet (a path or any fsspec URL), once or continuously."""


def _one_shot(kind: ExportKind) -> click.Command:
    """The `rating export <kind>` command."""

    @tenant_option
    @click.option(
        "--since", help="Only rows at or after this moment (ISO 8601 with offset); default: all."
    )
    @click.option("--until", help="Only rows before this moment (ISO 8601 with offset).")
    @click.option(
        "--format",
        "file_format",
        type=click.Choice(["parquet", "csv"]),
        default="parquet",
        show_default=True,
        help="File format.",
    )
    @click.option(
        "-o", "--output", required=True, help="File to write: a path or an fsspec URL (s3://…)."
    )
    def command(
        tenant_name: str, since: str | None, until: str | None, file_format: str, output: str
    ) -> None:
        from rating_service.services.export import ExportFormat, export_rows

        start = parse_timestamp("--since", since)
        end = parse_timestamp("--until", until)

        async def run() -> int:
            async with tenant_components(tenant_name) as (built, caller):
                with RowCount(f"{kind} → {output}") as progress:
                    return await export_rows(
                        built.export_store,
                        caller.tenant_id,
                        kind,
                        output,
                        ExportFormat(file_format),
                        since=start,
                        until=end,
                        on_progress=progress.update,
                    )

        written: int = run_async(run)
        click.echo(f"wrote {written} {_noun(kind, written)} to {output}")

    command.__doc__ = _HELP[kind]
    return click.command(kind.value)(command)


_HELP = {
    ExportKind.EVENTS: "Rated events (--since compares the event's time), charges exact.",
    ExportKind.INVOICES: "Invoices (--since compares the billing date), totals exact.",
    ExportKind.LEDGER: "Ledger transfers (--since compares when posted), amounts exact.",
}


def _noun(kind: ExportKind, count: int) -> str:
    """What `count` rows of `kind` are called."""
    singular = {"events": "event", "invoices": "invoice", "ledger": "transfer"}[kind.value]
    return singular if count == 1 else f"{singular}s"


for _kind in ExportKind:
    export.add_command(_one_shot(_kind))


@export.command("follow")
@tenant_option
@click.option(
    "--to", "destination", required=True, help="Directory: a path or an fsspec URL (s3://…)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Most events per batch.",
)
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Wait between looks for new events.",
)
@click.option("--once", is_flag=True, help="Export what is ready, then stop (a cron job).")
def export_follow(
    tenant_name: str, destination: str, batch_size: int, poll_seconds: float, once: bool
) -> None:
    """Export rated events as hourly Parquet files (dt=…/hour=…/part-<batch>.parquet), each
    exactly once; stopped and run again, it resumes where it committed."""
    from rating_service.runtime.logs import configure_logging
    from rating_service.services.export import ContinuousExporter

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)  # its batches and failures

    async def run() -> int:
        async with tenant_components(tenant_name) as (built, caller):
            exporter = ContinuousExporter(
                built.export_store,
                caller.tenant_id,
                destination,
                batch_size=batch_size,
                poll_seconds=poll_seconds,
            )
            if once:
                return await exporter.catch_up()
            await _until_interrupted(exporter.run)
            return 0

    exported: int = run_async(run)
    if once:
        click.echo(f"exported {exported} {_noun(ExportKind.EVENTS, exported)} to {destination}")


async def _until_interrupted(loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a background loop until SIGINT / SIGTERM, then cancel it."""
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(loop())
    click.echo("exporting; Ctrl-C stops (the next run resumes where this one committed)")
    await stop.wait()
    await stop_task(task)
