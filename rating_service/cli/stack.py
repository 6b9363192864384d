"""Running the service: `rating serve`, `worker`, `health` and `dev` (the local stack)."""

from __future__ import annotations

import os
import sys

import click

from rating_service.cli.command_line import load_settings, run_async
from rating_service.runtime.logs import configure_logging


@click.command()
def serve() -> None:
    """Run the gRPC server until SIGTERM (then drain gracefully)."""
    from rating_service.runtime.server import serve as serve_forever

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_async(serve_forever, settings)


@click.command()
def worker() -> None:
    """Run the Temporal worker until SIGTERM."""
    from rating_service.runtime.worker import work

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_async(work, settings)


@click.command()
@click.option("--address", help="host:port to ask (default: RATING_LISTEN_ADDRESS).")
@click.option("--service", default="", help="Service name; empty means the whole server.")
def health(address: str | None, service: str) -> None:
    """Exit 0 if the server reports SERVING (for container health checks)."""
    from rating_service.api.health import probe

    target = address or load_settings().listen_address
    status = run_async(probe, target, service)
    click.echo(status)
    if status != "SERVING":
        sys.exit(1)


@click.command("dev")
@click.option("--demo", is_flag=True, help="Drive simulated traffic and show a live view of it.")
def dev_command(demo: bool) -> None:
    """Start everything locally: embedded PostgreSQL, Temporal dev server, server and worker."""
    # pgserver forks pg_ctl while gRPC threads run; gRPC's fork handlers are not needed for that.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from rating_service.cli.dev import run_dev

    settings = load_settings()
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, "text")
    try:
        run_async(run_dev, settings, demo)
    except KeyboardInterrupt:
        sys.exit(130)
