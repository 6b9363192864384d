"""Invoice runs summarised from recorded histories, as `rating ops invoices show` reads them:
each step with its status, attempts and reset point, local steps (markers) and ordinary
activities alike, and the error the failing step reported."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory

from rating_service.ops.failures import StepRun, invoice_key, summarise
from rating_service.workflows.invoice import INVOICE_STEPS
from tests.replay.recordings import load

STEPS = list(INVOICE_STEPS)
ON_READ_STEPS = [step for step in STEPS if step != "render_invoice"]
"""Steps since the documents-on-read patch: no render, the documents wait for a read."""


def recorded(name: str) -> WorkflowHistory:
    """The recording's latest run (an invoice has one per chain; a reset starts another)."""
    return load(name).last


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("invoice_paid", ON_READ_STEPS),
        ("invoice_paid_before_on_read", STEPS),
        ("invoice_paid_before_local_steps", STEPS),
    ],
)
def test_a_paid_invoice_shows_every_step_completed_once(name: str, expected: list[str]) -> None:
    steps, error = summarise(recorded(name))
    assert [s.step for s in steps] == expected
    assert all(s.status == "completed" and s.attempts == 1 for s in steps)
    assert all(s.reset_point > 0 for s in steps)
    assert error == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("invoice_failed_after_payment", ON_READ_STEPS),
        ("invoice_failed_after_payment_before_on_read", STEPS),
    ],
)
def test_a_run_failed_after_the_payment_shows_the_collect_step_failed_with_its_error(
    name: str, expected: list[str]
) -> None:
    steps, error = summarise(recorded(name))
    assert [s.step for s in steps] == expected
    *done, collect = steps
    assert all(s.status == "completed" for s in done)
    assert collect == StepRun("collect_payment", "failed", 1, collect.reset_point, collect.error)
    assert "failpoint invoice.after_payment_taken fired" in collect.error
    assert error == collect.error  # the step's own message, not Temporal's wrapper


def test_a_reset_run_shows_the_steps_it_ran_again() -> None:
    steps, error = summarise(recorded("invoice_reset_to_collect"))
    assert steps[-1].step == "collect_payment" and steps[-1].status == "completed"
    assert error == ""


@pytest.mark.parametrize(
    ("workflow_id", "key"),
    [
        ("invoice/t/c/2026-01-01T00:00:00+00:00", ("t", "c", "2026-01-01T00:00:00+00:00", 0)),
        ("invoice/t/c/2026-01-01/r2", ("t", "c", "2026-01-01", 2)),
        ("billing/t/c", None),
        ("invoice/t/c/2026-01-01/x2", None),
    ],
)
def test_an_invoice_workflow_id_reads_as_its_business_key(
    workflow_id: str, key: tuple[str, str, str, int] | None
) -> None:
    found = invoice_key(workflow_id)
    assert (None if found is None else tuple(vars(found).values())) == key
