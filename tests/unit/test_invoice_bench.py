"""The invoicing benchmark's pure parts: its contracts' billing dates, percentiles, options."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rating_service.core.billing.schedule import next_billing_date
from rating_service.core.contracts.contract import contract_from_dict

# bench/ holds scripts run by path (`python bench/invoice_bench.py`), not a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from invoice_bench import parse_args
from invoice_contracts import Period
from invoice_report import Baseline, Throughput, percentile

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_a_bench_contract_is_billed_at_its_start_and_once_at_period_end() -> None:
    # The throughput run relies on this: every contract's one invoice with usage falls due at
    # the same moment T, and it is the final one (no workflow left sleeping afterwards).
    period = Period(START, START + timedelta(seconds=150))
    contract = contract_from_dict(
        {**period.terms("cus_1"), "contract_id": "ctr_1", "tenant_id": "t", "status": "active"}
    )
    opening = next_billing_date(contract, None)
    assert opening is not None and opening.is_opening and opening.at == START
    closing = next_billing_date(contract, opening.at)
    assert closing is not None
    assert closing.at == period.end
    assert closing.arrears == (START, period.end)
    assert closing.is_final
    assert next_billing_date(contract, closing.at) is None


def test_event_moments_stay_inside_the_period_and_never_ahead_of_now() -> None:
    period = Period(START, START + timedelta(hours=1))  # ended long ago
    moments = [period.moment(i, 4) for i in range(4)]
    assert moments == [START + timedelta(minutes=15 * i) for i in range(4)]
    now = datetime.now(UTC)
    running = Period(now - timedelta(seconds=10), now + timedelta(hours=1))
    assert running.moment(3, 4) <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.5, 50.0),  # 1..100: rank ⌈0.5 × 100⌉ = 50
        (0.99, 99.0),  # rank 99
        (1.0, 100.0),  # the max
        (0.001, 1.0),  # rank ⌈0.1⌉ = 1, the min
    ],
)
def test_percentile_is_nearest_rank(fraction: float, expected: float) -> None:
    assert percentile([float(v) for v in range(1, 101)], fraction) == expected


def test_percentile_of_nothing_is_nan() -> None:
    assert percentile([], 0.5) != percentile([], 0.5)


def test_defaults_are_the_issue_s_figures_and_phases_run_in_their_order() -> None:
    args = parse_args(["--phases", "baseline,throughput"])
    assert (args.contracts, args.events) == (1000, 100_000)
    assert args.phases == ["throughput", "baseline"]


@pytest.mark.parametrize(
    "argv", [["--phases", "nope"], ["--contracts", "0"], ["--events", "0"], ["--lead", "0"]]
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_cpu_per_invoice_is_each_parts_cores_times_the_run_over_its_invoices() -> None:
    run = Throughput(
        contracts=200,
        lead_seconds=54.0,
        slack_seconds=10.0,
        seconds=20.0,
        issued=[],
        paid=[],
        cores={"worker": 0.9, "Temporal": 0.5, "other processes": 1.2},
        worker_peak_mib=300.0,
    )
    # worker: 0.9 cores × 20 s / 200 invoices = 0.09 s = 90 ms; Temporal 0.5 × 20 / 200 = 50 ms.
    # Other processes' CPU is not what an invoice costs: left out.
    assert run.cpu_ms_per_invoice() == pytest.approx({"worker": 90.0, "Temporal": 50.0})
    assert run.per_second == 10.0


def test_the_loop_baseline_sets_the_workflows_steps_apart_from_rendering() -> None:
    loop = Baseline(contracts=100, core_seconds=1.0, collect_seconds=0.25, render_seconds=4.0)
    assert loop.core_per_second == 100.0  # 100 invoices / 1 s
    assert loop.all_per_second == 80.0  # 100 / (1 + 0.25) s
    assert loop.render_ms == 40.0  # 4 s / 100 invoices
