"""`rating dev`: the whole stack on a laptop with one command, reusing its data between runs."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from rating_service.cli.catalog_file import read_catalog_file
from rating_service.cli.progress import step
from rating_service.console.serve import console_config, start_console
from rating_service.core.auth import Caller, Role, issue_key
from rating_service.core.encryption import new_key
from rating_service.core.portal import (
    grant_portal,
    new_portal_secret,
    sign_portal_token,
)
from rating_service.runtime.bootstrap import Components, bootstrap
from rating_service.runtime.embedded import EmbeddedPostgres, TemporalDevServer
from rating_service.runtime.server import start_server
from rating_service.runtime.tracing import start_tracing
from rating_service.runtime.worker import run_worker
from rating_service.services.webhook import webhook_secret_keys
from rating_service.settings import Settings, env_name
from rating_service.store import migrations
from rating_service.store.database import with_database
from rating_service.store.tenant import TenantStore

DEMO_TENANT = "demo"
DEMO_CUSTOMER = "demo-customer"
EXAMPLE_CATALOG = Path(__file__).parent.parent / "examples" / "catalog.yaml"
TEMPORAL_PORT = 7233
TEMPORAL_UI_PORT = 8233
WEBHOOK_KEY_FILE = "webhook-secret-keys"
"""Under the data dir: the key sealing webhook secrets when RATING_WEBHOOK_SECRET_KEYS is unset."""
PORTAL_SECRET_FILE = "portal-secret"
"""Under the data dir: the key signing portal links when RATING_PORTAL_SECRET is unset."""
DEV_PORTAL_LINK = timedelta(hours=1)
DEV_WORKER_METRICS = "127.0.0.1:9465"


DEMO_GRACE_SECONDS = 5.0
"""Late-event window under `--demo`: its one-minute periods should close in seconds, not an hour."""


async def run_dev(settings: Settings, demo: bool = False) -> None:
    """Start PostgreSQL, Temporal, migrations, the demo tenant, the server and the worker.

    With `demo`, also run `rating_service.cli.demo` against the stack until stopped.
    """
    data_dir = settings.data_dir.resolve()
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    print(f"rating dev — data in {data_dir}")
    try:
        database_url = settings.database_url
        if not database_url:
            postgres = EmbeddedPostgres(data_dir / "pgdata")
            with step("starting PostgreSQL (embedded)"):
                base_url = await asyncio.to_thread(postgres.start)
                database_url = await ensure_database(base_url, "rating")
        temporal_address = settings.temporal_address
        if not temporal_address:
            temporal = TemporalDevServer(
                TEMPORAL_PORT, TEMPORAL_UI_PORT, data_dir / "temporal.db", data_dir / "temporal.log"
            )
            with step("starting the Temporal dev server"):
                temporal_address = await asyncio.to_thread(temporal.start)
        settings = settings.replace(database_url=database_url, temporal_address=temporal_address)
        if demo:
            settings = settings.replace(invoice_grace_seconds=DEMO_GRACE_SECONDS)
            # The demo shows its failing invoice's step and error itself; the worker's
            # traceback of that activity would tear through the live view.
            logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
        if not settings.webhook_secret_keys:
            keys = dev_webhook_secret_keys(data_dir / WEBHOOK_KEY_FILE)
            settings = settings.replace(webhook_secret_keys=keys)
        if env_name("worker_metrics_address") not in os.environ:
            settings = settings.replace(worker_metrics_address=DEV_WORKER_METRICS)
        if not settings.portal_secret:
            secret = dev_secret(data_dir / PORTAL_SECRET_FILE, new_portal_secret)
            settings = settings.replace(portal_secret=secret)
        with step("migrating the database"):
            await asyncio.to_thread(
                migrations.upgrade, database_url, "head", webhook_secret_keys(settings)
            )
        async with bootstrap(settings) as built:
            with step(f"preparing the {DEMO_TENANT!r} tenant"):
                demo_key = await demo_api_key(built.tenants, data_dir / "demo-api-key")
                demo_tenant = await built.tenants.tenant_by_name(DEMO_TENANT)
                assert demo_tenant is not None  # demo_api_key made it
                demo_tenant_id = demo_tenant.tenant_id
            with step("loading the example catalog"):
                await load_example_catalog(built)
            with step(f"opening customer {DEMO_CUSTOMER!r} with a $100 credit"):
                await open_demo_customer(built)
        stop_tracing = start_tracing(settings, "rating")
        with step("starting the gRPC server"):
            server = await start_server(settings)
        with step("starting the web console"):
            console = await start_console(
                console_config(settings, server.port, server.metrics_port),
                settings.console_address,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker = asyncio.create_task(run_worker(settings, stop), name="worker")
        portal_link = demo_portal_link(console.url, settings.portal_secret, demo_tenant_id)
        print_endpoints(
            settings,
            server.port,
            server.metrics_port,
            temporal,
            demo_key,
            console_url=console.url,
            portal_link=portal_link,
        )
        demo_run = (
            start_demo(settings, server.port, temporal, data_dir, demo_key, stop) if demo else None
        )
        waiter = asyncio.create_task(stop.wait())
        running = {worker, waiter} | ({demo_run} if demo_run is not None else set())
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if demo_run is not None:
            # The demo goes first: it is a client of the server and the worker.
            await asyncio.wait({demo_run})
        print("\nstopping …", flush=True)
        await console.stop()
        await server.stop(settings.shutdown_grace_seconds)
        await worker
        if stop_tracing is not None:
            stop_tracing()
        demo_failure = None if demo_run is None else demo_run.exception()
        if demo_failure is not None:
            raise demo_failure
    finally:
        if temporal is not None:
            await asyncio.to_thread(temporal.stop)
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
    print("stopped; data kept in", data_dir)


def start_demo(
    settings: Settings,
    grpc_port: int,
    temporal: TemporalDevServer | None,
    data_dir: Path,
    demo_key: str,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """Run `rating dev --demo`'s simulated traffic and live view against the stack just started."""
    from rating_service.cli.demo.run import run_demo

    host = reachable_host(settings.listen_address)
    banner = f"gRPC {host}:{grpc_port}"
    if temporal is not None and temporal.ui_port is not None:
        banner += f" · Temporal UI http://127.0.0.1:{temporal.ui_port}"
    banner += f" · admin key in {data_dir / 'demo-api-key'}"
    return asyncio.create_task(
        run_demo(settings, f"{host}:{grpc_port}", demo_key, stop, banner), name="demo"
    )


