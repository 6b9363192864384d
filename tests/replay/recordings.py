"""Recorded workflow histories: every run of one workflow id, oldest first, kept as JSON in
`histories/`. The integration tests write them (`RATING_RECORD_HISTORIES=1`), the replay tests
read them.

A file is `{"workflow_id", "runs": [{"run_id", "history"}, …]}`, plus `"frozen": why` on a
recording of older code that no test can produce any more and that is kept because workflows
started by that code may still be running.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

HISTORIES = Path(__file__).parent / "histories"

CLOSED = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
}
"""The last event of a run that is over and started no other (not continued as new)."""


@dataclass(frozen=True)
class RecordedRun:
    """One run of a workflow id: its run id and its whole history."""

    run_id: str
    history: WorkflowHistory

    @property
    def continues(self) -> str:
        """The run this one continues (continue-as-new, retry, cron), or "" for a first run."""
        started = self.history.events[0].workflow_execution_started_event_attributes
        return started.continued_execution_run_id

    @property
    def closed(self) -> bool:
        """Whether the run is over without having started another."""
        return self.history.events[-1].event_type in CLOSED


@dataclass(frozen=True)
class Recording:
    """A workflow id's runs, oldest first, as one test left them."""

    name: str
    workflow_id: str
    runs: tuple[RecordedRun, ...]
    frozen: str | None = None

    @property
    def workflow_type(self) -> str:
        """The workflow type every run of the id ran."""
        started = self.runs[0].history.events[0].workflow_execution_started_event_attributes
        return started.workflow_type.name

    @property
    def whole(self) -> bool:
        """From the first run to a closed last one, each run continuing the one before."""
        links = zip(self.runs, self.runs[1:], strict=False)
        return (
            not self.runs[0].continues
            and all(after.continues == before.run_id for before, after in links)
            and self.runs[-1].closed
        )

    @property
    def event_types(self) -> set[EventType.ValueType]:
        """Every kind of event any run recorded."""
        return {event.event_type for run in self.runs for event in run.history.events}

    @property
    def last(self) -> WorkflowHistory:
        """The latest run's history."""
        return self.runs[-1].history


def load(name: str) -> Recording:
    """The recording `histories/NAME.json`."""
    document = json.loads((HISTORIES / f"{name}.json").read_text())
    workflow_id = document["workflow_id"]
    runs = tuple(
        RecordedRun(run["run_id"], WorkflowHistory.from_json(workflow_id, run["history"]))
        for run in document["runs"]
    )
    return Recording(name, workflow_id, runs, document.get("frozen"))


def load_all() -> dict[str, Recording]:
    """Every recording, by name."""
    return {path.stem: load(path.stem) for path in sorted(HISTORIES.glob("*.json"))}


def save(name: str, runs: Sequence[RecordedRun]) -> None:
    """Write `histories/NAME.json` (a test's recording: never frozen)."""
    HISTORIES.mkdir(parents=True, exist_ok=True)
    document = {
        "workflow_id": runs[0].history.workflow_id,
        "runs": [{"run_id": run.run_id, "history": run.history.to_json_dict()} for run in runs],
    }
    (HISTORIES / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")
