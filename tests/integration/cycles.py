"""Billing cycle test setup: a worker on a real Temporal server, contracts with short periods."""

from __future__ import annotations

import asyncio
import copy
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from click.testing import CliRunner
from google.protobuf import json_format
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from rating_client import RatingClient
from rating_client.gen.rating.v1 import contract_pb2
from rating_service.cli import main
from rating_service.core.auth import Caller, Role
from rating_service.runtime.bootstrap import ProcessRole, bootstrap
from rating_service.runtime.server import RunningServer, start_server
from rating_service.runtime.temporal import connect_temporal
from rating_service.runtime.worker import run_worker
from rating_service.services.catalog import Catalogs
from rating_service.services.invoice import Invoicing
from rating_service.settings import Settings
from rating_service.store.catalog import CatalogStore
from rating_service.store.database import asyncpg_dsn, create_engine
from rating_service.workflows.billing import BillingSchedule, ContractBillingWorkflow
from tests.conftest import TenantKeys, eventually
from tests.integration.billing import CATALOG
from tests.replay import recordings
from tests.replay.recordings import RecordedRun

PLATFORM_FEE = "12"
"""The platform fee per period, billed in advance."""


def _with_platform_fee(catalog: dict[str, Any]) -> dict[str, Any]:
    """The test catalog plus a platform fee billed in advance each period."""
    extended = copy.deepcopy(catalog)
    extended["products"].append(
        {"key": "platform", "name": "Platform fee", "meter": {"event_type": "platform.fee"}}
    )
    extended["rate_cards"][0]["prices"]["platform"] = {
        "model": "flat_fee",
        "amount": PLATFORM_FEE,
        "timing": "in_advance",
    }
    return extended


FEE_CATALOG = _with_platform_fee(CATALOG)


async def _apply_catalog(database_url: str, tenant_id: str, catalog: dict[str, Any]) -> None:
    """Apply a catalog to a tenant, as its admin."""
    engine = create_engine(database_url, pool_size=1)
    try:
        caller = Caller(tenant_id, "test", Role.ADMIN)
        await Catalogs(CatalogStore(engine)).apply(caller, catalog, dry_run=False)
    finally:
        await engine.dispose()


async def load_fee_catalog(database_url: str, tenant_id: str) -> None:
    """Apply the test catalog with its platform fee to a tenant."""
    await _apply_catalog(database_url, tenant_id, FEE_CATALOG)


def admin_client(server: RunningServer, tenant: TenantKeys) -> RatingClient:
    """A client of the test's server with the tenant's admin key (use it with `async with`)."""
    return RatingClient(f"127.0.0.1:{server.port}", tenant.tokens[Role.ADMIN], timeout_seconds=10)


def worker_settings(settings: Settings, temporal_address: str, **changes: object) -> Settings:
    """Settings for a worker of this test's own: its own task queue, a one-second grace window."""
    defaults: dict[str, object] = {
        "temporal_address": temporal_address,
        "temporal_task_queue": f"billing-{uuid.uuid4().hex[:8]}",
        "invoice_grace_seconds": 1.0,
        "outbox_poll_seconds": 0.1,
        "gateway_timeout_seconds": 0.2,
    }
    return replace(settings, **{**defaults, **changes})  # type: ignore[arg-type]


async def worker_polls(temporal: Client, task_queue: str) -> bool:
    """Whether a worker polls the task queue for workflow tasks (it is built and running)."""
    described = await temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(described.pollers)


WORKER_START_SECONDS = 60.0
"""How long a worker may take to start polling: building it validates every workflow in the
sandbox, which holds this process's event loop for seconds on a loaded machine."""


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[None]:
    """A worker (and its outbox dispatcher) running in this process until the block ends.

    The block starts once the worker polls its task queue, so the worker's start (which holds
    the event loop the test, its client and often its server share) is over before the test's
    clock starts: no call made in the block waits out that start against its deadline.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    temporal = await connect_temporal(settings)

    async def polling() -> bool:
        if task.done():
            task.result()  # the worker failed to start: say why
        return await worker_polls(temporal, settings.temporal_task_queue)

    try:
        await eventually(polling, WORKER_START_SECONDS)
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


async def run_cli(env: Mapping[str, str], *args: str) -> str:
    """Run `rating ARGS…` as an operator would; its output (it must succeed)."""
    # In a thread: the CLI runs its own event loop, and the worker (and server) run on ours.
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=dict(env))
    assert result.exit_code == 0, result.output
    return result.output


def api_env(server: RunningServer, token: str) -> dict[str, str]:
    """The environment that points `rating`'s API commands at a server, acting with a key."""
    return {"RATING_API_ADDRESS": f"127.0.0.1:{server.port}", "RATING_API_KEY": token}


