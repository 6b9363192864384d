"""Stopping background tasks reliably, even when a driver swallows the first cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("rating.background")


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop and wait for it to end.

    A loop that catches Exception to survive database outages can also catch a cancellation
    that a driver re-raised as its own error, and go on; so cancel until the task is done.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError):
        error = task.exception()
        if error is not None:
            log.warning("background task ended with an error", extra={"error": str(error)})
