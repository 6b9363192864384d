"""PostgreSQL LISTEN/NOTIFY: how in-memory caches on every replica learn that data changed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import asyncpg

from rating_service.background import stop_task
from rating_service.store.database import asyncpg_dsn

log = logging.getLogger("rating.pg_notify")


class ChangeListener:
    """Calls a handler per notification on each channel; on any gap in listening, calls `reset`.

    A cache that trusts itself only while `listening` is true can never serve data older than a
    notification it missed: between a lost connection and the next LISTEN it reads through.
    """

    def __init__(self, database_url: str, retry_seconds: float = 1.0) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._resets: list[Callable[[], None]] = []
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.listening = False

    def subscribe(
        self, channel: str, handler: Callable[[str], None], reset: Callable[[], None]
    ) -> None:
        """Call `handler(payload)` per notification on `channel`, and `reset()` on any gap."""
        self._handlers[channel] = handler
        self._resets.append(reset)

    def _reset(self) -> None:
        for reset in self._resets:
            reset()

    def start(self) -> None:
        """Listen in the background, reconnecting for as long as the process runs."""
        self._task = asyncio.create_task(self._run(), name="change-listener")

    async def stop(self) -> None:
        """Stop listening."""
        self._stopping = True
        await stop_task(self._task)

    async def _run(self) -> None:
        while not self._stopping:
            lost = asyncio.Event()
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                conn.add_termination_listener(_on_loss(lost))
                for channel, handler in self._handlers.items():
                    await conn.add_listener(channel, _deliver(handler))
                # Anything could have changed while nobody listened.
                self._reset()
                self.listening = True
                await lost.wait()
            except Exception as exc:
                # Whatever broke the connection (a restart, a dropped database, a driver error
                # raised on the way down), the cure is the same: forget, reconnect, listen.
                if self._stopping:
                    return
                log.warning("change listener cannot listen; retrying", extra={"error": str(exc)})
            finally:
                self.listening = False
                self._reset()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self._retry_seconds)


def _deliver(handler: Callable[[str], None]) -> Callable[..., None]:
    def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        handler(payload)

    return on_notify


def _on_loss(lost: asyncio.Event) -> Callable[[object], None]:
    def on_termination(_conn: object) -> None:
        lost.set()

    return on_termination


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class NotifiedCache(Generic[K, V]):
    """Values kept in memory only while a ChangeListener guarantees no change went unheard.

    With `max_entries`, the least recently used value goes first once it is full, so memory is
    bounded however many keys (customers) a replica serves.
    """

    def __init__(self, is_live: Callable[[], bool], max_entries: int | None = None) -> None:
        self._is_live = is_live
        self._max_entries = max_entries
        self._values: dict[K, V] = {}  # in order of use, the least recent first
        self._forgotten = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value, or a fresh load (kept only while the change feed is live)."""
        if self._is_live():
            cached = self._values.pop(key, None)
            if cached is not None:
                self._values[key] = cached  # now the most recently used
                return cached
        forgotten = self._forgotten
        value = await load()
        # A change heard while loading may be missing from what was read: serve it, keep it not.
        if self._is_live() and forgotten == self._forgotten:
            self._values[key] = value
            if self._max_entries is not None and len(self._values) > self._max_entries:
                del self._values[next(iter(self._values))]
        return value

    def __len__(self) -> int:
        """How many values are kept."""
        return len(self._values)

    def forget(self, key: K) -> None:
        """Drop one value (it changed)."""
        self._forgotten += 1
        self._values.pop(key, None)

    def forget_all(self) -> None:
        """Drop every value (notifications may have been missed)."""
        self._forgotten += 1
        self._values.clear()
