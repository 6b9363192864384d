"""The native runtime Temporal clients run on, scoped to a block so that it stops before exit.

A Temporal client runs on a Rust runtime of Tokio threads. By default every client shares the
SDK's default runtime, a module global that lives until interpreter exit; its threads then stop
while Python finalizes, and one that still needs the GIL aborts the process ("PyGILState_Release
… finalizing", exit 134; temporalio/sdk-python#300). A process that runs an event loop and then
exits (each `rating` command) does its work inside `temporal_runtime()` instead: clients made
there by `connect_temporal` run on a runtime of the block's own, and as the block ends, still
inside the event loop, they are disconnected and the runtime's threads are joined.
"""

from __future__ import annotations

import contextlib
import gc
import traceback
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rating_service.core.errors import FailedPrecondition, PreconditionViolation, Unavailable
from rating_service.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.runtime import Runtime


@dataclass
class _Block:
    """One `temporal_runtime()` block: its runtime (made for its first client) and clients."""

    runtime: Runtime | None = None
    clients: list[Client] = field(default_factory=list)


_current_block: ContextVar[_Block | None] = ContextVar("temporal_runtime_block", default=None)


def block_runtime() -> Runtime | None:
    """The runtime for a client connecting now: the block's, or None (the SDK's default)."""
    block = _current_block.get()
    if block is None:
        return None
    if block.runtime is None:
        # Imported here: a command that never reaches Temporal should not pay for it.
        from temporalio.runtime import Runtime, TelemetryConfig

        block.runtime = Runtime(telemetry=TelemetryConfig())
    return block.runtime


def in_block(client: Client) -> Client:
    """Note a client just connected: the block disconnects it as it ends (a no-op outside)."""
    block = _current_block.get()
    if block is not None:
        block.clients.append(client)
    return client


@contextlib.asynccontextmanager
async def temporal_runtime() -> AsyncIterator[None]:
    """Clients connected in this block run on its own runtime, whose threads stop as it ends.

    Use it inside the running event loop, around everything that may reach Temporal.
    """
    block = _Block()
    token = _current_block.set(block)
    try:
        yield
    except BaseException as error:
        if block.runtime is not None:
            _release_frames(error)
        raise
    finally:
        _current_block.reset(token)
        if block.runtime is not None:
            for client in block.clients:
                _disconnect(client)
            block.clients.clear()
            block.runtime = None
            # What is left of the clients sits in reference cycles: collected now, the
            # runtime's last reference goes, and its threads are joined (with the GIL
            # released) while Python runs.
            gc.collect()


def _disconnect(client: Client) -> None:
    """Drop a client's native connection and its runtime, even if the client lives on.

    The SDK has no `close()` (temporalio/sdk-python#300), and a reference to a client can
    outlive its block: a frame pinned by a traceback that a module keeps from its import
    (fpdf keeps one) holds the locals of the command that first imported it. These are the
    service client's fields that hold the native side, as of temporalio 1.x; if a release
    renames them, tests/integration/cli/test_worker_and_cli.py sees the threads left running.
    """
    service = client.service_client
    service.config.runtime = None
    state = vars(service)
    for name in ("_bridge_client", "_runtime"):
        if name in state:
            state[name] = None


def _release_frames(error: BaseException) -> None:
    """Drop the locals of the finished frames that an escaping error's tracebacks hold.

    The SDK's frames among them hold the native connection a failed call was made on. The
    tracebacks still print; only the locals go.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]


async def connect_temporal(settings: Settings) -> Client:
    """A Temporal client for the configured address and namespace, with an actionable error.

    Refused with reason `TEMPORAL_UNAVAILABLE`: FAILED_PRECONDITION when no address is set,
    UNAVAILABLE (so callers retry) when the server cannot be reached.
    """
    from temporalio.client import Client  # imported when used: most commands never need it

    if not settings.temporal_address:
        raise _temporal_unavailable(
            "RATING_TEMPORAL_ADDRESS is not set: set it to the Temporal frontend's host:port"
            " (`rating dev` runs one and prints its address)"
        )
    try:
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            runtime=block_runtime(),  # a `rating` command's own, stopped before it exits
        )
    except RuntimeError as exc:
        raise Unavailable(
            f"cannot reach Temporal at {settings.temporal_address}: {exc}; "
            "check RATING_TEMPORAL_ADDRESS and that the server is up",
            reason="TEMPORAL_UNAVAILABLE",
        ) from exc
    return in_block(client)


def _temporal_unavailable(description: str) -> FailedPrecondition:
    return FailedPrecondition(
        description,
        reason="TEMPORAL_UNAVAILABLE",
        violations=[PreconditionViolation("TEMPORAL", "temporal", description)],
    )
