"""`rating serve --processes N`: N server processes on one port, started, watched and drained.

The supervisor runs no gRPC and answers no RPC. It decides the port first (port 0 picks one)
and holds it, then starts each server process as a fresh interpreter, never a fork (`rating
serve --supervisor-socket FD`, one process each): every one binds the same address with
SO_REUSEPORT, and the kernel spreads *connections* over them (a connection stays with the
process that accepted it). Each process has its own caches, database pool and group committer;
what keeps them correct together is the database, as for replicas (docs/rating.md, "Several
servers"). The supervisor serves the processes' metrics, added up, on RATING_METRICS_ADDRESS;
forwards SIGTERM / SIGINT so that every process drains; and when one of them dies unexpectedly
it drains the others and exits 1. It does not restart the dead one: a crash is a bug to be seen,
and the orchestrator (compose, Kubernetes, systemd) restarts the whole server on one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from rating_service.api.metrics import start_metrics
from rating_service.services.rating.rate_limiter import BUCKETS_FILE
from rating_service.settings import Settings

log = logging.getLogger("rating.supervisor")

START_SECONDS = 60.0
"""How long a server process may take to serve (a fresh interpreter imports everything first)."""

DRAIN_MARGIN_SECONDS = 10.0
"""Beyond the drain's grace, how long a process may take to close its pools before it is killed."""

PORT_ATTEMPTS = 10
"""Tries at holding a port picked for port 0 (another program may take it in between)."""

