"""The determinism guard: replay recent real histories of every workflow type against this code.

Run it before a deploy (`rating ops histories check`): a change that would make a running
workflow take a different path on replay fails here, loudly, instead of in production. The
recorded histories in tests/replay do the same in CI for the paths the tests take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Replayer, WorkflowRunner


@dataclass(frozen=True)
class ReplayFailure:
    """A history the current code does not replay the way it ran."""

    workflow_type: str
    workflow_id: str
    run_id: str
    error: str


@dataclass(frozen=True)
class DeterminismReport:
    """How many recent histories of each type were replayed, and which ones failed."""

    checked: dict[str, int] = field(default_factory=dict)
    failures: tuple[ReplayFailure, ...] = ()

    @property
    def clean(self) -> bool:
        """True when every history replayed."""
        return not self.failures


def workflow_type(definition: type) -> str:
    """The workflow type name a `@workflow.defn` class registers (what histories record)."""
    # The SDK offers no public way to read a class's workflow type name.
    defined = workflow._Definition.from_class(definition)
    assert defined is not None and defined.name, f"{definition!r} is not a workflow"
    return defined.name


async def check_histories(
    client: Client,
    workflows: Sequence[type],
    runner: WorkflowRunner,
    per_type: int = 20,
) -> DeterminismReport:
    """Replay the latest `per_type` histories of each workflow type against `workflows`."""
    # The client's runtime, not the SDK's default: a CLI run shuts its runtime down on exit.
    replayer = Replayer(
        workflows=list(workflows),
        workflow_runner=runner,
        runtime=client.service_client.config.runtime,
    )
    checked: dict[str, int] = {}
    failures: list[ReplayFailure] = []
    for definition in workflows:
        name = workflow_type(definition)
        checked[name] = 0
        async for execution in client.list_workflows(f"WorkflowType = '{name}'", limit=per_type):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            history = await handle.fetch_history()
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            checked[name] += 1
            if result.replay_failure is not None:
                failures.append(
                    ReplayFailure(name, execution.id, execution.run_id, str(result.replay_failure))
                )
    return DeterminismReport(checked, tuple(failures))
