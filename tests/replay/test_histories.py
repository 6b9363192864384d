"""Recorded workflow histories replay against the current code: a non-deterministic change fails.

The histories in `histories/` were recorded from real runs on a Temporal server by the
integration tests: every run of a workflow id, across continue-as-new.
`RATING_RECORD_HISTORIES=1 make test` records them again; the frozen ones, recorded from older
code, stay as they are. If a change to a workflow makes one fail here, it would break every
workflow of that type already running in production: keep the old behaviour behind
`workflow.patched(...)` instead.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest
from temporalio.worker import Replayer

from tests.replay.recordings import Recording, load_all
from workflows.registry import SANDBOX, WORKFLOWS

TESTS = Path(__file__).parent.parent

RECORDINGS = load_all()


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