SERVING = b"serving\n"
"""What a server process tells its supervisor once it serves."""

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus_client keeps each process's metrics for the supervisor to add up."""


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPU cores this process may use: its CPU affinity, capped by its cgroup's CPU limit.

    A container limited to one CPU on a 16-core host gets one server process, not 16.
    """
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit(cgroup_root, _own_cgroup())
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def cgroup_cpu_limit(root: Path, own: str) -> float | None:
    """The tightest CPU limit, in cores, on cgroup `own` and its ancestors; None if unlimited.

    cgroup v2 (`cpu.max`, "max 100000" or "150000 100000") is read from `own` up to the root,
    as far as the directories exist (in a container the root is the container's own cgroup);
    cgroup v1 from the `cpu` controller's CFS quota.
    """
    limits: list[float] = []
    directory = root / own.strip("/")
    while True:
        limit = _cores(_read(directory / "cpu.max"))
        if limit is not None:
            limits.append(limit)
        if directory == root:
            break
        directory = directory.parent
    quota, period = (
        _read(root / "cpu" / "cpu.cfs_quota_us"),
        _read(root / "cpu" / "cpu.cfs_period_us"),
    )
    if not limits and quota is not None and period is not None:
        limit = _cores(f"{quota} {period}")
        if limit is not None:
            limits.append(limit)
    return min(limits, default=None)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cores(quota_and_period: str | None) -> float | None:
    """Cores from "quota period" in microseconds; None for no limit ("max", or -1 in v1)."""
    try:
        quota, period = (quota_and_period or "").split()
        return None if quota in ("max", "-1") else int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def _own_cgroup() -> str:
    """This process's cgroup v2 path ("/" where unknown)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return "/"


def server_process_count(settings: Settings) -> int:
    """How many processes `rating serve` runs: RATING_SERVER_PROCESSES, 0 meaning one per core."""
    return settings.server_processes or available_cores()


@dataclass
class ReservedPort:
    """The listen address with its port decided, held (bound, not listening) until released."""

    address: str
    """host:port for the server processes to bind."""
    port: int
    sockets: list[socket.socket] = field(repr=False)

    def release(self) -> None:
        """Let the port go (the server processes hold it by then)."""
        for held in self.sockets:
            held.close()
        self.sockets.clear()


def reserve_port(listen_address: str) -> ReservedPort:
    """Decide the port (port 0 picks a free one) and hold it for the processes that share it.

    It is first bound as a lone server binds (SO_REUSEADDR alone), so a port that any other
    program listens on, another `rating serve` included, is refused here rather than silently
    shared. Then it is held, bound but not listening, with SO_REUSEPORT, which the server
    processes join: while held, no other program's pick of a free port lands on it.
    """
    host, wanted = _host_and_port(listen_address)
    addresses = _bindable(listen_address, host, wanted)
    for _ in range(1 if wanted else PORT_ATTEMPTS):
        try:
            port = _probe(addresses, wanted)
        except OSError as exc:
            if wanted:
                raise SystemExit(
                    f"cannot listen on {listen_address}: is the port in use? ({exc.strerror})"
                ) from exc
            continue
        held = _hold(addresses, port)
        if held is not None:
            return ReservedPort(f"{host}:{port}", port, held)
        if wanted:
            raise SystemExit(f"cannot listen on {listen_address}: is the port in use?")
    raise SystemExit(f"cannot find a free port on {listen_address}")


def _host_and_port(listen_address: str) -> tuple[str, int]:
    host, colon, port = listen_address.rpartition(":")
    if not colon or not port.isdigit() or host.startswith("unix"):
        raise SystemExit(
            "server processes share a TCP port: RATING_LISTEN_ADDRESS must be host:port,"
            f" not {listen_address!r} (or set RATING_SERVER_PROCESSES=1)"
        )
    return host, int(port)


def _bindable(listen_address: str, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, socket address) of every address the host name stands for, as gRPC binds them."""
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise SystemExit(f"cannot listen on {listen_address}: {exc}") from exc
    addresses: list[tuple[int, tuple[Any, ...]]] = []
    for family, _type, _proto, _name, address in found:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, address) not in addresses:
            addresses.append((family, address))
    return addresses


def _at(address: tuple[Any, ...], port: int) -> tuple[Any, ...]:
    return (address[0], port, *address[2:])


def _probe(addresses: list[tuple[int, tuple[Any, ...]]], port: int) -> int:
    """Bind every address as a lone server would, at `port` (0: the first picks); the port."""
    for family, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(_at(address, port))
            port = probe.getsockname()[1]
    return port


def _hold(addresses: list[tuple[int, tuple[Any, ...]]], port: int) -> list[socket.socket] | None:
    """Bind every address at `port` with SO_REUSEPORT; None if one cannot be."""
    held: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(_at(address, port))
    except OSError:
        for sock in held:
            sock.close()
        return None
    return held


@dataclass
class SharedMetrics:
    """The server processes' metrics, added up and served on one port (prometheus multiprocess)."""

    directory: Path
    """Where each process writes its metrics (PROMETHEUS_MULTIPROC_DIR); removed at the end."""
    port: int | None
    _http: Any = field(repr=False)

    @classmethod
    def start(cls, address: str) -> SharedMetrics | None:
        """Serve /metrics on `address` (None: the address is empty, metrics are off)."""
        if not address:
            return None
        directory = Path(tempfile.mkdtemp(prefix="rating-metrics-"))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        try:
            port, http = start_metrics(address, registry)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return cls(directory, port, http)

    def stop(self) -> None:
        """Stop serving, free the port and remove the processes' files."""
        self._http.shutdown()
        self._http.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


class SupervisorLink:
    """A server process's line to its supervisor: says when it serves, hears when it is gone."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None  # kept: a writer collected closes

    async def serving(self) -> None:
        """Tell the supervisor that this process serves."""
        self._reader, self._writer = await asyncio.open_connection(sock=self._socket)
        self._writer.write(SERVING)
        await self._writer.drain()

    async def gone(self) -> None:
        """Return once the supervisor has ended, however it ended (its end of the line closed)."""
        assert self._reader is not None, "serving() first"
        await self._reader.read()  # the supervisor never writes: this is its end, EOF


@dataclass
class ServerProcess:
    """One server process, as its supervisor sees it."""

    process: asyncio.subprocess.Process
    line: asyncio.StreamReader
    _writer: asyncio.StreamWriter = field(repr=False)
    serving: bool = False

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    async def wait_serving(self) -> bool:
        """Whether it reports that it serves (False: it ended first)."""
        self.serving = await self.line.readline() == SERVING
        return self.serving

    def terminate(self) -> None:
        """SIGTERM: drain and exit."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, for a process that did not drain in time."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def close(self) -> None:
        """Close our end of the line."""
        self._writer.close()


async def start_server_process(environment: dict[str, str]) -> ServerProcess:
    """`rating serve` as one process of several on the reserved port, in a fresh interpreter."""
    ours, theirs = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rating_service.cli",
            "serve",
            "--supervisor-socket",
            str(theirs.fileno()),
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            # A session of its own: a terminal's Ctrl-C reaches the supervisor alone, which
            # forwards one SIGTERM to each process.
            start_new_session=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # only the process's copy stays open: when it ends, we read EOF
    reader, writer = await asyncio.open_connection(sock=ours)
    return ServerProcess(process, reader, writer)


def process_environment(
    settings: Settings, metrics: SharedMetrics | None, buckets: Path | None = None
) -> dict[str, str]:
    """The environment of a server process: these settings, one process, the reserved port.

    `buckets` is the rate limits' shared file (`services.rating.rate_limiter`).
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RATING_") and name not in (MULTIPROCESS_DIR, BUCKETS_FILE)
    }
    environment.update(settings.to_env())
    if metrics is not None:
        environment[MULTIPROCESS_DIR] = str(metrics.directory)
    if buckets is not None:
        environment[BUCKETS_FILE] = str(buckets)
    return environment


async def supervise(settings: Settings, processes: int) -> int:
    """Run `processes` server processes on one port until SIGTERM / SIGINT; the exit code."""
    reserved = reserve_port(settings.listen_address)
    metrics: SharedMetrics | None = None
    children: list[ServerProcess] = []
    shared = Path(tempfile.mkdtemp(prefix="rating-shared-"))
    try:
        metrics = SharedMetrics.start(settings.metrics_address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        one_process = settings.replace(
            listen_address=reserved.address, server_processes=1, metrics_address=""
        )
        environment = process_environment(one_process, metrics, shared / "rate-limit-buckets")
        for _ in range(processes):
            children.append(await start_server_process(environment))
        failed = not await _all_serving(children, stop)
        if not failed and not stop.is_set():
            reserved.release()
            log.info(
                "serving",
                extra={
                    "address": settings.listen_address,
                    "port": reserved.port,
                    "metrics_port": None if metrics is None else metrics.port,
                    "processes": processes,
                    "pids": [child.pid for child in children],
                },
            )
            failed = await _until_stopped_or_one_ends(children, stop)
        log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        drained = await _drain(children, settings.shutdown_grace_seconds + DRAIN_MARGIN_SECONDS)
        log.info("stopped")
        return 0 if drained and not failed else 1
    finally:
        for child in children:
            child.close()
        reserved.release()
        if metrics is not None:
            metrics.stop()
        shutil.rmtree(shared, ignore_errors=True)


async def _all_serving(children: list[ServerProcess], stop: asyncio.Event) -> bool:
    """Wait until every process serves (or a stop is asked); False if one ends first."""
    waiting = {asyncio.create_task(child.wait_serving()): child for child in children}
    stopping = asyncio.create_task(stop.wait())
    try:
        async with asyncio.timeout(START_SECONDS):
            while waiting:
                done, _ = await asyncio.wait(
                    {*waiting, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    return True
                for task in done:
                    child = waiting.pop(task)
                    if not task.result():
                        log.error(
                            "server process ended before serving",
                            extra={"pid": child.pid, "exit_code": await child.process.wait()},
                        )
                        return False
    except TimeoutError:
        log.error(
            "server processes did not serve in time",
            extra={"pids": [child.pid for child in waiting.values()], "seconds": START_SECONDS},
        )
        return False
    finally:
        for task in (*waiting, stopping):
            task.cancel()
    return True


async def _until_stopped_or_one_ends(children: list[ServerProcess], stop: asyncio.Event) -> bool:
    """Wait for a stop (False) or for a process to end on its own (True: a failure)."""
    ends = {asyncio.create_task(child.process.wait()): child for child in children}
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({*ends, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*ends, stopping):
            task.cancel()
    ended = [ends[task] for task in done if task in ends]
    for child in ended:
        log.error(
            "server process ended unexpectedly; draining the others",
            extra={"pid": child.pid, "exit_code": child.process.returncode},
        )
    return bool(ended)


async def _drain(children: list[ServerProcess], timeout_seconds: float) -> bool:
    """SIGTERM every process and wait for it to exit; whether each one drained cleanly."""
    for child in children:
        child.terminate()
    try:
        async with asyncio.timeout(timeout_seconds):
            await asyncio.gather(*(child.process.wait() for child in children))
    except TimeoutError:
        for child in children:
            if child.process.returncode is None:
                log.error("server process did not drain in time; killed", extra={"pid": child.pid})
                child.kill()
        await asyncio.gather(*(child.process.wait() for child in children))
        return False
    # One stopped before it served (a stop asked during start-up) dies of the SIGTERM itself.
    return all(
        child.process.returncode == 0
        or (not child.serving and child.process.returncode == -signal.SIGTERM)
        for child in children
    )
