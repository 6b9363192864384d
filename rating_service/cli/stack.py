"""Running the service: `rating serve`, `worker`, `health` and `dev` (the local stack)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from rating_service.cli.command_line import load_settings, run_async
from rating_service.runtime.logs import configure_logging


@click.command()
@click.option(
    "--processes",
    type=click.IntRange(min=0),
    help="Server processes sharing the listen port (default: RATING_SERVER_PROCESSES;"
    " 0: one per CPU core).",
)
@click.option(
    "--supervisor-socket",
    type=int,
    hidden=True,
    help="Internal: run as one process of several, reporting on this inherited socket.",
)
def serve(processes: int | None, supervisor_socket: int | None) -> None:
    """Run the gRPC server until SIGTERM (then drain gracefully).

    With several processes, this one supervises them (rating_service/runtime/supervisor.py).
    """
    # The supervisor imports no gRPC server, so that it starts its processes at once.
    from rating_service.runtime.supervisor import SupervisorLink, server_process_count, supervise

    settings = load_settings()
    if processes is not None:
        settings = settings.replace(server_processes=processes)
    supervisor = None if supervisor_socket is None else SupervisorLink(supervisor_socket)
    count = 1 if supervisor is not None else server_process_count(settings)
    if count > 1:
        configure_logging(settings.log_level, settings.log_format, with_pid=True)
        # It runs no gRPC and never reaches Temporal: a plain event loop.
        sys.exit(asyncio.run(supervise(settings, count)))
    from rating_service.runtime.server import serve as serve_forever

    configure_logging(settings.log_level, settings.log_format, with_pid=supervisor is not None)
    if supervisor is None:
        run_async(serve_forever, settings)  # one process, exactly as before processes existed
    else:
        run_async(serve_forever, settings, None, supervisor)


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


@click.command("console")
def console_command() -> None:
    """Serve the web console (customer portal and operator pages) on RATING_CONSOLE_ADDRESS.

    It calls the gRPC API at RATING_CONSOLE_API_TARGET (default: RATING_LISTEN_ADDRESS) and
    needs no database.
    """
    from rating_service.console.serve import console_config, start_console

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        console = await start_console(console_config(settings), settings.console_address)
        print(f"console: {console.url}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(console.server, "should_exit", True))
        await console.task

    asyncio.run(run())
