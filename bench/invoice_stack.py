"""The invoicing benchmark's stack: Temporal, the tenant and catalog, the in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.cli.dev import EXAMPLE_CATALOG
from rating_service.cli.progress import step
from rating_service.core.auth import Caller, Role
from rating_service.runtime.bootstrap import bootstrap
from rating_service.runtime.embedded import TemporalDevServer, free_port
from rating_service.runtime.worker import run_worker
from rating_service.settings import Settings

TENANT_NAME = "invoice-bench"


@contextlib.contextmanager
def temporal_server(workdir: Path) -> Iterator[tuple[str, bool]]:
    """(address, started here?): RATING_TEMPORAL_ADDRESS's server, or a dev server in memory."""
    configured = os.environ.get("RATING_TEMPORAL_ADDRESS")
    if configured:
        yield configured, False
        return

    server = TemporalDevServer(free_port(), None, None, workdir / "temporal.log")
    with step("starting the Temporal dev server"):
        address = server.start()
    try:
        yield address, True
    finally:
        server.stop()


async def prepare_tenant(database_url: str) -> str:
    """A tenant with the example catalog, its platform fee billed in arrears; its id."""
    document = copy.deepcopy(read_catalog_file(EXAMPLE_CATALOG))
    for card in document["rate_cards"]:
        card["prices"]["platform-fee"] = {**card["prices"]["platform-fee"], "timing": "in_arrears"}
    async with bootstrap(Settings(database_url=database_url)) as built:
        tenant = await built.tenants.create_tenant(TENANT_NAME, actor="invoice bench")
        caller = Caller(tenant.tenant_id, "invoice bench", Role.ADMIN)
        await built.catalogs.apply(caller, document, dry_run=False)
    return tenant.tenant_id


class InProcessWorker:
    """`run_worker` (workflows, activities, outbox dispatcher) as a task of this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InProcessWorker:

        self._task = asyncio.create_task(run_worker(self.settings, self._stop), name="worker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            async with asyncio.timeout(60):
                await self._task

    def check(self) -> None:
        """Raise the worker's error if it has stopped by itself."""
        if self._task is not None and self._task.done():
            error = self._task.exception()
            raise SystemExit(f"the worker stopped: {error!r}")


def worker_settings(database_url: str, temporal_address: str, grace_seconds: float) -> Settings:
    """The environment's settings, pointed at this run's database, Temporal and task queue."""
    return Settings.from_env().replace(
        database_url=database_url,
        temporal_address=temporal_address,
        temporal_task_queue=f"invoice-bench-{secrets.token_hex(4)}",
        invoice_grace_seconds=grace_seconds,
        outbox_poll_seconds=0.2,
    )
