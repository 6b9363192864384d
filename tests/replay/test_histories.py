"""Recorded workflow histories replay against the current code: a non-deterministic change fails.

The histories in `histories/` were recorded from real runs on a Temporal server by the billing
integration tests (`RATING_RECORD_HISTORIES=1 make test` rewrites them). If a change to a
workflow makes one fail here, it would break every workflow of that type already running in
production: keep the old behaviour behind `workflow.patched(...)` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.registry import SANDBOX, WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"

EXPECTED = {
    "invoice_paid",
    "invoice_paid_before_local_steps",
    "billing_final_before_local_steps",
    "invoice_worker_killed",
    "invoice_gateway_timeout",
    "invoice_gateway_timeout_before_dunning",
    "dunning_suspended_then_paid",
    "billing_final",
    "billing_cancelled",
    "notification_retried",
    "auto_recharge_failed",
    "credit_expiry",
    "renewal_renewed",
    "invoice_failed_after_payment",
    "invoice_reset_to_collect",
}
"""Every path the recordings must keep covering."""


def test_every_expected_history_is_recorded() -> None:
    recorded = {path.stem for path in HISTORIES.glob("*.json")}
    assert not EXPECTED - recorded


RECORDINGS = {path.stem: json.loads(path.read_text()) for path in HISTORIES.glob("*.json")}


@pytest.mark.parametrize("name", sorted(RECORDINGS))
async def test_a_recorded_history_replays_deterministically(name: str) -> None:
    recorded = RECORDINGS[name]
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    replayer = Replayer(workflows=list(WORKFLOWS), workflow_runner=SANDBOX)
    await replayer.replay_workflow(history)
