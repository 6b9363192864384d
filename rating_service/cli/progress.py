"""Progress lines for long-running commands: each step, then how it ended and how long it took."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Print `• title …`, then `ok (1.2s)` or `failed` when the block ends."""
    print(f"  • {title} …", end="", flush=True)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" ok ({time.monotonic() - started:.1f}s)", flush=True)
