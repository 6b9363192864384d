"""The server under test: `rating serve` as a subprocess, checked before any load is sent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from google.protobuf.message import Message
from loadgen import RequestFactory
from rating_scenarios import AGGREGATIONS, NoopCall, Prepared, factories, fresh

from rating_service.cli.progress import step

REPO_ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    """The server under test, as a subprocess on its own port, logging to a file."""

    def __init__(self, database_url: str, workdir: Path, processes: int | None = None) -> None:
        from rating_service.runtime.embedded import free_port
        from rating_service.runtime.supervisor import server_process_count
        from rating_service.settings import Settings

        self.port = free_port()
        self.log_file = workdir / "server.log"
        env = {
            **os.environ,
            "RATING_DATABASE_URL": database_url,
            "RATING_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
            # An empty RATING_METRICS_ADDRESS reads as unset (the default :9464, which a running
            # `rating dev` may hold), so metrics go to a free port instead.
            "RATING_METRICS_ADDRESS": "127.0.0.1:0",
            "RATING_BENCH_BASELINES": "true",
            "RATING_LOG_LEVEL": "WARNING",
            "RATING_SHUTDOWN_GRACE_SECONDS": "2",
        }
        if processes is not None:
            env["RATING_SERVER_PROCESSES"] = str(processes)
        self.processes = server_process_count(Settings.from_env(env))
        """Server processes on the port (the server's default: one per core it may use)."""
        command = [sys.executable, "-m", "rating_service.cli", "serve"]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def address(self) -> str:
        """host:port of the server."""
        return f"127.0.0.1:{self.port}"

    async def wait_serving(self, timeout_seconds: float = 30.0) -> None:
        """Poll the health service until SERVING; fail with the server's log if it dies."""
        from rating_service.api.health import probe

        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if await probe(self.address, timeout_seconds=1.0) == "SERVING":
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"the server did not report SERVING in time:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then wait for the drain."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def call_once(address: str, token: str, factory: RequestFactory) -> tuple[str, str]:
    """One call as the load generator makes it: (status code name, details)."""
    from grpc import aio

    path, request = factory.build(0, 0)
    async with aio.insecure_channel(address) as channel:
        method = channel.unary_unary(
            path, request_serializer=_serialize, response_deserializer=None
        )
        try:
            await method(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except aio.AioRpcError as error:
            return str(error.code().name), str(error.details())
    return "OK", ""


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def start_server(
    database_url: str, workdir: Path, prepared: Prepared, processes: int | None = None
) -> ServerProcess:
    """Start `rating serve` (`processes` of it; None: its default) and check the baselines."""
    with step("starting the server (rating serve)"):
        server = ServerProcess(database_url, workdir, processes)
        asyncio.run(server.wait_serving())
    code, details = asyncio.run(call_once(server.address, prepared.rater_token, NoopCall()))
    if code != "OK":
        server.stop()
        raise SystemExit(
            f"BenchService.Noop answered {code} ({details}): the server must register"
            " BenchService when RATING_BENCH_BASELINES is true"
        )
    return server


def check_rate_and_debit(
    server: ServerProcess, prepared: Prepared, scenarios: Sequence[str]
) -> None:
    """Fail clearly when hot / zipf were asked for and RateAndDebit cannot serve them."""
    for scenario, factory in factories(prepared).items():
        if scenario not in scenarios or scenario not in ("hot", "zipf", "batch100", *AGGREGATIONS):
            continue  # a stream is checked by its first answers
        code, details = asyncio.run(call_once(server.address, prepared.rater_token, fresh(factory)))
        if code == "UNIMPLEMENTED":
            raise SystemExit(
                f"the {scenario} scenario needs a RatingService method this server does not"
                " implement; the baselines alone run with --scenarios ceiling,naive,quote"
            )
        if code != "OK":
            raise SystemExit(
                f"the {scenario} scenario's first call answered {code}: {details}\n"
                "(bench/rating_seeding.py seed_contracts seeds the contracts it rates)"
            )
