"""Python's cyclic garbage collector, tuned for long-running server and worker processes.

Profiled under `make bench`, the collector took about 8% of a server process's CPU
(docs/performance.md): an event allocates hundreds of short-lived objects that reference
counting frees, yet every 700 allocations the youngest generation is scanned again along with
the objects that survive it (caches, gRPC and asyncio state). Freezing what startup built
moves it out of every later collection, and a higher threshold makes the young scans rare;
cycles (asyncio futures with their exceptions, mostly) are still collected, just later.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("rating.runtime")


def collect_garbage_less_often(threshold: int) -> None:
    """Freeze the objects built so far, and scan the youngest generation every `threshold`."""
    if threshold <= 0:
        return  # Python's own defaults
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)
    log.info(
        "garbage collection tuned", extra={"threshold": threshold, "frozen": gc.get_freeze_count()}
    )
