"""Alerts: each fires once when its condition is crossed, and again only after re-arming."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from rating_service.core.contracts import (
    AlertKey,
    AlertKind,
    AlertState,
    AlertThreshold,
    CommitmentKind,
    Pool,
    crossed_alerts,
    fire_alerts,
    threshold_from_dict,
    threshold_to_dict,
)
from rating_service.core.errors import InvalidArgument
from tests.unit.core.contracts.builders import a_pool, at

D = Decimal


def state(
    *pools: Pool,
    spend: str = "0",
    cap: str | None = None,
    days: float = 1,
    commitment_spend: dict[str, str] | None = None,
) -> AlertState:
    return AlertState(
        "ctr_1",
        at(days),
        pools,
        D(spend),
        None if cap is None else D(cap),
        {key: D(value) for key, value in (commitment_spend or {}).items()},
    )


LOW_POOL = AlertThreshold("low_a", AlertKind.BALANCE_BELOW, amount=D(10), pool_id="a")
LOW_TOTAL = AlertThreshold("low_total", AlertKind.BALANCE_BELOW, amount=D(25))
CAP_80 = AlertThreshold("cap_80", AlertKind.SPEND_ABOVE_CAP_PERCENT, percent=D(80))


def balances(a: str, b: str = "20", a_pending: str = "0") -> tuple[Pool, Pool]:
    return a_pool("a", "50", balance=a, pending=a_pending), a_pool("b", "20", balance=b)


def fired(before: AlertState, after: AlertState, *thresholds: AlertThreshold) -> list[str]:
    return [
        f"{alert.threshold_id}@{alert.subject}"
        for alert in crossed_alerts(before, after, thresholds)
    ]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("15", "12", []),  # above 10 before and after
        ("15", "10", []),  # exactly 10 is not below 10
        ("15", "9.99", ["low_a@a"]),  # crossed: fires
        ("9", "5", []),  # already below: does not fire again
        ("5", "15", []),  # going back above fires nothing (it re-arms)
    ],
)
def test_balance_below_one_pool(before: str, after: str, expected: list[str]) -> None:
    assert fired(state(*balances(before)), state(*balances(after)), LOW_POOL) == expected


def test_balance_below_counts_available_not_posted() -> None:
    # 15 posted, 6 held by a reservation: 9 available < 10.
    assert fired(state(*balances("15")), state(*balances("15", a_pending="6")), LOW_POOL) == [
        "low_a@a"
    ]


def test_balance_below_across_the_contract() -> None:
    # a + b: 10 + 20 = 30 ≥ 25, then 4 + 20 = 24 < 25: one alert for the contract.
    assert fired(state(*balances("10")), state(*balances("4")), LOW_TOTAL) == ["low_total@ctr_1"]


def test_the_contract_total_ignores_expired_and_postpaid_pools() -> None:
    commit = a_pool("commit", "1000", kind=CommitmentKind.POSTPAID_COMMIT)
    expired = a_pool("old", "500", expires_at=at(0.5))
    live = a_pool("live", "30")
    # Only "live" counts: 30 ≥ 25, then 20 < 25.
    before = state(commit, expired, live)
    after = state(commit, expired, replace(live, balance=D(20)))
    assert fired(before, after, LOW_TOTAL) == ["low_total@ctr_1"]


def test_fires_once_per_crossing_over_a_sequence() -> None:
    # The balance of "a" over time: 15 → 9 (fire) → 8 → 12 (re-arm) → 7 (fire again) → 6.
    path = ["15", "9", "8", "12", "7", "6"]
    states = [state(*balances(balance)) for balance in path]
    fired_at = [
        index
        for index in range(1, len(states))
        if fired(states[index - 1], states[index], LOW_POOL)
    ]
    assert fired_at == [1, 4]


@pytest.mark.parametrize(
    ("before", "after", "cap", "expected"),
    [
        ("70", "79.99", "100", []),
        ("70", "80", "100", ["cap_80@ctr_1"]),  # 80% of 100 reached exactly: fires
        ("80", "95", "100", []),  # already above
        ("70", "90", None, []),  # no cap, no cap alert
    ],
)
def test_spend_above_percent_of_cap(
    before: str, after: str, cap: str | None, expected: list[str]
) -> None:
    assert fired(state(spend=before, cap=cap), state(spend=after, cap=cap), CAP_80) == expected


def test_spend_above_percent_of_a_prepaid_commit() -> None:
    watch = AlertThreshold(
        "commit_50", AlertKind.SPEND_ABOVE_COMMIT_PERCENT, percent=D(50), pool_id="pre"
    )
    commit = a_pool("pre", "1000", kind=CommitmentKind.PREPAID_COMMIT)
    # Spent = original − balance: 1000 − 501 = 499 < 500, then 1000 − 500 = 500 ≥ 500.
    before = state(replace(commit, balance=D(501)))
    after = state(replace(commit, balance=D(500)))
    assert fired(before, after, watch) == ["commit_50@pre"]


def test_spend_above_percent_of_a_postpaid_commit() -> None:
    watch = AlertThreshold(
        "commit_90", AlertKind.SPEND_ABOVE_COMMIT_PERCENT, percent=D(90), pool_id="post"
    )
    commit = a_pool("post", "10000", kind=CommitmentKind.POSTPAID_COMMIT)
    # The caller's term spend against it: 8999 → 9000 = 90% of 10000.
    before = state(commit, commitment_spend={"post": "8999"})
    after = state(commit, commitment_spend={"post": "9000"})
    assert fired(before, after, watch) == ["commit_90@post"]


def test_pool_expiring_within_days_fires_per_pool_as_time_passes() -> None:
    watch = AlertThreshold("expiring", AlertKind.POOL_EXPIRING_WITHIN, days=7)
    soon = a_pool("soon", "10", expires_at=at(10))
    later = a_pool("later", "10", expires_at=at(30))
    empty = a_pool("empty", "10", balance="0", expires_at=at(10))
    never = a_pool("never", "10")
    pools = (soon, later, empty, never)
    # Day 2.9: 7.1 days left, nothing. Day 3: exactly 7 days left for "soon" (not the empty one).
    assert fired(state(*pools, days=2.9), state(*pools, days=3), watch) == ["expiring@soon"]
    # Day 23: "later" has 7 days left; "soon" has expired and is no longer watched.
    assert fired(state(*pools, days=22.9), state(*pools, days=23), watch) == ["expiring@later"]


def test_fire_alerts_with_a_persisted_fired_set() -> None:
    # For sweeps that do not pair states: the caller keeps the keys that have fired.
    fired_keys: frozenset[AlertKey] = frozenset()
    sent: list[str] = []
    for balance in ["15", "9", "8", "12", "7"]:
        alerts, fired_keys = fire_alerts(state(*balances(balance)), [LOW_POOL], fired_keys)
        sent.extend(f"{alert.threshold_id}:{alert.measured}" for alert in alerts)
    assert sent == ["low_a:9", "low_a:7"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": AlertKind.BALANCE_BELOW}, "amount"),  # limit missing
        ({"kind": AlertKind.BALANCE_BELOW, "amount": D(1), "days": 3}, "days"),  # not its limit
        ({"kind": AlertKind.SPEND_ABOVE_CAP_PERCENT, "percent": D(0)}, "percent"),
        ({"kind": AlertKind.SPEND_ABOVE_COMMIT_PERCENT, "percent": D(50)}, "pool_id"),
        ({"kind": AlertKind.POOL_EXPIRING_WITHIN, "days": 0}, "days"),
    ],
)
def test_thresholds_are_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        AlertThreshold("t", **kwargs)  # type: ignore[arg-type]
    assert field in [violation.field for violation in refused.value.violations]


@pytest.mark.parametrize(
    "data",
    [
        {"threshold_id": "low", "kind": "balance_below", "amount": "100"},
        {"threshold_id": "low_a", "kind": "balance_below", "amount": "5", "pool_id": "pool_a"},
        {"threshold_id": "cap", "kind": "spend_above_cap_percent", "percent": "80"},
        {
            "threshold_id": "commit",
            "kind": "spend_above_commit_percent",
            "percent": "50",
            "pool_id": "pool_c",
        },
        {"threshold_id": "exp", "kind": "pool_expiring_within", "days": 7},
    ],
)
def test_threshold_dicts_round_trip(data: dict[str, object]) -> None:
    assert threshold_to_dict(threshold_from_dict(data)) == data


def test_threshold_dict_errors_name_the_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        threshold_from_dict(
            {"threshold_id": "x", "kind": "balance_below", "amount": 5.0},
            "alert_thresholds[1]",
        )
    assert [v.field for v in refused.value.violations] == ["alert_thresholds[1].amount"]
