"""Recorded workflow histories replay against the current code: a non-deterministic change fails.

The histories in `histories/` were recorded from real runs on a Temporal server by the
integration tests: every run of a workflow id, across continue-as-new, so the billing cycle's
loop (its timer, signals, child invoice and continue-as-new) is replayed, not just its last
run. `RATING_RECORD_HISTORIES=1 make test` records them again; the frozen ones, recorded from
older code, stay as they are. If a change to a workflow makes one fail here, it would break
every workflow of that type already running in production: keep the old behaviour behind
`workflow.patched(...)` instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Replayer

from rating_service.ops.determinism import workflow_type
from rating_service.workflows.registry import SANDBOX, WORKFLOWS
from tests.replay.recordings import Recording, load_all

TESTS = Path(__file__).parent.parent

RECORDINGS = load_all()


def unrecorded(workflows: Sequence[type], recordings: Iterable[Recording]) -> list[str]:
    """The registered workflow types no whole recording ran (first run to closed last run)."""
    whole = {recording.workflow_type for recording in recordings if recording.whole}
    return [name for name in map(workflow_type, workflows) if name not in whole]


def test_every_registered_workflow_has_a_whole_recorded_history() -> None:
    missing = unrecorded(WORKFLOWS, RECORDINGS.values())
    assert not missing, (
        f"no whole recorded history of {missing}: call record_history in the integration test"
        " that runs it, then RATING_RECORD_HISTORIES=1"
    )


@pytest.mark.parametrize("name", [workflow_type(w) for w in WORKFLOWS])
def test_a_workflow_type_without_a_whole_recording_is_named(name: str) -> None:
    others = [r for r in RECORDINGS.values() if r.workflow_type != name]
    assert unrecorded(WORKFLOWS, others) == [name]


def test_a_recording_without_its_first_or_last_run_is_not_whole() -> None:
    # Recorded when the cycle continued as new after every date: it has runs to leave out.
    cycle = RECORDINGS["billing_cancelled_before_several_dates"]
    assert cycle.whole and len(cycle.runs) > 2
    assert not Recording(cycle.name, cycle.workflow_id, cycle.runs[1:]).whole
    assert not Recording(cycle.name, cycle.workflow_id, cycle.runs[:-1]).whole
    assert not Recording(cycle.name, cycle.workflow_id, cycle.runs[::2]).whole


def test_the_billing_cycle_is_recorded_round_its_loop() -> None:
    loop = {
        EventType.EVENT_TYPE_TIMER_STARTED,  # the sleep to the period end
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,  # bill-now, cancel
        EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,  # the invoice
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
    cycles = [
        r
        for r in RECORDINGS.values()
        if r.workflow_type == "ContractBilling" and r.whole and len(r.runs) > 1
    ]
    assert any(loop <= r.event_types for r in cycles), [r.name for r in cycles]


def recorded_by_tests(tests: Path) -> set[str]:
    """The names the tests pass to `record_history(client, workflow_id, name)`."""
    names: set[str] = set()
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != "record_history":
                continue
            name = node.args[2] if len(node.args) > 2 else None
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
                f"{path}:{node.lineno}: record_history needs a literal name, so this test can"
                " check that every recording is made by a test"
            )
            names.add(name.value)
    return names


def check_recorders(recorded: set[str], recordings: Mapping[str, Recording]) -> list[str]:
    """What is wrong between the names tests record and the recordings kept (nothing: [])."""
    frozen = {name for name, r in recordings.items() if r.frozen}
    problems = []
    if missing := sorted(recorded - recordings.keys()):
        problems.append(f"recorded by a test but not kept (RATING_RECORD_HISTORIES=1): {missing}")
    if orphans := sorted(recordings.keys() - recorded - frozen):
        problems.append(f"kept but no test records them (add the call, or freeze): {orphans}")
    if refrozen := sorted(recorded & frozen):
        problems.append(f"frozen but a test records them again: {refrozen}")
    return problems


def test_every_recording_is_made_by_a_test_unless_frozen_from_older_code() -> None:
    recorded = recorded_by_tests(TESTS)
    assert check_recorders(recorded, RECORDINGS) == []
    # The check can fail: a recording no test makes any more, a recording call not yet run.
    assert check_recorders(recorded - {"billing_cancelled"}, RECORDINGS) != []
    assert check_recorders(recorded | {"billing_amended"}, RECORDINGS) != []


RUNS = [
    pytest.param(name, index, id=f"{name}-run{index + 1}of{len(recording.runs)}")
    for name, recording in RECORDINGS.items()
    for index in range(len(recording.runs))
]


@pytest.mark.parametrize(("name", "index"), RUNS)
async def test_a_recorded_run_replays_deterministically(name: str, index: int) -> None:
    history = RECORDINGS[name].runs[index].history
    replayer = Replayer(workflows=list(WORKFLOWS), workflow_runner=SANDBOX)
    await replayer.replay_workflow(history)
