"""How long the console's pages take on the server with 10,000 contracts (target: < 200 ms).

Starts PostgreSQL (embedded, or RATING_DATABASE_URL's server, in a fresh database), a rating
server and the console in this process; opens N customers, each with a monthly contract and a
credit pool; rates some usage for one of them; then asks each page M times and reports the
console's own `Server-Timing` (the page's time on the console server, its RPCs included) and
the time the client saw, median and 95th percentile.

    uv run python bench/console_bench.py [--contracts 10000] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from bench_database import create_database, postgres_server

from rating_client import RatingClient
from rating_client.gen.rating.v1 import portal_pb2
from rating_service.cli.catalog_file import read_catalog_file
from rating_service.cli.dev import EXAMPLE_CATALOG
from rating_service.cli.progress import step
from rating_service.console.app import ConsoleConfig
from rating_service.console.serve import start_console
from rating_service.core.auth import Caller, Role, issue_key
from rating_service.core.portal import new_portal_secret
from rating_service.runtime.server import RunningServer, start_server
from rating_service.settings import Settings

SEED_CONCURRENCY = 16
MEASURED = "cust-00000"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contracts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50, help="requests per page")
    return parser.parse_args(argv)


async def seed(server: RunningServer, tenant_id: str, contracts: int) -> None:
    """`contracts` customers, each with a monthly contract in force and a 100 USD credit."""
    components = server.components
    caller = Caller(tenant_id, "console-bench", Role.ADMIN)
    await components.catalogs.apply(caller, read_catalog_file(EXAMPLE_CATALOG), dry_run=False)
    admin = components.contract_admin
    start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(contracts):
        queue.put_nowait(number)

    async def open_customers() -> None:
        while not queue.empty():
            number = queue.get_nowait()
            customer_id = f"cust-{number:05d}"
            await admin.create_customer(
                caller, {"customer_id": customer_id, "name": f"Customer {number}"}
            )
            contract = await admin.create_contract(
                caller,
                {
                    "customer_id": customer_id,
                    "term_start": start.isoformat(),
                    "billing_anchor": {"day": 1},
                    "billing_frequency": "monthly",
                    "invoice_currency": "USD",
                    "rate_card_key": "list",
                    "overage_policy": "arrears",
                    "spend_cap": "500",
                    "alert_thresholds": [
                        {
                            "threshold_id": "cap-80",
                            "kind": "spend_above_cap_percent",
                            "percent": "80",
                        }
                    ],
                },
            )
            await admin.add_commitment(
                caller,
                {
                    "grant_id": f"credit-{number}",
                    "contract_id": contract.contract_id,
                    "kind": "credit",
                    "amount": "100",
                },
            )

    await asyncio.gather(*(open_customers() for _ in range(SEED_CONCURRENCY)))


async def timed(
    http: httpx.AsyncClient, url: str, requests: int
) -> tuple[list[float], list[float]]:
    """(server ms, client ms) of `requests` GETs of `url`, after one warm-up."""
    (await http.get(url)).raise_for_status()
    server_ms, client_ms = [], []
    for _ in range(requests):
        started = time.perf_counter()
        response = await http.get(url)
        client_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        found = re.search(r"dur=([\d.]+)", response.headers["server-timing"])
        assert found, response.headers
        server_ms.append(float(found.group(1)))
    return server_ms, client_ms


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir, postgres_server(Path(workdir)) as (base, _):
        with step("creating a migrated database"):
            database_url = await create_database(base)
        settings = Settings(
            database_url=database_url,
            listen_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            portal_secret=new_portal_secret(),
            database_pool_size=8,
        )
        server = await start_server(settings)
        try:
            tenant = await server.components.tenants.create_tenant("bench", actor="bench")
            keys = {}
            for role in (Role.ADMIN, Role.OPS):
                issued = issue_key(tenant.tenant_id, role, role.value, datetime.now(UTC))
                await server.components.tenants.add_key(issued.key, actor="bench")
                keys[role] = issued.token
            with step(f"opening {args.contracts:,} customers, contracts and pools"):
                await seed(server, tenant.tenant_id, args.contracts)
            target = f"127.0.0.1:{server.port}"
            async with RatingClient(target, keys[Role.ADMIN], timeout_seconds=10) as client:
                for n in range(20):
                    await client.rate_and_debit(
                        event_id=f"bench-{n}",
                        customer_id=MEASURED,
                        event_type="llm.completion",
                        properties={"tokens": "1200", "model": "gpt-4o", "token_type": "input"},
                    )
                link = await client.call(
                    client.portal.CreatePortalSession,
                    portal_pb2.CreatePortalSessionRequest(customer_id=MEASURED),
                )
            console = await start_console(
                ConsoleConfig(
                    api_target=target,
                    metrics_url=f"http://127.0.0.1:{server.metrics_port}/metrics",
                ),
                "127.0.0.1:0",
            )
            try:
                async with httpx.AsyncClient(base_url=console.url, timeout=30) as http:
                    login = await http.post("/ops/login", data={"api_key": keys[Role.OPS]})
                    assert login.status_code in (200, 303), login.text
                    pages = {
                        "portal": f"/portal/{link.token}",
                        "portal live fragment": f"/portal/{link.token}/live",
                        "ops overview (metrics)": "/ops",
                        "ops customers (first page)": "/ops/customers",
                        "ops customer": f"/ops/customers/{MEASURED}",
                        "ops webhooks": "/ops/webhooks",
                    }
                    print(
                        f"\n{args.contracts:,} contracts, {args.requests} requests per page"
                        " (ms; server = the console's Server-Timing, RPCs included)"
                    )
                    print(f"{'page':<28}{'server p50':>11}{'server p95':>11}{'client p50':>11}")
                    for name, path in pages.items():
                        server_ms, client_ms = await timed(http, path, args.requests)
                        print(
                            f"{name:<28}{statistics.median(server_ms):>11.1f}"
                            f"{p95(server_ms):>11.1f}{statistics.median(client_ms):>11.1f}"
                        )
            finally:
                await console.stop()
        finally:
            await server.stop(0.5)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
