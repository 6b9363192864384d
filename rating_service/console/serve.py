"""Serving the console: uvicorn on the configured address, started and stopped by its owner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from rating_service.console.app import ConsoleConfig, build_app
from rating_service.settings import Settings

START_SECONDS = 30.0


def console_config(
    settings: Settings, grpc_port: int | None = None, metrics_port: int | None = None
) -> ConsoleConfig:
    """Where the console finds the API and the metrics, from the settings.

    `grpc_port` and `metrics_port` are the ports a server of the same process bound (when its
    addresses said 0).
    """
    target = settings.console_api_target or _reachable(settings.listen_address, grpc_port)
    metrics_url = settings.console_metrics_url
    if not metrics_url and settings.metrics_address:
        metrics_url = f"http://{_reachable(settings.metrics_address, metrics_port)}/metrics"
    return ConsoleConfig(
        api_target=target,
        metrics_url=metrics_url,
        temporal_ui_url=settings.temporal_ui_url,
        temporal_namespace=settings.temporal_namespace,
    )


@dataclass
class RunningConsole:
    """A console serving: its URL, and how to stop it."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str

    async def stop(self) -> None:
        """Stop serving and wait for it."""
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_console(config: ConsoleConfig, address: str) -> RunningConsole:
    """Serve the console on `address` (port 0: any free one) until stopped."""
    host, _, port = address.rpartition(":")
    server = _OwnedServer(
        uvicorn.Config(
            build_app(config),
            host=host or "127.0.0.1",
            port=int(port),
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve(), name="console")
    async with asyncio.timeout(START_SECONDS):
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
                raise RuntimeError("the console stopped before it started")
            await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
    return RunningConsole(server, task, f"http://{shown}:{bound}")


class _OwnedServer(uvicorn.Server):
    """uvicorn leaving signals to its owner: `rating dev` stops the whole stack on one Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _reachable(address: str, port: int | None = None) -> str:
    host, _, bound = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port if port is not None else bound}"
