"""The worker serves Prometheus metrics like the server: its activities counted and timed."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rating_service.runtime.embedded import free_port
from rating_service.runtime.server import RunningServer
from rating_service.settings import Settings
from tests.conftest import TenantKeys, eventually
from tests.integration.cycles import billing_stack, open_billing_contract


async def test_the_worker_counts_the_activities_of_an_invoice(
    settings: Settings, temporal_address: str, server: RunningServer, acme: TenantKeys
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with billing_stack(
        settings, temporal_address, server, acme, worker_metrics_address=f"127.0.0.1:{port}"
    ) as stack:
        # The opening invoice (a platform fee billed in advance) runs at once.
        await open_billing_contract(stack.client, "cus_metrics", period_seconds=3600, periods=1)
        samples: dict[tuple[str, str], float] = {}

        async def finalized_and_counted() -> bool:
            async with httpx.AsyncClient() as http:
                text = (await http.get(url)).text
            samples.clear()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "rating_worker_activities_total":
                        key = (sample.labels["activity"], sample.labels["outcome"])
                        samples[key] = sample.value
            return samples.get(("finalize_invoice", "completed"), 0) >= 1

        await eventually(finalized_and_counted, timeout_seconds=60)
        assert samples.get(("finalize_invoice", "failed"), 0) == 0
    # The worker stopped with the block: its port is free again.
    async with httpx.AsyncClient() as http:
        try:
            await http.get(url)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the worker's metrics are still served after it stopped")