@asynccontextmanager
async def serving(config: Settings) -> AsyncIterator[RunningServer]:
    """A server of the test's own with these settings, stopped when the block ends."""
    running = await start_server(config)
    try:
        yield running
    finally:
        await running.stop(0.5)


class OperatorServer:
    """A server that knows the test's Temporal and task queue, for the operator commands
    (which act through the API); started on first use, stopped with its billing stack."""

    def __init__(self, config: Settings) -> None:
        self._config = config
        self._running: RunningServer | None = None

    async def running(self) -> RunningServer:
        """The server, started now if it has not been yet."""
        if self._running is None:
            self._running = await start_server(self._config)
        return self._running

    async def stop(self) -> None:
        """Stop the server if it was started."""
        if self._running is not None:
            await self._running.stop(0.5)


@dataclass(frozen=True)
class BillingStack:
    """What a billing test drives: an admin client, Temporal, and its worker's settings."""

    client: RatingClient
    temporal: Client
    worker_config: Settings
    tenant: TenantKeys
    operator_server: OperatorServer

    @property
    def cli_env(self) -> dict[str, str]:
        """The environment that points `rating`'s database-direct commands (`ops reconcile`)
        at this test's database and worker."""
        return {
            "RATING_DATABASE_URL": self.worker_config.database_url or "",
            "RATING_TEMPORAL_ADDRESS": self.worker_config.temporal_address or "",
            "RATING_TEMPORAL_TASK_QUEUE": self.worker_config.temporal_task_queue,
        }

    async def run_cli(self, *args: str, role: Role = Role.ADMIN) -> str:
        """Run `rating ARGS…`, an operator command through the API, with the tenant's key of
        `role`, against a server that knows this test's worker; its output."""
        server = await self.operator_server.running()
        return await run_cli(api_env(server, self.tenant.tokens[role]), *args)

    async def run_ops_cli(self, *args: str) -> str:
        """Run `rating ops ARGS…` as `run_cli` does, with the tenant's ops key."""
        return await self.run_cli(*args, role=Role.OPS)


@asynccontextmanager
async def billing_stack(
    settings: Settings,
    temporal_address: str,
    server: RunningServer,
    tenant: TenantKeys,
    *,
    catalog: dict[str, Any] = FEE_CATALOG,
    **worker_changes: object,
) -> AsyncIterator[BillingStack]:
    """The tenant's catalog applied and a worker of the test's own running until the block ends.

    `catalog` is the fee catalog unless a test says otherwise; `worker_changes` change the
    worker's settings (see `worker_settings`).
    """
    await _apply_catalog(settings.database_url or "", tenant.tenant_id, catalog)
    config = worker_settings(settings, temporal_address, **worker_changes)
    temporal = await connect_temporal(config)
    operator_server = OperatorServer(config)
    try:
        async with admin_client(server, tenant) as client, running_worker(config):
            yield BillingStack(client, temporal, config, tenant, operator_server)
    finally:
        await operator_server.stop()


