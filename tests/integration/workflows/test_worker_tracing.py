"""With tracing on, `rating worker` exports its workflows' and activities' spans."""

from __future__ import annotations

import asyncio

from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually
from tests.integration.api.test_tracing import otlp_collector, span_names
from tests.integration.cycles import (
    admin_client,
    load_fee_catalog,
    open_billing_contract,
    start_worker_process,
    worker_settings,
)


async def test_an_invoice_run_is_traced_by_the_worker(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    await load_fee_catalog(settings.database_url or "", acme.tenant_id)
    config = worker_settings(settings, temporal_address)
    with otlp_collector() as (endpoint, received):
        worker = await start_worker_process(
            config,
            RATING_OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            RATING_WORKER_METRICS_ADDRESS="",
        )
        try:
            async with admin_client(server, acme) as client:
                # The opening invoice (a platform fee billed in advance) runs at once.
                await open_billing_contract(client, "cus_traced", period_seconds=3600, periods=1)

            def finalize_traced() -> bool:
                names = span_names(received).get("rating-worker", set())
                return any("finalize_invoice" in name for name in names)

            # The batch processor exports every few seconds while the worker runs.
            await eventually(finalize_traced, timeout_seconds=90)
        finally:
            worker.terminate()
            async with asyncio.timeout(60):
                await worker.wait()
        names = span_names(received)["rating-worker"]
        assert any(name.startswith("RunWorkflow:") for name in names), names
        # The activity's own database statements are its children in the trace.
        assert any(name.split()[0] in ("SELECT", "INSERT", "UPDATE") for name in names), names