async def ensure_database(base_url: str, name: str) -> str:
    """Create database `name` beside the server's `postgres` database if missing; its URL."""
    conn = await asyncpg.connect(base_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(base_url, name)


async def demo_api_key(store: TenantStore, key_file: Path) -> str:
    """The demo tenant's admin key: created on the first run, kept in a local file for the next."""
    tenant = await store.tenant_by_name(DEMO_TENANT)
    saved = _saved_token(key_file)
    if tenant is not None and saved is not None:
        key = await store.key(saved.partition(".")[0])
        if key is not None and key.active:
            return saved
    if tenant is None:
        tenant = await store.create_tenant(DEMO_TENANT, actor="rating dev")
    issued = issue_key(tenant.tenant_id, Role.ADMIN, "rating dev demo key", datetime.now(UTC))
    await store.add_key(issued.key, actor="rating dev")
    _save_token(key_file, issued.token)
    return issued.token


async def load_example_catalog(built: Components) -> None:
    """Apply the example AI-provider catalog to the demo tenant (a no-op once it is there)."""
    tenant = await built.tenants.find(DEMO_TENANT)
    caller = Caller(tenant.tenant_id, "rating dev", Role.ADMIN)
    document = read_catalog_file(EXAMPLE_CATALOG)
    await built.catalogs.apply(caller, document, dry_run=False)


async def open_demo_customer(built: Components) -> None:
    """A demo customer on the list prices, with a $100 free credit (once; later runs keep it)."""
    tenant = await built.tenants.find(DEMO_TENANT)
    caller = Caller(tenant.tenant_id, "rating dev", Role.ADMIN)
    admin = built.contract_admin
    if await admin.contracts(caller, DEMO_CUSTOMER):
        return
    await admin.create_customer(caller, {"customer_id": DEMO_CUSTOMER, "name": "Demo Inc."})
    contract = await admin.create_contract(
        caller,
        {
            "customer_id": DEMO_CUSTOMER,
            "term_start": datetime.now(UTC)
            .replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            .isoformat(),
            "billing_anchor": {"day": 1},
            "billing_frequency": "monthly",
            "invoice_currency": "USD",
            "rate_card_key": "list",
            "overage_policy": "arrears",
            "payment_method": "pm_ok",  # the simulated gateway: every charge succeeds
        },
    )
    await admin.add_commitment(
        caller,
        {
            "grant_id": "demo-welcome-credit",
            "contract_id": contract.contract_id,
            "kind": "credit",
            "amount": "100",
        },
    )


def dev_webhook_secret_keys(key_file: Path) -> str:
    """The local stack's webhook-secret key: made on the first run, kept for the next.

    Kept beside the embedded database, since the secrets sealed in it open only with this key.
    """
    return dev_secret(key_file, lambda: new_key("dev"))


def dev_secret(key_file: Path, make: Callable[[], str]) -> str:
    """A secret of the local stack, made on the first run and kept for the next."""
    saved = _saved_token(key_file)
    if saved:
        return saved
    key = make()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Created readable by its owner alone, never briefly by others.
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    return key


def reachable_host(listen_address: str) -> str:
    """The host a client on this machine dials for a server listening on `listen_address`."""
    host = listen_address.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]"):  # listening everywhere: reach it on loopback
        return "127.0.0.1"
    return host


