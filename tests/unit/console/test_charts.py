"""The console's SVG charts: titled for screen readers, and drawn to scale."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rating_service.console.charts import WIDTH, Bar, bars, burn_down, meter

START = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_burn_down_runs_from_the_original_to_the_balance_and_on_to_run_out() -> None:
    # 100 credited, 40 left after 6 hours: 10 an hour, so the 40 last 4 more hours.
    svg = burn_down("pool p", Decimal(100), Decimal(40), START, START + timedelta(hours=6), None)
    assert "<title>pool p</title>" in svg
    solid = re.search(r'points="([^"]+)" class="value-line"', svg)
    dashed = re.search(r'points="([^"]+)" class="forecast-line"', svg)
    assert solid and dashed
    (x0, y0), (x1, y1) = (tuple(map(float, p.split(","))) for p in solid.group(1).split())
    _, (x2, y2) = (tuple(map(float, p.split(","))) for p in dashed.group(1).split())
    assert x0 < x1 < x2 and y0 < y1 < y2  # time goes right, the balance goes down
    # Now is 6 h of the 10 h to run-out, along the drawing's width.
    assert (x1 - x0) / (x2 - x0) == pytest.approx(0.6, abs=0.01)


def test_an_unused_or_empty_pool_draws_without_dividing_by_zero() -> None:
    now = START + timedelta(hours=1)
    assert "value-line" in burn_down("unused", Decimal(50), Decimal(50), START, now, None)
    assert burn_down("empty", Decimal(0), Decimal(0), START, now, None) == ""


def test_bars_scale_to_the_largest_forecast_and_a_cap_meter_marks_thresholds() -> None:
    svg = bars("usage", [Bar("a", Decimal(5), Decimal(10)), Bar("b", Decimal(2), None)])
    widths = [float(w) for w in re.findall(r'width="([\d.]+)" height="14"', svg)]
    assert widths[0] == max(widths)  # a's forecast, 10, is the longest bar
    assert widths[1] == widths[0] / 2  # a's 5 so far is half of it
    gauge = meter("spend", Decimal(40), Decimal(100), [Decimal(80)])
    assert gauge.count('class="threshold"') == 1
    assert bars("nothing", []) == "" and meter("no cap", Decimal(1), Decimal(0), []) == ""
    assert f'viewBox="0 0 {WIDTH}' in gauge


def test_a_forecast_shows_to_the_cent_as_an_estimate() -> None:
    from rating_service.console.app import _estimate

    assert _estimate("327.272727272727") == "≈ 327.27"
    assert _estimate("0.005") == "≈ 0.01"
    assert _estimate("") == "≈ 0.00"
