"""Progress lines for long-running commands: each step, then how it ended and how long it took."""

from __future__ import annotations

import contextlib
import sys
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


class RowCount:
    """`  • title … 12,000 rows`, rewritten at most twice a second; then how it ended (stderr)."""

    def __init__(self, title: str, every_seconds: float = 0.5) -> None:
        self._title = title
        self._every = every_seconds
        self._rows = 0
        self._started = self._shown = 0.0

    def __enter__(self) -> RowCount:
        self._started = self._shown = time.monotonic()
        self._show("")
        return self

    def update(self, rows: int) -> None:
        """The running count; shown if the last showing is old enough."""
        self._rows = rows
        now = time.monotonic()
        if now - self._shown >= self._every:
            self._shown = now
            self._show("")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        elapsed = time.monotonic() - self._started
        self._show(" failed\n" if kind is not None else f" ok ({elapsed:.1f}s)\n")

    def _show(self, ending: str) -> None:
        print(
            f"\r  • {self._title} … {self._rows:,} rows{ending}",
            end="",
            file=sys.stderr,
            flush=True,
        )
