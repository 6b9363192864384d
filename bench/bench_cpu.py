"""CPU (and memory) taken by the parts of a benchmark's stack, and by everything else (/proc)."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping, Sequence


def tree_ticks(roots: Sequence[int]) -> int:
    """CPU ticks of `roots` and all their descendants, including reaped children's."""
    parents: dict[int, int] = {}
    spent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # After "pid (comm) ": state ppid … utime(11) stime(12) cutime(13) cstime(14).
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry)] = int(fields[1])
        spent[int(entry)] = sum(int(v) for v in fields[11:15])
    tree = set(roots) & spent.keys()
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(spent[pid] for pid in tree)


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants (a server and its processes), in bytes."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rpartition(")")[2].split()[1])
            except OSError:
                continue  # exited meanwhile
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    resident = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        resident += int(line.split()[1]) * 1024
        except OSError:
            continue
    return resident


class TreeCpu:
    """CPU-seconds that named process trees (the server's, the database's) used since `start`."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.roots = dict(roots)
        self._start: dict[str, int] = {}

    def start(self) -> None:
        """Take the first reading."""
        self._start = {name: tree_ticks([pid]) for name, pid in self.roots.items()}

    def seconds(self) -> dict[str, float]:
        """CPU-seconds of each tree since `start`."""
        ticks = os.sysconf("SC_CLK_TCK")
        return {
            name: (tree_ticks([pid]) - self._start.get(name, 0)) / ticks
            for name, pid in self.roots.items()
        }


class OthersCpu:
    """How much CPU processes outside the benchmark used during a run (Linux /proc).

    Two cores are shared by the server, PostgreSQL and the load generator, so any other busy
    process moves every figure. Busy time from /proc/stat, less what this process, its reaped
    children (load-generator workers) and the process trees of `roots` (server, postmaster) used,
    is what the others took.
    """

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self._start: tuple[float, float, float] | None = None

    def start(self) -> None:
        """Take the first reading."""
        self._start = self._reading()

    def cores(self) -> float | None:
        """Cores the others kept busy on average since `start` (None where /proc is missing)."""
        if self._start is None:
            return None
        end = self._reading()
        wall, busy, ours = (e - s for e, s in zip(end, self._start, strict=True))
        if wall <= 0 or busy < 0:
            return None
        return max(0.0, busy - ours) / wall

    def _reading(self) -> tuple[float, float, float]:
        """(monotonic seconds, CPU-seconds busy machine-wide, CPU-seconds of ours)."""
        ticks = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as stat:
                user, nice, system = (int(v) for v in stat.readline().split()[1:4])
        except (OSError, ValueError):
            return time.monotonic(), 0.0, 0.0
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
        ours += tree_ticks(self.roots) / ticks
        return time.monotonic(), (user + nice + system) / ticks, ours


class StackCpu:
    """Cores used by each part of the stack during a window, and by everything else (/proc).

    The worker is this process; the Temporal dev server, when started here, is its only live
    child then (the seeding processes have exited); PostgreSQL is the embedded postmaster's
    tree. Two cores are shared by all of them, so a busy neighbour moves every figure.
    """

    def __init__(self, postmaster: int | None, temporal_is_child: bool) -> None:
        self.postmaster = postmaster
        self.temporal_is_child = temporal_is_child
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._start, self._wall = self._reading(), time.monotonic()

    def cores(self) -> dict[str, float]:
        """Average cores each part kept busy since `start` (parts not run here are left out)."""
        wall = time.monotonic() - self._wall
        end = self._reading()
        return {name: (end[name] - self._start[name]) / wall for name in end}

    def _reading(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        reading = {"worker": own.ru_utime + own.ru_stime}
        try:
            with open("/proc/stat") as stat:
                busy = sum(int(v) for v in stat.readline().split()[1:4])  # user, nice, system
            with open("/proc/self/stat") as stat:
                # After "pid (comm) ": utime(11) stime(12) cutime(13) cstime(14).
                own_ticks = sum(int(v) for v in stat.read().rpartition(")")[2].split()[11:15])
        except OSError:
            return reading
        ticks = os.sysconf("SC_CLK_TCK")
        if self.postmaster is not None:
            reading["PostgreSQL"] = tree_ticks([self.postmaster]) / ticks
        if self.temporal_is_child:
            reading["Temporal"] = (tree_ticks([os.getpid()]) - own_ticks) / ticks
        reading["other processes"] = busy / ticks - sum(reading.values())
        return reading


def format_cores(cores: dict[str, float]) -> str:
    """`worker 0.95, PostgreSQL 0.40, Temporal 0.52 cores`."""
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items()) + " cores"
