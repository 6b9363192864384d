"""`rating serve` as a subprocess for tests: its port, its processes, and what each one logged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc import aio

SERVE_START_SECONDS = 60.0
"""A fresh interpreter per server process imports everything; two cores are shared in CI."""


@dataclass
class ServeProcess:
    """A `rating serve` child process: its gRPC port and the log lines it wrote so far.

    With several server processes it is their supervisor, and their lines are here too.
    """

    process: asyncio.subprocess.Process
    port: int
    serving: dict[str, Any]
    lines: list[dict[str, Any]]

    @property
    def server_pids(self) -> list[int]:
        """The processes that serve the port: the supervisor's children, or this one."""
        return list(self.serving.get("pids", [self.process.pid]))

    def logged(self, message: str) -> bool:
        """Whether the process has logged `message` yet."""
        return any(line.get("msg") == message for line in self.lines)

    def logged_by(self, pid: int, message: str) -> list[dict[str, Any]]:
        """The lines server process `pid` logged with `message`."""
        # A lone server process logs no pid: every line is its own.
        return [
            line
            for line in self.lines
            if line.get("msg") == message and line.get("pid", self.process.pid) == pid
        ]

    def every_server_process_stopped(self) -> bool:
        """Whether each server process has logged `stopped` (it drained and closed)."""
        return all(self.logged_by(pid, "stopped") for pid in self.server_pids)

    async def terminate(self, timeout_seconds: float = 30.0) -> int:
        """SIGTERM it and wait for it to exit; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_seconds):
            return await self.process.wait()


@asynccontextmanager
async def serve_process(**env: str) -> AsyncIterator[ServeProcess]:
    """`rating serve` on a port the OS picks (read from its `serving` log), metrics off."""
    environment = {
        **os.environ,
        "RATING_LISTEN_ADDRESS": "127.0.0.1:0",
        "RATING_METRICS_ADDRESS": "",
        "RATING_LOG_FORMAT": "json",
        "RATING_LOG_LEVEL": "INFO",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rating_service.cli",
        "serve",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = process.stdout
    lines: list[dict[str, Any]] = []
    serving: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        # Read to the end, so a chatty server never blocks on a full pipe.
        async for raw in output:
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {"text": raw.decode(errors="replace")}
            lines.append(entry)
            if entry.get("msg") == "serving" and not serving.done():
                serving.set_result(entry)
        if not serving.done():
            serving.set_exception(AssertionError(f"rating serve exited early: {lines}"))

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(SERVE_START_SECONDS):
            entry = await serving
        yield ServeProcess(process, int(entry["port"]), entry, lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        # Server processes left alone drain and exit once their supervisor is gone.
        await reader


def separate_channel(port: int) -> aio.Channel:
    """A channel with a TCP connection of its own to 127.0.0.1:`port`.

    Channels of one process to one target share a connection otherwise, and so would all
    reach the same one of the server processes that share the port.
    """
    return aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def process_tree(pid: int) -> set[int]:
    """`pid` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # exited meanwhile
                # After "pid (comm) ": state ppid …
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rpartition(")")[2].split()[1]
                )
    tree = {pid}
    grew = True
    while grew:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return tree


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (Linux: its socket fds against /proc/net/tcp)."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed while we look
            target = os.readlink(fd)
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in sockets:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def listening_ports_of_tree(pid: int) -> set[int]:
    """The TCP ports `pid` and its descendants listen on."""
    ports: set[int] = set()
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            ports |= listening_ports(member)
    return ports