async def workflow_started(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the workflow exists yet: the outbox dispatcher starts it when it next polls."""
    try:
        await handle.describe()
    except RPCError:  # NOT_FOUND: not started yet
        return False
    return True


async def billing_schedule(handle: WorkflowHandle[Any, Any]) -> BillingSchedule | None:
    """The billing cycle's schedule, or None while the cycle cannot answer (not started yet)."""
    try:
        return await handle.query(ContractBillingWorkflow.schedule)
    except (RPCError, WorkflowQueryFailedError):  # not started yet: the dispatcher polls the outbox
        return None


async def billing_waits_for(handle: WorkflowHandle[Any, Any], moment: datetime) -> bool:
    """Whether the billing cycle is waiting to bill the period that ends at `moment`."""
    schedule = await billing_schedule(handle)
    return (
        schedule is not None
        and schedule.state == "waiting"
        and schedule.next_billing_date == moment.isoformat()
    )


@dataclass
class BillingContract:
    """A contract with short billing periods, and when its term starts and ends."""

    contract_id: str
    customer_id: str
    term_start: datetime
    term_end: datetime


async def open_billing_contract(
    client: RatingClient,
    customer_id: str,
    *,
    period_seconds: int,
    periods: int,
    payment_method: str = "pm_ok",
    overage_policy: str = "arrears",
    starts_in: timedelta = timedelta(0),
    late_usage: str = "refuse",
    **more_terms: object,
) -> BillingContract:
    """A customer and a contract of `periods` periods of `period_seconds`, starting now.

    `more_terms` adds contract terms in their dict form (auto_recharge, renewal, …).
    """
    await client.call(
        client.contracts.CreateCustomer,
        contract_pb2.CreateCustomerRequest(customer_id=customer_id, name=f"{customer_id} Inc."),
    )
    start = datetime.now(UTC).replace(microsecond=0) + starts_in
    end = start + timedelta(seconds=period_seconds * periods)
    terms = {
        "customer_id": customer_id,
        "term_start": start.isoformat(),
        "term_end": end.isoformat(),
        "billing_anchor": {"day": 1},
        "billing_frequency": "monthly",
        "billing_interval_seconds": period_seconds,
        "invoice_currency": "USD",
        "rate_card_key": "list",
        "overage_policy": overage_policy,
        "payment_method": payment_method,
        "late_usage": late_usage,
        **more_terms,
    }
    contract = json_format.ParseDict(terms, contract_pb2.Contract())
    reply = await client.call(
        client.contracts.CreateContract, contract_pb2.CreateContractRequest(contract=contract)
    )
    return BillingContract(reply.contract.contract_id, customer_id, start, end)


async def sleep_until(moment: datetime) -> None:
    """Sleep until a wall-clock moment."""
    await asyncio.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0))


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database until the block ends, for checks the API lacks."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        yield conn
    finally:
        await conn.close()


async def workflow_runs(client: Client, workflow_id: str) -> list[RecordedRun]:
    """Every run of the workflow id's latest chain, oldest first, each with its whole history.

    Walked back from the latest run: a run started by continue-as-new (or a retry, or cron)
    names the run it continues. A reset run starts a chain of its own.
    """
    runs: list[RecordedRun] = []
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append(RecordedRun(run_id, history))
        run_id = runs[-1].continues
    return runs[::-1]


async def record_history(client: Client, workflow_id: str, name: str) -> list[RecordedRun]:
    """Fetch every run of a closed workflow; with RATING_RECORD_HISTORIES=1 keep them for replay.

    The replay tests replay each run, so the runs a cycle continued as new are checked too.
    """
    runs = await workflow_runs(client, workflow_id)
    assert runs[-1].closed, f"{workflow_id} is still running: record it once it is over"
    if os.environ.get("RATING_RECORD_HISTORIES") == "1":
        recordings.save(name, runs)
    return runs


def event_count(runs: Sequence[RecordedRun], kind: EventType.ValueType) -> int:
    """How many events of a kind the runs recorded."""
    return sum(event.event_type == kind for run in runs for event in run.history.events)


@asynccontextmanager
async def open_invoicing(settings: Settings) -> AsyncIterator[Invoicing]:
    """The invoicing service over the test's database, to read invoices as the worker wrote them."""
    async with bootstrap(settings, ProcessRole.WORKER) as components:
        yield components.invoicing


def credit(contract_id: str, amount: str) -> contract_pb2.AddCommitmentRequest:
    """A free credit of `amount` for the contract."""
    return contract_pb2.AddCommitmentRequest(
        grant_id=f"welcome-{contract_id}", contract_id=contract_id, kind="credit", amount=amount
    )


async def start_worker_process(settings: Settings, **env: str) -> asyncio.subprocess.Process:
    """`rating worker` in a process of its own (one a test can kill), with extra RATING_ env."""
    variables = {
        **os.environ,
        "RATING_DATABASE_URL": settings.database_url or "",
        "RATING_TEMPORAL_ADDRESS": settings.temporal_address or "",
        "RATING_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "RATING_INVOICE_GRACE_SECONDS": str(settings.invoice_grace_seconds),
        "RATING_OUTBOX_POLL_SECONDS": str(settings.outbox_poll_seconds),
        "RATING_LOG_FORMAT": "text",
        **env,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rating_service.cli",
        "worker",
        env=variables,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
