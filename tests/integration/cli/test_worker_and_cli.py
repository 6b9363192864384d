"""The worker reaches a real Temporal server; the operator CLI bootstraps tenants and keys."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from grpc import aio
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError

from rating_client.gen.rating.v1 import admin_pb2, admin_pb2_grpc
from rating_service.cli import main
from rating_service.core.errors import Unavailable
from rating_service.runtime.server import RunningServer
from rating_service.runtime.temporal import connect_temporal
from rating_service.runtime.worker import run_worker
from rating_service.settings import Settings
from rating_service.workflows.credit_expiry import CreditExpiryInput, CreditExpiryWorkflow


async def test_the_worker_runs_a_workflow_and_its_activity_then_stops_on_request(
    temporal_address: str, database_url: str
) -> None:
    settings = Settings(
        database_url=database_url,
        temporal_address=temporal_address,
        # A queue of this test's own: no other worker on the shared server can take the task.
        temporal_task_queue=f"test-worker-{uuid.uuid4().hex[:8]}",
    )
    client = await connect_temporal(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    try:
        # The expiry of a pool of a contract this fresh database has never heard of: due at
        # once (no warning, no timer), so the workflow goes straight to its `expire_pool`
        # activity, which reads the database and refuses for good. Only a worker polling this
        # queue, with the workflow and the activity registered and a database behind them,
        # can produce that answer.
        past = datetime(2020, 1, 1, tzinfo=UTC).isoformat()
        handle = await client.start_workflow(
            CreditExpiryWorkflow.run,
            CreditExpiryInput("t_nobody", "ctr_nowhere", "pool_ghost", past, 0, 1),
            id=f"worker-smoke-{uuid.uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            async with asyncio.timeout(30):
                await handle.result()
        activity_failure = failed.value.cause
        assert isinstance(activity_failure, ActivityError)
        assert activity_failure.activity_type == "expire_pool"
        refusal = activity_failure.cause
        assert isinstance(refusal, ApplicationError)
        assert refusal.type == "CONTRACT_NOT_FOUND"
        assert refusal.non_retryable
        assert "ctr_nowhere" in refusal.message
        assert not worker.done()  # it ran the workflow and is still polling
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await worker


async def test_the_worker_explains_an_unreachable_temporal(database_url: str) -> None:
    settings = Settings(database_url=database_url, temporal_address="127.0.0.1:1")
    # UNAVAILABLE, not FAILED_PRECONDITION: a Temporal that is down is worth a retry.
    with pytest.raises(Unavailable, match=r"cannot reach Temporal at 127\.0\.0\.1:1"):
        await connect_temporal(settings)


async def test_the_cli_bootstraps_a_tenant_whose_admin_key_works_over_grpc(
    database_url: str, server: RunningServer
) -> None:
    env = {"RATING_DATABASE_URL": database_url}

    async def rating(*args: str) -> Result:
        # In a thread: the CLI runs its own event loop, and the server must keep serving on ours.
        return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)

    async def who(token: str) -> admin_pb2.WhoAmIResponse:
        async with aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply: admin_pb2.WhoAmIResponse = await admin_pb2_grpc.AdminServiceStub(channel).WhoAmI(
                admin_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
            return reply

    created = await rating("tenants", "create", "initech")
    assert created.exit_code == 0, created.output
    admin_token = re.search(r"admin API key .*: (\S+)", created.output)
    assert admin_token is not None
    again = await rating("tenants", "create", "initech")
    assert again.exit_code == 1
    assert "already exists" in again.output
    rater = await rating(
        "keys", "create", "--tenant", "initech", "--role", "rater", "--name", "svc"
    )
    assert rater.exit_code == 0, rater.output
    rater_token = re.search(r"API key .*: (\S+)", rater.output)
    assert rater_token is not None

    admin_me = await who(admin_token.group(1))
    rater_me = await who(rater_token.group(1))
    assert admin_me.tenant.name == rater_me.tenant.name == "initech"
    assert (admin_me.key.role, rater_me.key.role) == (admin_pb2.ROLE_ADMIN, admin_pb2.ROLE_RATER)
    revoked = await rating("keys", "revoke", rater_me.key.key_id)
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(aio.AioRpcError):
        await who(rater_token.group(1))


def test_the_cli_says_what_to_set_when_no_database_is_configured() -> None:
    result = CliRunner().invoke(main, ["tenants", "list"], env={"RATING_DATABASE_URL": ""})
    assert result.exit_code == 1
    assert "RATING_DATABASE_URL is not set" in result.output


_THREADS_AT_EXIT = """
import os, sys
from rating_service.cli import main
from rating_service.core.auth import Caller, Role
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    # What still runs once the command has returned, just before the interpreter exits.
    tasks = os.listdir("/proc/self/task")
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]
    print("threads at exit:", sorted(names))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
@pytest.mark.parametrize("succeeds", [True, False])
async def test_a_temporal_command_stops_temporals_threads_before_the_interpreter_exits(
    temporal_address: str, database_url: str, succeeds: bool
) -> None:
    # Tokio threads left to interpreter exit abort the process about one run in four
    # ("PyGILState_Release … finalizing", exit 134): a crash too rare to test by retrying it,
    # so this checks its cause, on the command's success and its failure alike. The
    # determinism guard reads Temporal straight (the operator commands go through the API);
    # in a namespace Temporal does not have, it fails.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _THREADS_AT_EXIT,
        *("ops", "histories", "check", "--per-type", "1"),
        env={
            **os.environ,
            "RATING_DATABASE_URL": database_url,
            "RATING_TEMPORAL_ADDRESS": temporal_address,
            "RATING_TEMPORAL_NAMESPACE": "default" if succeeds else "no-such-namespace",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await process.communicate())[0].decode()
    assert process.returncode == (0 if succeeds else 1), output
    assert ("every history replays" in output) == succeeds, output
    assert "threads at exit: ['python']" in output, output