def rating_command() -> str:
    """How a shell in this directory runs `rating`: the script `make run` started, or `rating`.

    `uv run` puts .venv/bin on the PATH of `rating dev` only, not of the user's shell.
    """
    script = Path(sys.argv[0]).resolve()
    if script.name != "rating":  # e.g. `python -m rating_service.cli dev`
        return f"{shlex.quote(sys.executable)} -m rating_service.cli"
    if script.is_relative_to(Path.cwd()):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return "rating"


def _saved_token(key_file: Path) -> str | None:
    return key_file.read_text().strip() if key_file.exists() else None


def _save_token(key_file: Path, token: str) -> None:
    # Only the local dev stack keeps a key in clear, readable by its owner alone.
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(token + "\n")
    os.chmod(key_file, 0o600)


def demo_portal_link(console_url: str, portal_secret: str, tenant_id: str) -> str:
    """A portal link to the demo customer's account, valid for an hour."""
    grant = grant_portal(tenant_id, DEMO_CUSTOMER, datetime.now(UTC), DEV_PORTAL_LINK)
    return f"{console_url}/portal/{sign_portal_token(portal_secret, grant)}"


def print_endpoints(
    settings: Settings,
    grpc_port: int,
    metrics_port: int | None,
    temporal: TemporalDevServer | None,
    demo_key: str,
    *,
    console_url: str | None = None,
    portal_link: str | None = None,
) -> None:
    """Tell the user where everything is and how to make a first call; each command as it runs."""
    host = reachable_host(settings.listen_address)
    lines = [
        "",
        "The rating stack is up:",
        f"  gRPC (rating.v1)   {host}:{grpc_port}   (reflection and grpc.health.v1 on)",
    ]
    if metrics_port is not None:
        lines.append(f"  metrics            http://{host}:{metrics_port}/metrics")
    if settings.worker_metrics_address:
        worker_metrics = reachable_host(settings.worker_metrics_address)
        worker_port = settings.worker_metrics_address.rpartition(":")[2]
        lines.append(f"  worker metrics     http://{worker_metrics}:{worker_port}/metrics")
    lines.append(
        f"  Temporal           {settings.temporal_address}  namespace "
        f"{settings.temporal_namespace}, task queue {settings.temporal_task_queue}"
    )
    if temporal is not None and temporal.ui_port is not None:
        lines.append(f"  Temporal UI        http://127.0.0.1:{temporal.ui_port}")
    lines.append(f"  PostgreSQL         {settings.database_url}")
    if console_url is not None:
        lines += [
            f"  web console        {console_url}",
            f"    operator pages   {console_url}/ops  (sign in with an admin or ops key)",
        ]
    lines.append("")
    key_file = settings.data_dir / WEBHOOK_KEY_FILE
    if _saved_token(key_file) == settings.webhook_secret_keys:
        lines += [
            "`rating webhooks reencrypt` here needs the key that seals webhook secrets:",
            f"  export RATING_WEBHOOK_SECRET_KEYS=$(cat {key_file})",
            "",
        ]
    lines += [
        f"Demo tenant {DEMO_TENANT!r}, admin API key (keep it secret):",
        f"  {demo_key}",
        "",
        "Try it:",
        f"  export RATING_API_KEY={demo_key}",
        "  npx buf curl --protocol grpc --http2-prior-knowledge \\",
        '    -H "authorization: Bearer $RATING_API_KEY" \\',
        f"    http://{host}:{grpc_port}/rating.v1.AdminService/WhoAmI",
        "",
        f"Rate and debit an LLM call of customer {DEMO_CUSTOMER!r}:",
        "  npx buf curl --protocol grpc --http2-prior-knowledge \\",
        '    -H "authorization: Bearer $RATING_API_KEY" \\',
        f'    -d \'{{"event": {{"event_id": "req-1", "customer_id": "{DEMO_CUSTOMER}",'
        ' "event_type": "llm.completion", "timestamp": "\'$(date -u +%FT%TZ)\'",'
        ' "properties": {"tokens": "1200", "model": "gpt-4o", "token_type": "input"}}}\' \\',
        f"    http://{host}:{grpc_port}/rating.v1.RatingService/RateAndDebit",
        "",
        *(
            [
                f"The portal of customer {DEMO_CUSTOMER!r} (this link works for an hour; a"
                " customer's page in the operator console opens new ones):",
                f"  {portal_link}",
                "",
            ]
            if portal_link is not None
            else []
        ),
        "Operator commands (invoices, contracts, credits, webhooks) act through the API with",
        "that key, from another shell here (with the export above):",
        f"  export RATING_API_ADDRESS={host}:{grpc_port}",
        f"  {rating_command()} invoices list",
        "Bootstrap and recovery commands (tenants, keys, catalog, ops reconcile) go straight",
        "to the database:",
        f"  export RATING_DATABASE_URL={shlex.quote(settings.database_url or '')}",
        f"  export RATING_TEMPORAL_ADDRESS={shlex.quote(settings.temporal_address or '')}",
        f"  {rating_command()} keys create --tenant {DEMO_TENANT} --role ops --name on-call",
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)
    sys.stdout.flush()
