"""How many server processes `rating serve` runs, and the port they share (runtime/supervisor)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from rating_service.runtime.supervisor import (
    available_cores,
    cgroup_cpu_limit,
    reserve_port,
    server_process_count,
)
from rating_service.settings import Settings


def write(root: Path, files: dict[str, str]) -> Path:
    """A fake /sys/fs/cgroup holding `files` (path → content)."""
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content + "\n")
    return root


@pytest.mark.parametrize(
    ("files", "own", "cores"),
    [
        ({}, "/", None),  # no cgroup files: no limit known
        ({"cpu.max": "max 100000"}, "/", None),  # v2, unlimited
        ({"cpu.max": "150000 100000"}, "/", 1.5),  # v2: 150 ms per 100 ms = 1.5 cores
        # v2, nested: the tighter of the process's cgroup and its ancestors wins.
        ({"a/cpu.max": "200000 100000", "a/b/cpu.max": "max 100000"}, "/a/b", 2.0),
        ({"a/cpu.max": "100000 100000", "a/b/cpu.max": "300000 100000"}, "/a/b", 1.0),
        # A container without its own cgroup namespace: the host's path is not mounted.
        ({"cpu.max": "100000 100000"}, "/docker/abc123", 1.0),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "/", None),  # v1
        ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, "/", 0.5),
        ({"cpu.max": "garbage"}, "/", None),
    ],
)
def test_the_cgroup_cpu_limit(
    tmp_path: Path, files: dict[str, str], own: str, cores: float | None
) -> None:
    assert cgroup_cpu_limit(write(tmp_path, files), own) == cores


def test_one_process_per_core_the_process_may_use(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(write(tmp_path / "free", {"cpu.max": "max 100000"})) == affinity
    # A container limited to half a core still gets one process; to 1.5 cores, two at most.
    assert available_cores(write(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert available_cores(write(tmp_path / "one-and-a-half", {"cpu.max": "150000 100000"})) == min(
        2, affinity
    )
    assert server_process_count(Settings(server_processes=3)) == 3
    assert server_process_count(Settings(server_processes=0)) == available_cores()


def test_port_zero_is_picked_and_held_for_processes_that_share_it() -> None:
    reserved = reserve_port("127.0.0.1:0")
    try:
        assert reserved.port > 0
        assert reserved.address == f"127.0.0.1:{reserved.port}"
        # Held, not listening: nobody is answered until a server process joins.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", reserved.port), timeout=5).close()
        with socket.socket() as joining:
            joining.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            joining.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            joining.bind(("127.0.0.1", reserved.port))
            joining.listen()
            socket.create_connection(("127.0.0.1", reserved.port), timeout=5).close()
    finally:
        reserved.release()


def test_a_port_in_use_is_refused_not_shared() -> None:
    """Not even with a server that shares its port: two `rating serve` never mix."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(SystemExit, match="is the port in use"):
            reserve_port(f"127.0.0.1:{port}")


def test_a_fixed_free_port_is_held_as_given() -> None:
    first = reserve_port("127.0.0.1:0")
    port = first.port
    first.release()
    reserved = reserve_port(f"127.0.0.1:{port}")
    try:
        assert (reserved.port, reserved.address) == (port, f"127.0.0.1:{port}")
    finally:
        reserved.release()


@pytest.mark.parametrize("address", ["unix:/tmp/rating.sock", "127.0.0.1", "127.0.0.1:http"])
def test_an_address_without_a_tcp_port_is_refused(address: str) -> None:
    with pytest.raises(SystemExit, match="must be host:port"):
        reserve_port(address)
